"""Distributed meta-training throughput (lopt.distributed), ratios side by side in one run.

    python benchmarks/distributed.py                  # both cores idle: wrap with tools that pause other jobs
    python benchmarks/distributed.py --steps 40 --json out.json

Measured, on one config (two task groups of equal cost: 1000- and 1001-d quadratics, 4 particles
each, K = 20, PES, the mlp optimizer):

1. single process (all cores) vs one Ray worker (all cores; the learner in this process):
   outer steps/s, target ratio >= 0.90;
2. one process pinned to core 0 vs two Ray workers pinned to cores 0 and 1 (one group each;
   the learner unpinned): outer steps/s, target ratio >= 1.7;

and the inputs of the scaling model (docs/scaling.md): the workers' estimate time per group,
the learner's update time, and the bytes of an estimate message and of theta. Each throughput is
the median of per-step rates over the steps after a warm-up (compilation excluded). Staleness 0
(synchronous) throughout: the strict case.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = {  # two task groups of equal cost (1000- and 1001-d quadratics), compute-bound, quick to compile
    "family": "quadratic",
    "space": '{"dims": [1000, 1001]}',
    "num_groups": 2,
    "num_particles": 4,
    "truncation_length": 20,
    "horizon": (200, 1000),
    "validate_every": 0,
    "loss_reference": "zero",
    "ckpt_every": 0,
    "ckpt_minutes": 0.0,
    "log_every": 1000,
    "seed": 0,
}
WARMUP = 5


def _config(**kw):
    from lopt.config import MetaTrainConfig

    return MetaTrainConfig(**{**CONFIG, **kw})


def _rates(times: list[float]) -> float:
    """Median outer steps/s over consecutive step times (the first WARMUP steps left out)."""
    gaps = [b - a for a, b in zip(times[WARMUP:], times[WARMUP + 1 :])]
    return 1.0 / statistics.median(gaps)


def single(steps: int) -> dict:
    """This process: the plain jitted outer step, ``steps`` times; steps/s and the update cost."""
    import jax

    from lopt.distributed.core import LearnerProgram, WorkerProgram
    from lopt.distributed.wire import to_host
    from lopt.meta_train.trainer import MetaTrainer

    trainer = MetaTrainer.from_config(_config(num_steps=steps))
    state, data = trainer.init(jax.random.key(CONFIG["seed"])), trainer.data()
    times = []
    for _ in range(steps):
        state, metrics = trainer.step(state, data, trainer.hparams)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter())
    # the learner's update alone, and the message sizes
    worker = WorkerProgram(trainer, tuple(range(len(trainer.estimators))))
    from lopt.distributed.core import group_keys

    grads, _, group_metrics = worker.estimate(
        group_keys(state.key, len(trainer.estimators)), state.theta, state.estimator_states
    )
    grads, group_metrics = jax.device_get((grads, group_metrics))
    learner, lstate = LearnerProgram(trainer), state._replace(estimator_states=())
    jax.block_until_ready(learner.update(lstate, grads, group_metrics))
    t = []
    for _ in range(50):
        t0 = time.perf_counter()
        jax.block_until_ready(learner.update(lstate, grads, group_metrics))
        t.append(time.perf_counter() - t0)
    return {
        "steps_per_s": _rates(times),
        "groups": trainer.describe(),
        "update_s": statistics.median(t),
        "estimate_bytes": len(pickle.dumps((grads[0], group_metrics[0]))),
        "theta_bytes": len(pickle.dumps(to_host(state.theta))),
    }


def distributed(steps: int, workers: int, cores: list[int] | None, out: str) -> dict:
    """A Ray run (local cluster started here) of ``steps`` outer steps."""
    from rich.console import Console

    from lopt.distributed.learner import meta_train_distributed

    times, seconds = [], []

    def mark(step, pool):
        times.append(time.perf_counter())

    cfg = _config(num_steps=steps, ray="auto", workers=workers, out=out)
    meta_train_distributed(cfg, progress=False, cores=cores, on_step=mark, console=Console(quiet=True))
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["dist/worker_seconds"] for r in rows[WARMUP:] if "dist/worker_seconds" in r]
    return {"steps_per_s": _rates(times), "worker_seconds": statistics.median(seconds)}


class _Echo:
    def echo(self, x):
        return x


def rpc(steps: int) -> dict:
    """Ray's cost per message with an estimate-sized payload: the round-trip latency (one call at a
    time) and the caller's cost per call when calls are pipelined (its serial share)."""
    import jax
    import numpy as np

    from lopt.distributed.cluster import connect
    from lopt.distributed.wire import to_host
    from lopt.meta_train.trainer import MetaTrainer

    trainer = MetaTrainer.from_config(_config())
    payload = to_host(trainer.learned.init(jax.random.key(0)))
    connect("auto", num_cpus=2)
    import ray

    actor = ray.remote(num_cpus=1)(_Echo).remote()
    ray.get(actor.echo.remote(payload))
    lat = []
    for _ in range(200):
        t0 = time.perf_counter()
        ray.get(actor.echo.remote(payload))
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ray.get([actor.echo.remote(payload) for _ in range(500)])
    per_call = (time.perf_counter() - t0) / 500
    ray.shutdown()
    return {
        "latency_s": statistics.median(lat),
        "per_call_s": per_call,
        "payload_floats": int(sum(np.size(x) for x in jax.tree.leaves(payload))),
    }


