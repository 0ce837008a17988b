"""Meta-training: exact resume after SIGKILL (real subprocesses), same seed -> same theta, skipped
non-finite updates, the learned optimizer as outer optimizer, config files, and end to end: PES
meta-training of `mlp` on 10-d quadratics makes it better than its initialization on fresh tasks."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tyro
from safetensors import safe_open
from safetensors.numpy import load_file

from lopt import checkpoint
from lopt.checkpoint import CheckpointError
from lopt.config import MetaTrainConfig, explicit_flags, resolve
from lopt.meta_train import HeldOutEval, MetaTrainer, OuterState, meta_train, outer_step
from lopt.validate import ConfigError

TINY = {
    "family": "quadratic",
    "space": '{"dims": [4]}',
    "num_groups": 2,
    "num_particles": 2,
    "truncation_length": 5,
    "horizon": (20, 50),
    "validate_every": 0,
    "loss_reference": "zero",
}
TINY_FLAGS = [
    "--family",
    "quadratic",
    "--space",
    '{"dims": [4]}',
    "--num-groups",
    "2",
    "--num-particles",
    "2",
    "--truncation-length",
    "5",
    "--horizon",
    "20",
    "50",
    "--validate-every",
    "0",
    "--loss-reference",
    "zero",
]


def _run_steps(trainer: MetaTrainer, state, num_steps: int):
    data = trainer.data()
    rows = []
    for _ in range(num_steps):
        state, metrics = trainer.step(state, data, trainer.hparams)
        rows.append(metrics)
    return state, jax.device_get(rows)


def _bits(tree) -> list[bytes]:
    def raw(x):
        return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x

    return [np.asarray(raw(x)).tobytes() for x in jax.tree.leaves(tree)]


def _assert_states_close(a, b, rtol=1e-5):
    """Same structure; integer and key leaves equal, float leaves within rtol (another XLA program
    -- a scan over slots -- may fuse differently from calling the estimator by hand)."""

    def raw(x):
        return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)

    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = raw(x), raw(y)
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)


# --- exact resume ---------------------------------------------------------------------------------


def test_resume_after_sigkill_is_bitwise_exact(tmp_path):
    """Two processes run the same 1000-step config; one is SIGKILLed at a random moment after its
    first checkpoint and resumed with --resume. Its final theta is bitwise the uninterrupted one's,
    and so are its per-step meta-losses; the two runs' common checkpoints are byte-identical (same
    seed, same result across processes). The later processes load the first one's compiled programs
    from a temporary JAX compilation cache, which saves ~10 s each."""
    num_steps = 1000
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"), "PYTHONUNBUFFERED": "1"}

    def command(out, *extra):
        return [
            sys.executable,
            "-m",
            "lopt.cli",
            "meta-train",
            *TINY_FLAGS,
            "--num-steps",
            str(num_steps),
            "--ckpt-every",
            "10",
            "--ckpt-minutes",
            "0",
            "--keep",
            "1000",
            "--log-every",
            "1",
            "--out",
            str(out),
            *extra,
        ]

    def start(out, *extra):
        with open(tmp_path / f"{out.name}.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                command(out, *extra), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
            )

    def wait_for_first_checkpoint(out, process):
        first = out / "checkpoints" / "ckpt_00000010.safetensors"
        deadline = time.monotonic() + 150
        while not first.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.exists(), (tmp_path / f"{out.name}.log").read_text()

    full, killed = tmp_path / "full", tmp_path / "killed"
    p_full = start(full)
    wait_for_first_checkpoint(full, p_full)  # compiled: the next processes load its programs from the cache
    p_killed = start(killed)
    wait_for_first_checkpoint(killed, p_killed)
    time.sleep(random.Random().uniform(0.0, 1.0))  # an arbitrary moment of the run
    p_killed.send_signal(signal.SIGKILL)
    assert p_killed.wait() == -signal.SIGKILL, "the run finished before it was killed: make it longer"
    saved = checkpoint.list_checkpoints(killed / "checkpoints")
    assert 10 <= int(saved[-1].name[5:13]) < num_steps
    assert not (killed / "theta.safetensors").exists()

    p_resume = start(killed, "--resume")
    assert p_resume.wait(timeout=180) == 0, (tmp_path / "killed.log").read_text()
    assert p_full.wait(timeout=180) == 0, (tmp_path / "full.log").read_text()
    assert "resuming from step" in (tmp_path / "killed.log").read_text()

    a, b = load_file(full / "theta.safetensors"), load_file(killed / "theta.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert not np.allclose(a["mlp/l0/w"], jax.device_get(_initial_theta())["mlp"]["l0"]["w"])  # theta moved

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["meta_loss"] for r in rows}

    assert list(losses(full)) == list(range(1, num_steps + 1))
    assert losses(full) == losses(killed)
    for ckpt in saved:  # checkpoints written by both runs before the kill: the same metadata and bytes
        # per tensor (the safetensors library writes its metadata map in hash order, so whole files
        # of two processes may differ in the order of the header's metadata entries)
        mine, theirs = safe_open(ckpt, "numpy"), safe_open(full / "checkpoints" / ckpt.name, "numpy")
        assert mine.metadata() == theirs.metadata(), ckpt.name
        assert sorted(mine.keys()) == sorted(theirs.keys()), ckpt.name
        for name in mine.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
            assert mine.get_tensor(name).tobytes() == theirs.get_tensor(name).tobytes(), (ckpt.name, name)


def _initial_theta():
    cfg = MetaTrainConfig(**TINY)
    return MetaTrainer.build(cfg).init(jax.random.key(cfg.seed)).theta


def test_resume_with_a_different_config_names_the_keys(tmp_path):
    cfg = MetaTrainConfig(**TINY, num_steps=5, out=str(tmp_path))
    trainer = MetaTrainer.build(cfg)
    checkpoint.save(tmp_path / "checkpoints", 3, trainer.init(jax.random.key(0)), cfg.trajectory())
    changed = dataclasses.replace(cfg, sigma=0.02, num_steps=7, resume=True)
    with pytest.raises(CheckpointError) as err:
        meta_train(changed, progress=False)
    message = str(err.value)
    assert "config mismatch" in message and "sigma" in message and "num_steps" in message
    assert "seed" not in message
    with pytest.raises(ConfigError, match="already holds checkpoints"):  # no silent overwrite
        meta_train(cfg, progress=False)


def test_init_theta_starts_from_the_file_and_checks_its_architecture(tmp_path):
    from lopt.optimizers.learned import ThetaMismatchError, save_theta

    trainer = MetaTrainer.build(MetaTrainConfig(**TINY))
    fresh = trainer.init(jax.random.key(0)).theta
    start = jax.tree.map(lambda x: x + 0.25, fresh)  # not any init's theta
    save_theta(tmp_path / "start.safetensors", trainer.learned, start)
    cfg = MetaTrainConfig(**TINY, init_theta=str(tmp_path / "start.safetensors"))
    state = MetaTrainer.build(cfg).init(jax.random.key(0))
    assert _bits(state.theta) == _bits(start)
    assert _bits(state.opt_state) == _bits(trainer.outer_opt.init(start))  # a fresh outer optimizer
    trained, _ = _run_steps(MetaTrainer.build(cfg), state, 2)  # and it trains from there
    assert _bits(trained.theta) != _bits(start)
    with pytest.raises(ThetaMismatchError, match="config"):  # another architecture config
        MetaTrainer.build(dataclasses.replace(cfg, arch='{"log_step_mult": 10}'))
    with pytest.raises(ConfigError, match="not a file"):
        MetaTrainConfig(**TINY, init_theta=str(tmp_path / "missing.safetensors"))


# --- determinism and non-finite updates ----------------------------------------------------------


def test_same_seed_same_theta():
    cfg = MetaTrainConfig(**TINY, num_steps=30)
    trainer = MetaTrainer.build(cfg)
    init = trainer.init(jax.random.key(cfg.seed))
    assert _bits(MetaTrainer.build(cfg).init(jax.random.key(cfg.seed))) == _bits(init)  # a fresh build
    a, rows = _run_steps(trainer, trainer.init(jax.random.key(cfg.seed)), 30)
    b, _ = _run_steps(trainer, trainer.init(jax.random.key(cfg.seed)), 30)
    assert _bits(a.theta) == _bits(b.theta)
    assert _bits(a.theta) != _bits(init.theta)
    c, _ = _run_steps(trainer, trainer.init(jax.random.key(cfg.seed + 1)), 30)
    assert _bits(c.theta) != _bits(a.theta)
    assert int(a.step) == 30 and int(a.num_skipped) == 0
    assert all(r["inner_steps"] == trainer.inner_steps_per_outer_step() == 2 * 4 * 5 for r in rows)


def test_groups_per_step_draws_groups_and_weights_them_unbiasedly():
    """With 3 distinct quadratic groups and S = 2 per step: each step's meta-gradient is
    (G/S) Σ_{i drawn} w_i ĝ_i with ĝ_i the estimator called by hand on the same key, the groups
    not drawn keep their state bitwise, and over steps every group gets drawn."""
    cfg = MetaTrainConfig(**{**TINY, "space": '{"dims": [2, 4, 8]}', "num_groups": 6}, groups_per_step=2)
    trainer = MetaTrainer.build(cfg)
    num = len(trainer.estimators)
    assert num == 3 and trainer.per_step == 2
    assert trainer.inner_steps_per_outer_step() == 2 / 3 * sum(
        e.inner_steps_per_estimate() for e in trainer.estimators
    )
    state, data = trainer.init(jax.random.key(0)), trainer.data()
    drawn_ever = set()
    sgd = optax.sgd(1.0)  # theta_new = theta - g exposes g
    step = jax.jit(
        lambda s: outer_step(
            s,
            data,
            trainer.hparams,
            estimators=trainer.estimators,
            weights=trainer.weights,
            outer_opt=sgd,
            per_step=2,
        )
    )
    state = state._replace(opt_state=sgd.init(state.theta))
    for _ in range(4):
        new, metrics = step(state)
        _, k_est = jax.random.split(state.key)
        k_pick, k_slots = jax.random.split(k_est)
        picks = np.asarray(jax.random.choice(k_pick, num, (2,), replace=False))
        drawn_ever.update(int(i) for i in picks)
        expected = jax.tree.map(jnp.zeros_like, state.theta)
        for i, k in zip(picks, jax.random.split(k_slots, 2)):
            est = trainer.estimators[i]
            g, s_i, m = est.estimate(
                k, state.theta, state.estimator_states[i], trainer.hparams[i], data=data[i]
            )
            w = trainer.weights[i] * num / 2
            expected = jax.tree.map(lambda a, b, w=w: a + w * b, expected, g)
            _assert_states_close(new.estimator_states[i], s_i)
            np.testing.assert_allclose(metrics["meta_loss_groups"][i], m["meta_loss"], rtol=1e-6)
        for i in set(range(num)) - {int(j) for j in picks}:
            assert _bits(new.estimator_states[i]) == _bits(state.estimator_states[i])  # waited
            assert np.isnan(metrics["meta_loss_groups"][i])
        got = jax.tree.map(lambda a, b: a - b, state.theta, new.theta)  # plain SGD(1): theta - theta' = g
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), got, expected)
        state = new
    assert drawn_ever == {0, 1, 2}


class _CountState(NamedTuple):
    count: jax.Array


@dataclasses.dataclass(frozen=True)
class _PoisonEvery:
    """A stand-in estimator: the meta-gradient of the meta-loss |theta|^2 / 2 (that is, theta),
    with NaN on every ``every``-th call (an estimator whose tasks diverged)."""

    every: int = 3

    def estimate(self, key, theta, state, hparams, *, data=None):
        del key, hparams, data
        count = state.count + 1
        poison = jnp.where(count % self.every == 0, jnp.nan, 1.0)
        grad = jax.tree.map(lambda t: t * poison, theta)
        loss = 0.5 * sum(jnp.sum(t**2) for t in jax.tree.leaves(theta))
        zero = jnp.int32(0)
        metrics = {
            "meta_loss": loss,
            "inner_steps": zero,
            "num_nonfinite": zero,
            "num_zeroed": zero,
            "num_resets": zero,
        }
        return grad, _CountState(count), metrics


def test_nonfinite_meta_gradient_is_skipped_and_counted(key):
    theta = {"w": jnp.arange(1.0, 5.0), "b": jnp.ones((2,))}
    opt = optax.sgd(0.1)
    zero = jnp.zeros([], jnp.int32)
    state = OuterState(theta, opt.init(theta), (_CountState(zero),), zero, key, zero)
    step = jax.jit(
        lambda s: outer_step(s, (None,), ({},), estimators=(_PoisonEvery(),), weights=(1.0,), outer_opt=opt)
    )
    skipped = []
    for _ in range(9):
        before = state.theta
        state, metrics = step(state)
        skipped.append(int(metrics["skipped"]))
        for leaf in jax.tree.leaves(state.theta):
            assert np.all(np.isfinite(leaf))
        if skipped[-1]:
            assert _bits(state.theta) == _bits(before)  # unchanged, not NaN
    assert skipped == [0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert int(state.num_skipped) == int(metrics["num_skipped"]) == 3
    np.testing.assert_allclose(state.theta["w"], np.arange(1.0, 5.0) * 0.9**6, rtol=1e-5)  # 6 real SGD steps


# --- the learned optimizer as outer optimizer ----------------------------------------------------


def test_learned_optimizer_as_outer_optimizer(tmp_path):
    """The untrained `mlp` optimizer (≈ normalized Adam with step 1e-3) trains an `mlp` theta on the
    tiny problem: 200 finite steps, nothing skipped, theta moves, and the meta-loss of the last 50
    steps is below that of the first 50 (it is noisy, so the margin asserted is small)."""
    cfg = MetaTrainConfig(
        **TINY, outer_opt="mlp", num_steps=200, out=str(tmp_path), ckpt_every=0, ckpt_minutes=0
    )
    state = meta_train(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = np.array([r["meta_loss"] for r in rows])
    assert len(losses) == 200 and np.all(np.isfinite(losses))
    assert int(state.num_skipped) == 0
    assert all(r["update_norm"] > 0 for r in rows[1:])
    assert losses[-50:].mean() < losses[:50].mean() - 0.01, (losses[:50].mean(), losses[-50:].mean())
    scalars = _tensorboard_scalars(tmp_path / "tb")
    np.testing.assert_allclose(scalars["meta_loss"], losses, rtol=1e-6)  # the same values, every step
    assert len(scalars["update_norm"]) == 200


def _tensorboard_scalars(directory) -> dict[str, list[float]]:
    """Tag -> values in step order, read from the TFRecord event files by hand (length, crc, Event)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        raw = path.read_bytes()
        at = 0
        while at < len(raw):
            (length,) = struct.unpack("<Q", raw[at : at + 8])
            event = Event.FromString(raw[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for v in event.summary.value:
                found.setdefault(v.tag, []).append((event.step, v.simple_value))
    return {tag: [v for _, v in sorted(rows)] for tag, rows in found.items()}


# --- config files and flags ---------------------------------------------------------------------


def test_config_file_overridden_by_explicit_flags(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"config": {**TINY, "horizon": [20, 50], "num_steps": 500, "sigma": 0.05}}))
    argv = ["--config", str(path), "--num-steps", "1000", "--seed", "3"]  # 1000 is also the default
    flags = tyro.cli(MetaTrainConfig, args=[a for a in argv if a not in ("--config", str(path))])
    cfg = resolve(flags, str(path), explicit_flags(argv))
    assert cfg.num_steps == 1000 and cfg.seed == 3  # explicit flags win, even one equal to its default
    assert cfg.sigma == 0.05 and cfg.horizon == (20, 50) and cfg.family == "quadratic"  # from the file
    assert resolve(flags, str(path)).num_steps == 500  # not named explicitly and at its default: the file's
    path.write_text(json.dumps({"sigmaa": 1}))
    with pytest.raises(ConfigError, match="unknown fields \\['sigmaa'\\]"):
        resolve(flags, str(path))
    with pytest.raises(ConfigError, match="outer_opt"):
        MetaTrainConfig(outer_opt="lion")


