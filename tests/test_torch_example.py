"""examples/torch_mnist.py: both optimizers train, and their loops differ in one line, shown in the README.

Skipped when torch is absent or MNIST is not fetched (failing instead under ``$LOPT_REQUIRE_DATA``,
as ``make test`` sets it).
"""

import ast
import importlib.util
import os
from pathlib import Path

import pytest
from helpers import optimizer_choice

from lopt.data import DatasetMissingError, load

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # see tests/test_torch_equivalence.py

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
STEPS = 150


def _choice() -> dict:
    """The script's ``target = PRETRAINED if optimizer_name == "pretrained" else ADAMW`` (on one line
    or wrapped by ruff format): indent, target and the source of both branches."""
    src = _source()
    node = optimizer_choice(src)
    return {
        "indent": " " * node.col_offset,
        "target": ast.unparse(node.targets[0]),
        "pretrained": ast.get_source_segment(src, node.value.body),
        "adamw": ast.get_source_segment(src, node.value.orelse),
    }


def _source() -> str:
    return (EXAMPLES_DIR / "torch_mnist.py").read_text(encoding="utf-8")


def _module():
    spec = importlib.util.spec_from_file_location("examples_torch_mnist", EXAMPLES_DIR / "torch_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_line_apart_and_documented():
    m = _choice()
    code = [
        line
        for line in _source().splitlines()
        if "optimizer_name" in line and not line.lstrip().startswith(("#", '"'))
    ]
    # the choice line, the signature, and the final print: nothing else reads the choice
    assert len(code) == 3, code
    diff = f"-{m['indent']}{m['target']} = {m['adamw']}\n+{m['indent']}{m['target']} = {m['pretrained']}"
    assert diff in (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("optimizer_name", ["pretrained", "adamw"])
def test_trains(optimizer_name):
    try:
        load("mnist")
    except DatasetMissingError:
        if os.environ.get("LOPT_REQUIRE_DATA"):
            raise
        pytest.skip("MNIST not fetched (lopt data fetch mnist)")
    out = _module().main(steps=STEPS, optimizer_name=optimizer_name)
    first = sum(out["losses"][:10]) / 10
    assert out["train_loss"] < 0.35 * first
    assert out["test_accuracy"] > 0.8
