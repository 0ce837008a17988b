"""lopt.distributed on a real local Ray cluster (``ray start --head`` on loopback, started and
stopped by the module fixture): bitwise agreement with the single-process run, workers and the
learner killed with SIGKILL, bad estimates, the staleness bound."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.config import MetaTrainConfig
from lopt.meta_train.trainer import MetaTrainer
from lopt.validate import ConfigError

ray = pytest.importorskip("ray")

from lopt.distributed.learner import meta_train_distributed  # noqa: E402
from lopt.distributed.pool import assign_groups  # noqa: E402

# three distinct groups (dims 4 x2 particles-merged, 2, 8): see _reference
TINY = {
    "family": "quadratic",
    "space": '{"dims": [2, 4, 8]}',
    "num_groups": 4,
    "num_particles": 2,
    "truncation_length": 5,
    "horizon": (20, 50),
    "validate_every": 0,
    "loss_reference": "zero",
    "warmup": 5,
    "num_steps": 20,
    "log_every": 1,
    "ckpt_every": 5,
}
STEPS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray head on loopback (`ray start --head --block`), this process connected to it."""
    port = _free_port()
    temp = Path(f"/tmp/lopt-ray-{os.getpid()}")  # short: Ray's socket paths must stay under 107 bytes
    log = open(tmp_path_factory.mktemp("ray") / "ray.log", "w")  # noqa: SIM115
    # loopback only, for this test: no auth token (Ray >= 2.5x asks clients for one by default)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env = dict(os.environ)
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=4",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except (ConnectionError, RuntimeError):
            if time.monotonic() > deadline or head.poll() is not None:
                head.kill()
                raise
            time.sleep(1.0)
    try:
        yield address
    finally:
        ray.shutdown()
        head.send_signal(signal.SIGTERM)  # --block: the head stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bits(tree) -> list[bytes]:
    def raw(x):
        return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x

    return [np.asarray(raw(x)).tobytes() for x in jax.tree.leaves(tree)]


_REFERENCE: dict = {}


def _reference():
    """The single-process run of TINY: (final state, per-step meta_loss)."""
    if not _REFERENCE:
        trainer = MetaTrainer.from_config(MetaTrainConfig(**TINY))
        assert len(trainer.estimators) == 3
        state, data, losses = trainer.init(jax.random.key(0)), trainer.data(), []
        for _ in range(STEPS):
            state, metrics = trainer.step(state, data, trainer.hparams)
            losses.append(float(metrics["meta_loss"]))
        _REFERENCE.update(state=state, losses=losses)
    return _REFERENCE["state"], _REFERENCE["losses"]


def _cfg(address, tmp_path, **kw):
    return MetaTrainConfig(**{**TINY, "ray": address, "out": str(tmp_path / "run"), **kw})


def _rows(out) -> dict[int, dict]:
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "meta_loss" in r}


def _audit(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "estimates.jsonl").read_text().splitlines()]


def _check_audit(out, staleness: int = 0) -> list[tuple]:
    """Every step 1..STEPS once, one estimate per group each, within the staleness bound, none twice."""
    lines = _audit(out)
    assert [line["step"] for line in lines] == list(range(1, STEPS + 1))
    idents = []
    for line in lines:
        groups = [e[0] for e in line["estimates"]]
        assert groups == [0, 1, 2]
        for group, version, repeat, *_ in line["estimates"]:
            assert 0 <= line["step"] - 1 - version <= staleness
            idents.append((group, version, repeat))
    assert len(set(idents)) == len(idents) == 3 * STEPS
    return idents


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_synchronous_run_is_bitwise_the_single_process_run(cluster, tmp_path, workers):
    ref, losses = _reference()
    cfg = _cfg(cluster, tmp_path, workers=workers)
    state = meta_train_distributed(cfg, progress=False)
    assert int(state.step) == STEPS
    assert _bits(state.theta) == _bits(ref.theta)
    assert _bits(state.opt_state) == _bits(ref.opt_state)
    assert _bits(state.key) == _bits(ref.key)
    rows = _rows(cfg.out)
    assert [rows[s]["meta_loss"] for s in range(1, STEPS + 1)] == losses
    _check_audit(cfg.out)
    # the estimate each update waited for: its wall and CPU seconds on the worker (CPU share)
    assert all(rows[s]["dist/worker_seconds"] > 0 and rows[s]["dist/worker_cpu_seconds"] > 0 for s in rows)
    # its last checkpoint holds the workers' estimator states: the single-process state, bitwise
    from lopt.meta_train import load_run

    _, restored, _, step = load_run(cfg.out)
    assert step == STEPS and _bits(restored) == _bits(ref)