# --- end to end -----------------------------------------------------------------------------------


QUAD10 = {
    "family": "quadratic",
    "space": '{"dims": [10]}',
    "num_groups": 1,
    "num_particles": 8,
    "truncation_length": 50,
    "horizon": (200, 200),
    "outer_lr": 3e-3,
    "warmup": 20,
    "ckpt_every": 0,
    "ckpt_minutes": 0,
    "log_every": 50,
    "validate_every": 0,
    "objective": "relative",
    "loss_reference": "zero",
    "step_weights": "uniform",
    "shaping": "none",
    "drop_diverged": False,
}


def test_pes_meta_training_beats_its_initialization(tmp_path):
    """300 outer steps of PES (8 tasks x 2 antithetic, K = 50, horizon 200): the meta-loss falls and,
    on 12 fresh quadratics, the trained optimizer reaches a lower test loss after 200 steps than
    its initialization."""
    cfg = MetaTrainConfig(**QUAD10, num_steps=300, out=str(tmp_path))
    state = meta_train(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = np.array([r["meta_loss"] for r in rows if "meta_loss" in r])
    assert len(losses) == 300 and int(state.num_skipped) == 0
    assert losses[-30:].mean() < 0.85 * losses[:30].mean(), (losses[:30].mean(), losses[-30:].mean())
    assert (tmp_path / "theta.safetensors").exists() and json.loads((tmp_path / "config.json").read_text())

    trainer = MetaTrainer.build(cfg)
    held_out = HeldOutEval(cfg, trainer.learned, num_tasks=12, steps=200, seeds=1)  # 12 fresh tasks
    trained = held_out.losses(state.theta)
    initial = held_out.losses(trainer.init(jax.random.key(cfg.seed)).theta)
    assert np.all(np.isfinite(trained))
    assert np.mean(trained < initial) >= 0.75, (trained, initial)
    assert np.mean(np.log(trained / initial)) < -0.2, (trained, initial)


@pytest.mark.slow
def test_pes_meta_training_beats_adam(tmp_path):
    """1000 outer steps of 16 tasks with horizons 100-1000: after 500 steps on 16 fresh 10-d
    quadratics, the trained optimizer beats Adam at lr 1e-3 on most and on the geometric mean."""
    cfg = MetaTrainConfig(
        **{**QUAD10, "horizon": (100, 1000), "num_particles": 16}, num_steps=1000, out=str(tmp_path)
    )
    state = meta_train(cfg, progress=False)
    held_out = HeldOutEval(cfg, MetaTrainer.build(cfg).learned, num_tasks=16, steps=500, seeds=1)
    trained, adam = held_out.losses(state.theta), held_out.adam_losses()
    assert np.mean(trained < adam) >= 0.75, (trained, adam)
    assert np.mean(np.log(trained / adam)) < -0.2, (trained, adam)
