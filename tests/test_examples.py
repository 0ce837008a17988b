"""The scripts in ``examples/``: each trains with both optimizers, and their two loops differ in one line.

Skipped when flax or equinox is absent (``pip install -e '.[examples]'``) or Fashion-MNIST is not
fetched (failing instead under ``$LOPT_REQUIRE_DATA``, as ``make test`` sets it).
"""

import ast
import difflib
import importlib.util
import io
import os
import re
import tokenize
from pathlib import Path

import pytest
from helpers import optimizer_choice

import lopt
from lopt.data import DatasetMissingError, load

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = {"flax_mnist": "flax", "equinox_mnist": "equinox"}  # script -> the library it needs
OPTIMIZERS = ("pretrained", "adam")
STEPS = 150  # at batch 128 both optimizers reach ~0.8 test accuracy on Fashion-MNIST
LOSS_FRACTION = 0.35  # final / initial training loss must fall below this (observed ~0.23)
MIN_ACCURACY = 0.7  # 10 classes: chance is 0.1; observed ~0.8 after STEPS steps


def _source(name: str) -> str:
    return (EXAMPLES_DIR / f"{name}.py").read_text(encoding="utf-8")


def _import(name: str):
    """The example script ``name`` as a module (skipped when its library is not installed)."""
    pytest.importorskip(EXAMPLES[name])
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _choice(source: str):
    """The script's optimizer-choice statement (`tests.helpers.optimizer_choice`)."""
    return optimizer_choice(source)


def _code_paths(source: str) -> dict[str, list[str]]:
    """The script as its author would write it for each optimizer: the choice replaced by one branch."""
    lines, node = source.splitlines(), _choice(source)
    head = f"{' ' * node.col_offset}{ast.unparse(node.targets[0])} = "
    branch = {"pretrained": node.value.body, "adam": node.value.orelse}
    return {
        name: lines[: node.lineno - 1]
        + [head + ast.get_source_segment(source, branch[name])]
        + lines[node.end_lineno :]
        for name in OPTIMIZERS
    }


def _name_lines(source: str, name: str) -> list[int]:
    """Line numbers where the identifier ``name`` occurs in code (not in strings or comments)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.start[0] for t in tokens if t.type == tokenize.NAME and t.string == name]


def _diff(name: str) -> list[str]:
    """The changed lines between the Adam and the pretrained code paths of ``name``, as ``-``/``+`` lines."""
    paths = _code_paths(_source(name))
    diff = difflib.unified_diff(paths["adam"], paths["pretrained"], lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("---", "+++"))]


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_two_loops_differ_in_exactly_one_line(name):
    source = _source(name)
    lines = source.splitlines()
    # The choice reaches the program only as main's `optimizer_name`, which is read on the choice line
    # alone; the command line hands `args.optimizer` to main and to nothing else.
    def_line = next(i + 1 for i, line in enumerate(lines) if line.startswith("def main("))
    choice = _choice(source).value.test.lineno
    assert _name_lines(source, "optimizer_name") == [def_line, choice]
    assert source.count("args.optimizer") == 1
    assert "sys.argv" not in source

    # Given that, the two code paths are the script with the choice line resolved one way or the other.
    diff = _diff(name)
    assert len(diff) == 2, diff
    assert re.fullmatch(r"-\s*\w+ = optax\.adam\(1e-3\)", diff[0]), diff
    shipped = re.fullmatch(r'\+\s*\w+ = lopt\.pretrained\("([\w.-]+)"(, num_steps=steps)?\)', diff[1])
    assert shipped and shipped[1] in lopt.PRETRAINED, diff


@pytest.mark.parametrize("name", EXAMPLES)
def test_readme_shows_the_one_line_diff(name):
    readme = (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    assert "\n".join(_diff(name)) in readme


@pytest.fixture(scope="module")
def fashion_mnist():
    """Skip (fail under ``$LOPT_REQUIRE_DATA``) when Fashion-MNIST is not fetched."""
    try:
        return load("fashion_mnist")
    except DatasetMissingError as e:
        if os.environ.get("LOPT_REQUIRE_DATA"):
            pytest.fail(f"LOPT_REQUIRE_DATA is set but {e}")
        pytest.skip(str(e))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_trains(name, optimizer, fashion_mnist):
    result = _import(name).main(steps=STEPS, optimizer_name=optimizer)
    losses = result["losses"]
    assert len(losses) == STEPS
    initial = sum(losses[:5]) / 5  # ~ln 10 = 2.3 at initialization
    assert initial > 1.5, initial
    assert result["train_loss"] < LOSS_FRACTION * initial, (result["train_loss"], initial)
    assert result["test_accuracy"] > MIN_ACCURACY, result["test_accuracy"]


def _load_script(name: str):
    """The example script ``name`` as a module (no optional library needed)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_meta_train_by_hand_is_the_trainer_from_config(tmp_path):
    """``meta_train_by_hand.py`` wires the trainer `MetaTrainer.from_config` builds for the equivalent
    one-group config, and its loop reaches the bitwise same theta, which it saves."""
    import jax
    import numpy as np

    from lopt.config import MetaTrainConfig
    from lopt.meta_train import MetaTrainer
    from lopt.optimizers.learned import load_theta

    steps, out = 3, tmp_path / "theta.safetensors"
    argv = [
        "--steps",
        str(steps),
        "--particles",
        "2",
        "--truncation",
        "5",
        "--horizon",
        "20",
        "50",
        "--lr",
        "5e-3",
        "--warmup",
        "1",
        "--sigma",
        "0.02",
        "--seed",
        "1",
        "--out",
        str(out),
    ]
    result = _load_script("meta_train_by_hand").main(argv)
    by_hand = result["trainer"]
    (est,) = by_hand.estimators
    assert est.loss_reference == 0.0  # the estimator's default: loss_reference="zero" in a config
    cfg = MetaTrainConfig(
        family="quadratic",
        space='{"dims": [4]}',
        num_groups=1,
        num_particles=2,
        truncation_length=5,
        horizon=(20, 50),
        outer_lr=5e-3,
        warmup=1,
        sigma=0.02,
        seed=1,
        num_steps=steps,
        clip=1.0,
        weight_decay=0.0,
        loss_reference="zero",
        objective=est.objective,
        step_weights=est.step_weights,
        shaping=est.shaping,
        drop_diverged=est.drop_diverged,
    )
    built = MetaTrainer.from_config(cfg)
    assert built.estimators == by_hand.estimators
    assert built.weights == by_hand.weights == (1.0,)
    sigma = ({"sigma": float(np.float32(0.02))},)
    assert jax.tree.map(float, built.hparams) == jax.tree.map(float, by_hand.hparams) == sigma

    state, data = built.init(jax.random.key(cfg.seed)), built.data()
    for _ in range(steps):
        state, _ = built.step(state, data, built.hparams)
    assert len(result["meta_losses"]) == steps and np.all(np.isfinite(result["meta_losses"]))
    expected = [np.asarray(x).tobytes() for x in jax.tree.leaves(state.theta)]
    assert [np.asarray(x).tobytes() for x in jax.tree.leaves(result["theta"])] == expected
    saved = load_theta(out, by_hand.learned)[1]
    assert [np.asarray(x).tobytes() for x in jax.tree.leaves(saved)] == expected
    initial = by_hand.init(jax.random.key(cfg.seed)).theta  # the loop moved theta
    assert [np.asarray(x).tobytes() for x in jax.tree.leaves(initial)] != expected