@pytest.mark.slow  # a Ray run of its own: workers start, import jax, compile
def test_killed_worker_is_replaced_and_the_run_continues(cluster, tmp_path):
    ref, losses = _reference()
    cfg = _cfg(cluster, tmp_path, workers=2)
    killed = []

    def kill(step, pool):
        if step == 7:
            pid = pool.pids()[0]
            os.kill(pid, signal.SIGKILL)  # the worker's process, mid-run (it is computing version 7)
            killed.append(pid)

    state = meta_train_distributed(cfg, progress=False, on_step=kill)
    assert killed and int(state.step) == STEPS
    rows = _rows(cfg.out)
    assert rows[STEPS]["dist/replaced"] == 1 and rows[STEPS]["dist/rejected"] == 0
    assert [rows[s]["meta_loss"] for s in range(1, 8)] == losses[:7]  # up to the kill: the reference run
    assert [rows[s]["meta_loss"] for s in range(8, STEPS + 1)] != losses[7:]  # then group 0 restarted
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.theta))
    _check_audit(cfg.out)
    for line in _audit(cfg.out):  # worker 0 owns group 0 (the costliest): incarnation 0 up to step 7, then 1
        for group, _version, _, worker, incarnation, _ in line["estimates"]:
            assert worker == (0 if group == 0 else 1)
            assert incarnation == (int(line["step"] > 7) if worker == 0 else 0)


@pytest.mark.slow  # a Ray run of its own: workers start, import jax, compile
def test_bad_estimates_are_ignored_and_counted(cluster, tmp_path):
    ref, losses = _reference()
    cfg = _cfg(cluster, tmp_path, workers=2)
    # worker 1 (groups 1 and 2) corrupts its 3rd message with NaN and its 5th with another shape
    state = meta_train_distributed(cfg, progress=False, faults={1: {"nan": [2], "shape": [4]}})
    rows = _rows(cfg.out)
    assert rows[STEPS]["dist/rejected"] == 4 and rows[STEPS]["dist/replaced"] == 0  # 2 messages x 2 groups
    assert rows[STEPS]["num_skipped"] == 0
    assert [rows[s]["meta_loss"] for s in range(1, 3)] == losses[:2]  # before the first bad one
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.theta))
    idents = _check_audit(cfg.out)
    for group in (1, 2):  # re-estimated on other keys (repeat 1) for steps 3 and 4
        assert (group, 2, 1) in idents and (group, 3, 1) in idents
        assert (group, 2, 0) not in idents and (group, 3, 0) not in idents


@pytest.mark.slow  # a Ray run of its own: workers start, import jax, compile
def test_staleness_bound_holds(cluster, tmp_path):
    cfg = _cfg(cluster, tmp_path, workers=2, staleness=2)
    state = meta_train_distributed(cfg, progress=False)
    assert int(state.step) == STEPS
    _check_audit(cfg.out, staleness=2)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.theta))


class _Stop(Exception):
    pass