def _child(role: str, steps: int, cores: str | None, extra: list[str]) -> dict:
    """Run a measurement in a fresh process (optionally under `taskset -c cores`), return its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            __file__,
            "--role",
            role,
            "--steps",
            str(steps),
            "--result",
            str(result),
            *extra,
        ]
        if cores is not None:
            cmd = ["taskset", "-c", cores, *cmd]
        subprocess.run(cmd, check=True)
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=25, help="outer steps per measurement (5 are warm-up)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--role", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cores", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        import jax  # compiled programs persist (as `lopt meta-train` does): only the first run compiles

        if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/lopt/jax"))
        if args.role == "single":
            got = single(args.steps)
        elif args.role == "rpc":
            got = rpc(args.steps)
        else:
            cores = [int(c) for c in args.cores.split(",")] if args.cores else None
            with tempfile.TemporaryDirectory() as out:
                got = distributed(args.steps, args.workers, cores, out)
        Path(args.result).write_text(json.dumps(got))
        return

    ncpu = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    print(
        f"cores available: {ncpu}; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True
    )
    one = _child("single", args.steps, None, [])
    print(f"groups: {', '.join(one['groups'])}")
    print(f"single process, all cores: {one['steps_per_s']:.3f} outer steps/s", flush=True)
    ray1 = _child("ray", args.steps, None, ["--workers", "1"])
    print(f"1 Ray worker, all cores: {ray1['steps_per_s']:.3f} outer steps/s", flush=True)
    pinned = _child("single", args.steps, "0", [])
    print(f"single process, core 0: {pinned['steps_per_s']:.3f} outer steps/s", flush=True)
    ray2 = _child("ray", args.steps, None, ["--workers", "2", "--cores", "0,1"])
    print(f"2 Ray workers, cores 0 and 1: {ray2['steps_per_s']:.3f} outer steps/s", flush=True)
    msg = _child("rpc", args.steps, None, [])
    r1 = ray1["steps_per_s"] / one["steps_per_s"]
    r2 = ray2["steps_per_s"] / pinned["steps_per_s"]
    rows = [
        ("single process, all cores", one["steps_per_s"], "", ""),
        (
            "1 Ray worker, all cores",
            ray1["steps_per_s"],
            f"{r1:.3f}",
            "ratio >= 0.90: " + ("met" if r1 >= 0.9 else "MISSED"),
        ),
        ("single process, core 0", pinned["steps_per_s"], "", ""),
        (
            "2 Ray workers, cores 0 and 1",
            ray2["steps_per_s"],
            f"{r2:.3f}",
            "ratio >= 1.7: " + ("met" if r2 >= 1.7 else "MISSED"),
        ),
    ]
    print(f"{'run':<32}{'outer steps/s':>14}{'ratio':>8}  target")
    for name, rate, ratio, target in rows:
        print(f"{name:<32}{rate:>14.2f}{ratio:>8}  {target}")
    model = {
        "estimate_s_per_group_1core": ray2["worker_seconds"],
        "update_s": one["update_s"],
        "estimate_bytes": one["estimate_bytes"],
        "theta_bytes": one["theta_bytes"],
        "ray_latency_s": msg["latency_s"],
        "ray_per_call_s": msg["per_call_s"],
    }
    print("scaling-model inputs: " + ", ".join(f"{k}={v:.6g}" for k, v in model.items()))
    from lopt.distributed.scaling import ScalingInputs, learner_bound, step_seconds, throughput

    x = ScalingInputs(ray2["worker_seconds"], one["update_s"], msg["per_call_s"], msg["latency_s"])
    print(
        f"model check: 2 workers x 1 group, T = {step_seconds(x, 2):.4f} s predicted, "
        f"{1 / ray2['steps_per_s']:.4f} s measured; one process on one core (2 groups, no messages): "
        f"{2 * x.estimate_s + x.update_s:.4f} s predicted, {1 / pinned['steps_per_s']:.4f} s measured"
    )
    print(
        f"{'workers':>8}{'groups/worker':>15}{'staleness':>11}{'step s':>10}{'group estimates/s':>19}{'efficiency':>12}"
    )
    for g in (1, 4):
        for n in (1, 2, 10, 100, 1000):
            for st in (0, 1):
                eff = throughput(x, n, g, st) / (n * throughput(x, 1, g, st))
                print(
                    f"{n:>8}{g:>15}{st:>11}{step_seconds(x, n, g, st):>10.4f}{throughput(x, n, g, st):>19.1f}{eff:>12.2f}"
                )
        print(f"learner bound N* (g = {g}): {learner_bound(x, g):.0f} workers")
    model["predicted"] = {
        f"{n}x{g}s{st}": throughput(x, n, g, st)
        for g in (1, 4)
        for n in (1, 2, 10, 100, 1000)
        for st in (0, 1)
    }
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "single": one,
                    "ray1": ray1,
                    "pinned": pinned,
                    "ray2": ray2,
                    "rpc": msg,
                    "ratio_1": r1,
                    "ratio_2": r2,
                    "model": model,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
