"""The validation protocol (`lopt.validation`) and its place in meta-training: suites fixed and
disjoint from the held-out suite, stored references by hand, the score's closed form, a learned
Adam at the reference's own learning rate scoring exactly the reference, and `meta_train`'s
validations, best theta, portable checkpoints and resume."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import checkpoint
from lopt.config import MetaTrainConfig
from lopt.meta_train import meta_train
from lopt.meta_train.run_dir import BestTheta
from lopt.optimizers.learned import get_learned, load_theta
from lopt.tasks.suites import get_suite
from lopt.tuning import ADAM_LR_GRID, BaselineMaker
from lopt.validate import ConfigError, UnknownNameError
from lopt.validation import (
    VALIDATION_SUITES,
    ValidationSuite,
    Validator,
    get_validation_suite,
    normalized,
    score,
)
from lopt.validation.runs import final_losses

references_mod = importlib.import_module("lopt.validation.references")  # the module, not the function

TINY_SUITE = ValidationSuite(
    "tiny",
    "two logistic regressions, T = 40",
    families=("logistic_regression",),
    per_family=2,
    draws=3,
    steps=40,
    seeds=2,
    long_tasks=1,
    long_factor=2,
)


@pytest.fixture
def tiny_suite(monkeypatch, tmp_path):
    monkeypatch.setitem(VALIDATION_SUITES, "tiny", TINY_SUITE)
    monkeypatch.setenv("LOPT_CACHE", str(tmp_path / "cache"))
    return TINY_SUITE


def test_unknown_suite_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid, valid-confirm, valid-small"):
        get_validation_suite("nope")
    with pytest.raises(UnknownNameError, match="validation suite"):
        MetaTrainConfig(validation="nope")
    with pytest.raises(ConfigError, match="held-out suite"):
        ValidationSuite("x", "from the held-out suite", suite="test")


def test_valid_suite_is_fixed_several_per_family_and_disjoint_from_test():
    vs = get_validation_suite("valid")
    tasks = vs.tasks()
    assert [t.name for t in tasks] == [t.name for t in vs.tasks()]  # fixed by its seed
    families = [t.family.name for t in tasks]
    assert sorted(set(families)) == sorted(f.name for f in get_suite("train_nn").families())
    assert all(families.count(f) == vs.per_family for f in set(families))
    held_out = get_suite("test").pairs()
    assert not {(t.family.name, getattr(t.static, "dataset", "-")) for t in tasks} & held_out
    long = vs.long(tasks)
    assert len(long) == vs.long_tasks and len({t.family.name for t in long}) == vs.long_tasks


def test_confirm_suite_shares_no_task_with_valid():
    """valid-confirm re-checks a checkpoint chosen on valid on other tasks of the same families."""
    valid, confirm = get_validation_suite("valid"), get_validation_suite("valid-confirm")
    a, b = valid.tasks(), confirm.tasks()
    assert not {t.name for t in a} & {t.name for t in b}
    assert sorted(t.family.name for t in a) == sorted(t.family.name for t in b)
    assert confirm.seeds == 3 and confirm.steps == valid.steps


def test_score_closed_form():
    refs = {
        "tasks": [
            {"init": 3.0, "per_task": {"loss": 1.0}, "global": {"loss": 1.5}},
            {"init": 2.0, "per_task": {"loss": 0.0}, "global": {"loss": 0.5}},
            {"init": 1.0, "per_task": {"loss": 0.5}, "global": {"loss": 0.6}},
        ]
    }
    losses = np.array([1.2, -5.0, np.inf])
    m = score(losses, refs)
    n = [(1.2 - 1.0) / 2.0, -1.0, 2.0]  # the second clipped at -1, the diverged one at 2
    assert m["valid/score"] == pytest.approx(np.mean(n))
    assert m["valid/median"] == pytest.approx(0.1)  # sorted: -1, 0.1, 2
    assert m["valid/wins_global"] == 2 and m["valid/wins_per_task"] == 1 and m["valid/diverged"] == 1
    assert m["valid/global_score"] == pytest.approx(np.mean([0.25, 0.25, 0.2]))
    np.testing.assert_allclose(normalized(1.0, 1.0, 3.0), 0.0)


def test_best_theta_keeps_the_lowest_of_its_key(tmp_path):
    """--select-by median keeps the theta of the lowest median even where the mean says otherwise;
    a record kept by another key is replaced at the next validation, and resume reads it back."""
    learned = get_learned("mlp")()
    thetas = [learned.init(jax.random.key(i)) for i in range(3)]
    rows = [  # (mean, median): the mean prefers the second, the median the third
        {"valid/score": 0.30, "valid/median": 0.20, "cpu_seconds": 1.0},
        {"valid/score": 0.10, "valid/median": 0.15, "cpu_seconds": 2.0},
        {"valid/score": 0.20, "valid/median": 0.05, "cpu_seconds": 3.0},
    ]
    by_mean, by_median = (
        BestTheta(tmp_path / "a", learned, 0),
        BestTheta(tmp_path / "b", learned, 0, "valid/median"),
    )
    for out in ("a", "b"):
        (tmp_path / out).mkdir()
    kept = [
        (by_mean.update(s, r, t), by_median.update(s, r, t)) for s, (r, t) in enumerate(zip(rows, thetas))
    ]
    assert kept == [(True, True), (True, True), (False, True)]
    assert by_mean.record["step"] == 1 and by_median.record["step"] == 2
    assert json.loads((tmp_path / "b" / "best.json").read_text())["kept_by"] == "valid/median"
    _, theta = load_theta(tmp_path / "b" / "best.safetensors")
    for got, want in zip(jax.tree.leaves(theta), jax.tree.leaves(thetas[2]), strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(thetas[2]), jax.tree.leaves(thetas[1])))
    switched = BestTheta(tmp_path / "a", learned, 5, "valid/median")  # resumed with the other key
    assert switched.update(6, {"valid/score": 0.9, "valid/median": 0.9, "cpu_seconds": 4.0}, thetas[0])
    resumed = BestTheta(tmp_path / "b", learned, 5, "valid/median")
    assert not resumed.update(6, {"valid/score": 0.0, "valid/median": 0.06, "cpu_seconds": 4.0}, thetas[0])


def test_select_by_names_the_choices():
    with pytest.raises(
        ConfigError, match="select_by='mean' is not valid: choose one of \\['score', 'median'\\]"
    ):
        MetaTrainConfig(select_by="mean")


def test_references_by_hand_and_cached(tiny_suite, monkeypatch):
    tasks = tiny_suite.tasks()
    refs = references_mod.references(tiny_suite, tasks, tiny_suite.steps)
    trials = {"learning_rate": np.asarray(ADAM_LR_GRID, np.float32)}
    for task, row in zip(tasks, refs["tasks"]):
        final, init, diverged = final_losses(task, BaselineMaker("adam"), trials, steps=40, seeds=2)
        med = np.where(diverged.any(-1), np.inf, np.median(final, -1))
        assert row["per_task"]["loss"] == pytest.approx(float(np.min(med)))
        assert row["per_task"]["learning_rate"] == pytest.approx(float(ADAM_LR_GRID[int(np.argmin(med))]))
        assert row["init"] == pytest.approx(float(np.median(init)))
        assert row["global"]["loss"] >= row["per_task"]["loss"]
    assert len({r["global"]["learning_rate"] for r in refs["tasks"]}) == 1  # one rate for all tasks
    # computed once: the second call reads the cache
    monkeypatch.setattr(references_mod, "compute", lambda *a, **k: pytest.fail("recomputed"))
    assert references_mod.references(tiny_suite, tasks, tiny_suite.steps) == refs


def test_learned_adam_at_the_reference_rate_scores_the_reference(tiny_suite):
    """`adam_lr` (Adam with a learned global rate) at each task's tuned rate matches the per-task
    reference on that task: same keys, same batches, the same Adam."""
    learned = get_learned("adam_lr")()
    validator = Validator(tiny_suite, learned)
    refs = validator.references()
    for t, row in enumerate(refs["tasks"]):
        theta = learned.init(None)
        theta = {**theta, "log_lr": jnp.float32(math.log(row["per_task"]["learning_rate"]))}
        losses = validator.losses(theta)
        assert losses[t] == pytest.approx(row["per_task"]["loss"], rel=1e-4)


def _cfg(tmp_path, **kw):
    base = dict(
        family="quadratic",
        space='{"dims": [4]}',
        num_groups=1,
        num_particles=2,
        truncation_length=5,
        horizon=(20, 50),
        loss_reference="zero",
        validate_every=4,
        validation="tiny",
        ckpt_every=4,
        ckpt_minutes=0,
        keep=5,
        log_every=1,
        out=str(tmp_path / "run"),
    )
    return MetaTrainConfig(**{**base, **kw})


def test_meta_train_validates_and_keeps_the_best_theta(tiny_suite, tmp_path):
    cfg = _cfg(tmp_path, num_steps=12, outer_lr=0.05, warmup=0)
    meta_train(cfg, progress=False)
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if "valid/score" in r]
    assert [r["step"] for r in valid] == [0, 4, 8, 12]
    assert all(r["cpu_seconds"] > 0 for r in valid) and all(r["valid/tasks"] == 2 for r in valid)
    best_row = min(valid, key=lambda r: r["valid/score"])
    best = json.loads((out / "best.json").read_text())
    assert best["step"] == best_row["step"] and best["score"] == pytest.approx(best_row["valid/score"])
    learned, theta = load_theta(out / "best.safetensors")
    again = Validator(tiny_suite, learned)(theta)
    assert again["valid/score"] == pytest.approx(best["score"], rel=1e-6)  # the same theta, the same score
    # portable checkpoints beside the full ones: small, and the same theta as the full checkpoint
    port = checkpoint.latest(out / "portable")
    assert port is not None and port.name == "ckpt_00000012.safetensors" and port.stat().st_size < 1_000_000
    assert "test" not in json.dumps(valid)  # no test split anywhere in the validation rows


def test_resume_from_a_portable_checkpoint_restarts_particles(tiny_suite, tmp_path):
    """A run copied without its full checkpoints (another machine) resumes from the portable file:
    theta, outer state, step and key from it, particles fresh -- documented as not bitwise."""
    from rich.console import Console

    from lopt.meta_train import MetaTrainer
    from lopt.meta_train.loop import portable

    cfg = _cfg(tmp_path, num_steps=10, validate_every=0)
    final = meta_train(cfg, progress=False)
    out = tmp_path / "run"
    template = jax.eval_shape(MetaTrainer.from_config(cfg)._init, jax.random.key(cfg.seed))
    state8, _, _ = checkpoint.restore(checkpoint.checkpoint_path(out / "checkpoints", 8), template)
    for path in checkpoint.list_checkpoints(out / "checkpoints") + checkpoint.list_checkpoints(
        out / "portable"
    ):
        path.unlink()
    checkpoint.save(out / "portable", 8, portable(state8), cfg.trajectory(), keep=1)
    console = Console(record=True, width=300)
    state = meta_train(dataclasses.replace(cfg, resume=True), progress=False, console=console)
    assert "resuming from the portable checkpoint of step 8" in console.export_text()
    assert int(state.step) == 10 and int(state.num_skipped) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "meta_loss" in r] == list(range(1, 11))
    moved = [np.asarray(a) for a in jax.tree.leaves(state.theta)]
    assert not all(np.array_equal(a, np.asarray(b)) for a, b in zip(moved, jax.tree.leaves(state8.theta)))
    assert not all(np.array_equal(a, np.asarray(b)) for a, b in zip(moved, jax.tree.leaves(final.theta)))


def test_a_resumed_run_keeps_the_loss_references_it_recorded(tiny_suite, tmp_path):
    """L_ref travels with the run (references.json), so a run resumed on another machine optimizes
    the objective it started with instead of recomputing the references there."""
    cfg = _cfg(tmp_path, num_steps=4, validate_every=0)
    meta_train(cfg, progress=False)
    path = tmp_path / "run" / "references.json"
    record = json.loads(path.read_text())
    assert record["references"] == [0.0] and record["loss_reference"] == "zero" and record["steps"] == 50
    record["references"] = [0.25]  # as if another machine's tuned Adam had found another L_ref
    path.write_text(json.dumps(record))
    meta_train(dataclasses.replace(cfg, resume=True), progress=False)
    groups = json.loads((tmp_path / "run" / "config.json").read_text())["groups"]
    assert groups[0].endswith("L_ref=0.25") and json.loads(path.read_text())["references"] == [0.25]
    record["steps"] = 3000  # a foreign run's references: named, and nothing is overwritten
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="references.json holds references of kind 'zero' at 3000 steps"):
        meta_train(dataclasses.replace(cfg, resume=True), progress=False)
    assert json.loads(path.read_text())["steps"] == 3000


def test_resume_passes_over_a_corrupt_checkpoint(tiny_suite, tmp_path, capsys):
    cfg = _cfg(tmp_path, num_steps=8, validate_every=0)
    meta_train(cfg, progress=False)
    ckpts = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")
    newest = ckpts[-1]
    newest.write_bytes(newest.read_bytes()[:-7])
    from rich.console import Console

    console = Console(record=True, width=300)
    state = meta_train(dataclasses.replace(cfg, resume=True), progress=False, console=console)
    text = console.export_text()
    assert f"passing over a corrupt checkpoint: {newest}" in text and "resuming from step 4" in text
    assert newest.exists() and int(state.step) == 8  # nothing deleted; the run ran steps 5-8 again


def test_resume_of_a_foreign_run_names_the_file(tmp_path):
    cfg = _cfg(tmp_path, num_steps=4, validate_every=0)
    meta_train(cfg, progress=False)
    with pytest.raises(
        checkpoint.CheckpointMismatch, match="ckpt_00000004.safetensors.*config mismatch.*seed"
    ):
        meta_train(dataclasses.replace(cfg, seed=99, resume=True), progress=False)
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt_00000004.safetensors")


def test_best_within_a_cpu_budget():
    from lopt.meta_train.curves import best_within

    rows = [
        {"cpu_seconds": 600, "valid/score": 0.5, "step": 0},
        {"cpu_seconds": 1700, "valid/score": 0.2, "step": 50},
        {"cpu_seconds": 4000, "valid/score": 0.3, "step": 100},
        {"cpu_seconds": 7000, "valid/score": 0.1, "step": 150},
    ]
    assert best_within(rows, 0.5)["step"] == 50
    assert best_within(rows, 1.5)["step"] == 50  # 0.3 at step 100 is worse than the kept 0.2
    assert best_within(rows, 2.0)["step"] == 150
    assert best_within(rows, 0.1) is None


def test_curves_rank_by_the_median_of_older_rows(tmp_path, capsys):
    """A row without valid/median (older lopt) gets it from valid/norm; --by median ranks by it."""
    from lopt.meta_train.curves import validation_curves

    rows = [
        {
            "step": 0,
            "cpu_seconds": 100,
            "valid/score": 0.4,
            "valid/norm": [0.0, 0.1, 1.1],
            "valid/wins_global": 1,
        },
        {
            "step": 50,
            "cpu_seconds": 196,
            "valid/score": 0.3,
            "valid/norm": [0.2, 0.3, 0.4],
            "valid/wins_global": 0,
        },
    ]
    for r in rows:
        r["valid/global_score"] = 0.5
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    by_mean = validation_curves((f"r={tmp_path}",), (0.055,), by="score")
    by_median = validation_curves((f"r={tmp_path}",), (0.055,), by="median")
    assert "0.3000 (50)" in by_mean["table"] and "0.1000 (0)" in by_median["table"]
    assert by_median["curves"]["r"]["median"] == pytest.approx([0.1, 0.3])
    with pytest.raises(ConfigError, match="by='mean' is not valid"):
        validation_curves((str(tmp_path),), by="mean")


def test_curves_at_equal_steps_and_over_a_window(tmp_path):
    """--steps budgets by outer step; --window averages the validations in a step range by hand; a
    step validated again after a resume counts once (the later row)."""
    from lopt.meta_train.curves import validation_curves, validation_rows

    medians = {0: 0.005, 100: 0.004, 200: 0.001, 300: 0.003, 400: 0.002}
    rows = [
        {
            "step": s,
            "cpu_seconds": 800 + 170 * s,
            "valid/score": 0.01 + m,
            "valid/median": m,
            "valid/wins_global": 7,
        }
        for s, m in medians.items()
    ]
    rows.insert(
        3, {**rows[2], "valid/median": 0.0, "valid/score": 0.009}
    )  # a resume's first row: step 200 again
    rows[2] = {**rows[2], "valid/median": 0.5}  # ... and the row it replaces
    for r in rows:
        r["valid/global_score"] = 0.018
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["step"] for r in validation_rows(tmp_path)] == [0, 100, 200, 300, 400]
    out = validation_curves((f"r={tmp_path}",), by="median", steps=(150, 400, 500), window=(100, 300))
    line = out["table"].splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:4] == ["0.0040 (100)", "0.0000 (200)", "-"]
    assert cells[4] == f"{(0.004 + 0.0 + 0.003) / 3:.4f} (3)"
    assert cells[5:] == ["400", f"{(800 + 170 * 400) / 3600:.2f}"]
    with pytest.raises(ConfigError, match="window=.*FIRST LAST"):
        validation_curves((str(tmp_path),), window=(300, 100))


def test_curves_pair_runs_task_by_task(tmp_path):
    """--against counts the tasks whose mean normalized loss over the window is below the named
    run's, as computed by hand; runs of different validation tasks are refused."""
    from lopt.meta_train.curves import validation_curves

    def write(name, norms, suite="valid"):
        rows = [
            {
                "step": 100 * i,
                "cpu_seconds": 100.0 * (i + 1),
                "valid/score": float(np.mean(n)),
                "valid/median": float(np.median(n)),
                "valid/norm": n,
                "valid/tasks": len(n),
                "valid/wins_global": 1,
                "valid/global_score": 0.02,
            }
            for i, n in enumerate(norms)
        ]
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp_path / name / "config.json").write_text(json.dumps({"config": {"validation": suite}}))
        return f"{name}={tmp_path / name}"

    base = write("base", [[9.0, 9.0, 9.0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])  # window means 0.2 each
    ab = write("ab", [[0.0, 0.0, 0.0], [0.1, 0.3, 0.0], [0.1, 0.3, 0.1]])  # 0.1, 0.3, 0.05
    out = validation_curves((base, ab), steps=(200,), window=(100, 200), against="base")
    cells = [c.strip() for c in out["table"].splitlines()[-1].strip("|").split("|")]
    assert cells[0] == "ab" and cells[3] == "2/3 (median Δ -0.1000)"
    for other in (write("fewer", [[0.1, 0.1]] * 3), write("other", [[0.1] * 3] * 3, suite="valid-confirm")):
        with pytest.raises(ConfigError, match="different tasks"):
            validation_curves((base, other), window=(100, 200), against="base")
    with pytest.raises(ConfigError, match="against='nope': name one of the runs"):
        validation_curves((base, ab), window=(100, 200), against="nope")


def test_group_reference_is_tuned_adams_best_less_the_margin(monkeypatch, tmp_path):
    from lopt.objective import REFERENCE_GRID, REFERENCE_MARGIN, REFERENCE_SEED, group_reference
    from lopt.tasks.base import TaskConfig
    from lopt.tasks.registry import get_family
    from lopt.tuning import failed, init_loss, lr_search, run_search
    from lopt.tuning import score as tuning_score

    family = get_family("logistic_regression", datasets=("wine",))
    static = family.sample_static(jax.random.key(0))
    ref = group_reference(family, static, steps=30, cache=str(tmp_path))
    task = family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(REFERENCE_SEED), static)))
    res = run_search(
        task,
        lr_search("adam", grid=REFERENCE_GRID),
        num_steps=30,
        num_seeds=1,
        eval_every=30,
        seed=REFERENCE_SEED,
    )
    s = np.where(failed(res), np.inf, tuning_score(res, "outer_valid"))
    best, init = float(s.min()), init_loss(res, "outer_valid")
    assert ref == pytest.approx(best - REFERENCE_MARGIN * (init - best), rel=1e-6)
    assert group_reference(family, static, kind="zero") == 0.0
    with pytest.raises(ConfigError, match="loss reference"):
        group_reference(family, static, kind="median")


def test_export_run_copies_the_portable_part_only(tiny_suite, tmp_path):
    from lopt.meta_train.export import export_run

    cfg = _cfg(tmp_path, num_steps=8, validate_every=4)
    meta_train(cfg, progress=False)
    files = export_run(str(tmp_path / "run"), str(tmp_path / "exported"), every=3)
    names = sorted(str(p.relative_to(tmp_path / "exported")) for p in files)
    assert names == [
        "best.json",
        "best.safetensors",
        "config.json",
        "metrics.jsonl",
        "portable/ckpt_00000008.safetensors",
        "references.json",
        "theta.safetensors",
    ]
    rows = [json.loads(line) for line in (tmp_path / "exported" / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows if "meta_loss" in r} == {3, 6}
    assert [r["step"] for r in rows if "valid/score" in r] == [0, 4, 8]
    with pytest.raises(ConfigError, match="no portable checkpoint"):
        export_run(str(tmp_path / "exported" / "nothing"), str(tmp_path / "x"))