@pytest.mark.slow  # a Ray run of its own: workers start, import jax, compile
def test_killed_learner_resumes_from_its_checkpoint(cluster, tmp_path):
    """SIGKILL the learner (a `lopt meta-train --ray` process) mid-run, resume: every update is applied
    exactly once, and theta is bitwise the uninterrupted single-process run's."""
    endless = {**TINY, "num_steps": 1_000_000}  # killed long before its end
    cfg = _cfg(cluster, tmp_path, workers=2, num_steps=endless["num_steps"])
    flags = [
        "--family",
        "quadratic",
        "--space",
        TINY["space"],
        "--num-groups",
        "4",
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
        "--warmup",
        "5",
        "--num-steps",
        str(cfg.num_steps),
        "--log-every",
        "1",
        "--ckpt-every",
        "5",
        "--ray",
        cluster,
        "--workers",
        "2",
        "--out",
        cfg.out,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lopt.cli", "meta-train", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ckpt = Path(cfg.out) / "checkpoints" / "ckpt_00000010.safetensors"
    deadline = time.monotonic() + 240
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from lopt.checkpoint import list_checkpoints

    start = int(list_checkpoints(Path(cfg.out) / "checkpoints")[-1].name[5:13])
    assert proc.returncode == -signal.SIGKILL and start >= 10  # killed mid-run, after a checkpoint
    stop = start + 5

    def halt(step, pool):
        if step == stop:
            raise _Stop  # after the checkpoint of `stop`

    with pytest.raises(_Stop):
        meta_train_distributed(dataclasses.replace(cfg, resume=True), progress=False, on_step=halt)
    trainer = MetaTrainer.from_config(MetaTrainConfig(**endless))
    ref, data = trainer.init(jax.random.key(0)), trainer.data()
    for _ in range(stop):
        ref, _ = trainer.step(ref, data, trainer.hparams)
    from lopt.meta_train import load_run

    _, restored, _, step = load_run(cfg.out)
    assert step == stop and _bits(restored) == _bits(ref)
    lines = _audit(cfg.out)
    assert [line["step"] for line in lines] == list(range(1, stop + 1))
    idents = [(e[0], e[1], e[2]) for line in lines for e in line["estimates"]]
    assert len(set(idents)) == len(idents) == 3 * stop and all(
        e[1] == line["step"] - 1 for line in lines for e in line["estimates"]
    )


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="add --ray"):
        MetaTrainConfig(**TINY, workers=2)
    for kw, match in [
        ({"workers": 4}, "exceeds the 3 distinct task groups"),
        ({"groups_per_step": 2}, "groups-per-step"),
    ]:
        with pytest.raises(ConfigError, match=match):  # before any cluster is joined or started
            meta_train_distributed(_cfg("auto", tmp_path, **kw), progress=False)


def test_assign_groups_balances_cost():
    assert assign_groups([4.0, 2.0, 2.0], 2) == [(0,), (1, 2)]
    assert assign_groups([1.0, 1.0, 1.0, 1.0, 5.0], 2) == [(4,), (0, 1, 2, 3)]
    assert assign_groups([1.0] * 5, 5) == [(0,), (1,), (2,), (3,), (4,)]


def test_missing_ray_names_the_install_command(monkeypatch):
    from lopt.distributed.cluster import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'lopt\[ray\]'"):
        require_ray()


def test_the_single_machine_path_does_not_import_ray():
    code = (
        "import sys, lopt, lopt.cli, lopt.meta_train, lopt.distributed, lopt.distributed.sharding, "
        "lopt.distributed.core; assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow  # trains the valid-small suite's tasks twice on the validation actor
def test_validation_runs_on_its_own_actor(cluster, tmp_path):
    ref, _ = _reference()
    cfg = _cfg(cluster, tmp_path, workers=2, validate_every=10, validation="valid-small")
    state = meta_train_distributed(cfg, progress=False)
    assert _bits(state.theta) == _bits(ref.theta)  # validation never touches the trajectory
    rows = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    valid = {r["step"]: r for r in rows if "valid/score" in r}
    assert sorted(valid) == [0, 10, 20] and all(np.isfinite(r["valid/score"]) for r in valid.values())
    best = json.loads((Path(cfg.out) / "best.json").read_text())
    assert best["score"] == min(r["valid/score"] for r in valid.values())
    assert (Path(cfg.out) / "best.safetensors").exists()
