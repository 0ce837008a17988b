"""Distributed meta-training throughput (lopt.distributed), ratios side by side in one run.

    python benchmarks/distributed.py                  # both cores idle: wrap with tools that pause other jobs
    python benchmarks/distributed.py --steps 40 --json out.json
    python benchmarks/distributed.py --configs mlp_digits   # one config only

Measured on each config (`CONFIGS`; staleness 0, PES, the mlp optimizer):

- ``quadratic``: two task groups of equal cost, 1000- and 1001-d quadratics, 4 particles each,
  K = 20: tiny, and memory-bound (each particle streams its 4 MB rotation three times a step);
- ``mlp_digits``: two task groups of the train_nn suite's MLP family, 256-256 MLPs on digits
  (relu and tanh, batch 128), 8 particles each (the default P), K = 20: compute-bound, ~0.8 s per
  group's estimate on one core;
- ``mlp_digits4``: the same with four groups (elu, gelu, tanh, relu), two per worker in the
  two-worker run: the groups' unequal costs (tanh's exp against relu's max) even out in each
  worker's sum, as they do in a real run with more groups than workers;

1. single process (all cores) vs one Ray worker (all cores; the learner in this process):
   outer steps/s, target ratio >= 0.90;
2. one process pinned to core 0 vs two Ray workers pinned to cores 0 and 1 (half the groups each;
   the learner unpinned): outer steps/s, target ratio >= 1.7;

and the inputs of the scaling model (docs/scaling.md): each group's estimate alone in the pinned
process (t_e, no messages, nothing else of the run on the core), the learner's update time, the
bytes of an estimate message and of theta, Ray's latency and cost per call. Each throughput is the
median of per-step rates over the steps after a warm-up (compilation excluded). Each run also
reports its CPU share, CPU seconds over wall seconds per step (for the Ray runs: of the estimate
the update waited for): a pinned run on an idle core has 1.00; less means other processes shared
the core, and that run's figure is not an idle-machine figure. The load average is printed
before and after every run.
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

_COMMON = {
    "validate_every": 0,
    "loss_reference": "zero",
    "ckpt_every": 0,
    "ckpt_minutes": 0.0,
    "log_every": 1000,
    "seed": 0,
}
CONFIGS = {
    # two task groups of equal cost (1000- and 1001-d quadratics), quick to compile
    "quadratic": {
        "family": "quadratic",
        "space": '{"dims": [1000, 1001]}',
        "num_groups": 2,
        "num_particles": 4,
        "truncation_length": 20,
        "horizon": (200, 1000),
        **_COMMON,
    },
    # two train_nn groups of equal cost (seed 0 draws relu and tanh): real data, the default P
    "mlp_digits": {
        "family": "mlp",
        "space": '{"datasets": ["digits"], "depths": [2], "widths": [256], "batch_sizes": [128], '
        '"activations": ["tanh", "relu"]}',
        "num_groups": 2,
        "num_particles": 8,
        "truncation_length": 20,
        "horizon": (200, 2000),
        **_COMMON,
    },
    # four train_nn groups (seed 1 draws elu, gelu, tanh, relu), two per worker: how a real run, with
    # more groups than workers, lets the cost-balanced assignment even out the groups' unequal costs
    "mlp_digits4": {
        "family": "mlp",
        "space": '{"datasets": ["digits"], "depths": [2], "widths": [256], "batch_sizes": [128], '
        '"activations": ["tanh", "relu", "elu", "gelu"]}',
        "num_groups": 4,
        "num_particles": 8,
        "truncation_length": 20,
        "horizon": (200, 2000),
        **_COMMON,
        "seed": 1,
    },
}
CONFIG = CONFIGS["quadratic"]
WARMUP = 5
PER_GROUP_CALLS = 8  # estimates of each group alone in the pinned process (2 of them warm-up)


def _config(name: str = "quadratic", **kw):
    from lopt.config import MetaTrainConfig

    return MetaTrainConfig(**{**CONFIGS[name], **kw})


def _rates(times: list[float]) -> float:
    """Median outer steps/s over consecutive step times (the first WARMUP steps left out)."""
    gaps = [b - a for a, b in zip(times[WARMUP:], times[WARMUP + 1 :])]
    return 1.0 / statistics.median(gaps)


def single(steps: int, name: str, per_group: bool) -> dict:
    """This process: the plain jitted outer step, ``steps`` times; steps/s, CPU share and the update
    cost; with ``per_group`` also each group's estimate alone (t_e of the scaling model)."""
    import jax

    from lopt.distributed.core import WorkerProgram, group_keys
    from lopt.meta_train.trainer import MetaTrainer

    trainer = MetaTrainer.from_config(_config(name, num_steps=steps))
    state, data = trainer.init(jax.random.key(CONFIGS[name]["seed"])), trainer.data()
    times, cpus = [], []
    for _ in range(steps):
        state, metrics = trainer.step(state, data, trainer.hparams)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter())
        cpus.append(time.process_time())
    got = {
        "steps_per_s": _rates(times),
        "cpu_share": _share(times, cpus),
        "groups": trainer.describe(),
        **_update_and_sizes(trainer, state),
    }
    if per_group:  # each group alone, from where the run left it: no messages, no other group
        num = len(trainer.estimators)
        got["estimate_s"] = []
        for g in range(num):
            program, states, t = WorkerProgram(trainer, (g,)), (state.estimator_states[g],), []
            for i in range(PER_GROUP_CALLS):
                keys = group_keys(jax.random.fold_in(state.key, i), num)[[g]]
                t0 = time.perf_counter()
                # returns host arrays, so the call is synchronous
                grads, states, group_metrics = program.estimate(keys, state.theta, states)
                t.append(time.perf_counter() - t0)
            got["estimate_s"].append(statistics.median(t[2:]))
    return got


def _share(times: list[float], cpus: list[float]) -> float:
    """Median CPU seconds per wall second over the steps after the warm-up."""
    pairs = zip(times[WARMUP:], times[WARMUP + 1 :], cpus[WARMUP:], cpus[WARMUP + 1 :])
    return statistics.median((c1 - c0) / (t1 - t0) for t0, t1, c0, c1 in pairs)


def _update_and_sizes(trainer, state) -> dict:
    """The learner's update alone (median of 50), and the sizes of an estimate message and of theta."""
    import jax

    from lopt.distributed.core import LearnerProgram, WorkerProgram, group_keys
    from lopt.distributed.wire import to_host

    worker = WorkerProgram(trainer, tuple(range(len(trainer.estimators))))
    grads, _, group_metrics = worker.estimate(
        group_keys(state.key, len(trainer.estimators)), state.theta, state.estimator_states
    )
    learner, lstate = LearnerProgram(trainer), state._replace(estimator_states=())
    jax.block_until_ready(learner.update(lstate, grads, group_metrics))
    t = []
    for _ in range(50):
        t0 = time.perf_counter()
        jax.block_until_ready(learner.update(lstate, grads, group_metrics))
        t.append(time.perf_counter() - t0)
    return {
        "update_s": statistics.median(t),
        "estimate_bytes": len(pickle.dumps((grads[0], group_metrics[0]))),
        "theta_bytes": len(pickle.dumps(to_host(state.theta))),
    }


def distributed(steps: int, name: str, workers: int, cores: list[int] | None, out: str) -> dict:
    """A Ray run (local cluster started here) of ``steps`` outer steps."""
    from rich.console import Console

    from lopt.distributed.learner import meta_train_distributed

    times = []

    def mark(step, pool):
        times.append(time.perf_counter())

    cfg = _config(name, num_steps=steps, ray="auto", workers=workers, out=out)
    meta_train_distributed(cfg, progress=False, cores=cores, on_step=mark, console=Console(quiet=True))
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows[WARMUP:] if "dist/worker_seconds" in r]
    return {
        "steps_per_s": _rates(times),
        "worker_seconds": statistics.median(r["dist/worker_seconds"] for r in rows),
        "worker_cpu_seconds": statistics.median(r["dist/worker_cpu_seconds"] for r in rows),
        "cpu_share": statistics.median(r["dist/worker_cpu_seconds"] / r["dist/worker_seconds"] for r in rows),
    }


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

    trainer = MetaTrainer.from_config(_config("quadratic"))
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
    """Run a measurement in a fresh process (optionally under `taskset -c cores`), return its JSON
    with the load average (1, 5, 15 min) before and after it."""
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
        before = os.getloadavg()
        subprocess.run(cmd, check=True)
        return {**json.loads(result.read_text()), "load": [before, os.getloadavg()]}


def _load(load: list) -> str:
    return " -> ".join(" ".join(f"{x:.2f}" for x in triple) for triple in load)


RUNS = (  # (key, label, role, taskset cores, extra arguments)
    ("single", "single process, all cores", "single", None, []),
    ("ray1", "1 Ray worker, all cores", "ray", None, ["--workers", "1"]),
    ("pinned", "single process, core 0", "single", "0", ["--per-group"]),
    ("ray2", "2 Ray workers, cores 0 and 1", "ray", None, ["--workers", "2", "--cores", "0,1"]),
)


def measure(name: str, steps: int) -> dict:
    """The four runs of config ``name``, each in a fresh process, one line each as it finishes."""
    got = {}
    print(f"\n## config {name}", flush=True)
    for key, label, role, cores, extra in RUNS:
        got[key] = _child(role, steps, cores, ["--config", name, *extra])
        if key == "single":
            print(f"groups: {', '.join(got[key]['groups'])}")
        r = got[key]
        print(
            f"{label}: {r['steps_per_s']:.3f} outer steps/s, CPU share {r['cpu_share']:.2f}; "
            f"load average {_load(r['load'])}",
            flush=True,
        )
    got["ratio_1"] = got["ray1"]["steps_per_s"] / got["single"]["steps_per_s"]
    got["ratio_2"] = got["ray2"]["steps_per_s"] / got["pinned"]["steps_per_s"]
    return got


def report(got: dict, msg: dict) -> dict:
    """The ratio table, the scaling model's inputs, its check against the runs, its predictions."""
    from lopt.distributed.pool import assign_groups
    from lopt.distributed.scaling import ScalingInputs, learner_bound, step_seconds, throughput

    r1, r2 = got["ratio_1"], got["ratio_2"]
    rows = [
        ("single process, all cores", got["single"], "", ""),
        (
            "1 Ray worker, all cores",
            got["ray1"],
            f"{r1:.3f}",
            "ratio >= 0.90: " + ("met" if r1 >= 0.9 else "MISSED"),
        ),
        ("single process, core 0", got["pinned"], "", ""),
        (
            "2 Ray workers, cores 0 and 1",
            got["ray2"],
            f"{r2:.3f}",
            "ratio >= 1.7: " + ("met" if r2 >= 1.7 else "MISSED"),
        ),
    ]
    print(f"{'run':<32}{'outer steps/s':>14}{'CPU share':>10}{'ratio':>8}  target")
    for label, r, ratio, target in rows:
        print(f"{label:<32}{r['steps_per_s']:>14.2f}{r['cpu_share']:>10.2f}{ratio:>8}  {target}")
    t_e = got["pinned"]["estimate_s"]
    model = {
        "estimate_s_per_group_1core": max(t_e),
        "estimate_s_groups_1core": t_e,
        "workers_estimate_s": got["ray2"]["worker_seconds"],
        "workers_estimate_cpu_s": got["ray2"]["worker_cpu_seconds"],
        "update_s": got["single"]["update_s"],
        "estimate_bytes": got["single"]["estimate_bytes"],
        "theta_bytes": got["single"]["theta_bytes"],
        "ray_latency_s": msg["latency_s"],
        "ray_per_call_s": msg["per_call_s"],
    }
    print(
        "scaling-model inputs: "
        + ", ".join(f"{k}={v:.6g}" for k, v in model.items() if not isinstance(v, list))
        + ", t_e of each group alone on core 0: "
        + ", ".join(f"{x:.4f}" for x in t_e)
    )
    # the two-worker run's groups (equal inner steps: the assignment the learner makes), its slower worker
    owned = assign_groups([1.0] * len(t_e), 2)
    g = max(len(o) for o in owned)
    x = ScalingInputs(
        max(sum(t_e[i] for i in o) for o in owned) / g,
        got["single"]["update_s"],
        msg["per_call_s"],
        msg["latency_s"],
    )
    print(
        f"model check: 2 workers x {g} group(s), T = {step_seconds(x, 2, g):.4f} s predicted, "
        f"{1 / got['ray2']['steps_per_s']:.4f} s measured (the estimate it waited for: "
        f"{got['ray2']['worker_seconds']:.4f} s wall, {got['ray2']['worker_cpu_seconds']:.4f} s CPU); "
        f"one process on one core (sum of the groups' t_e + t_u, no messages): "
        f"{sum(t_e) + x.update_s:.4f} s predicted, {1 / got['pinned']['steps_per_s']:.4f} s measured"
    )
    _predictions(x, model, throughput, step_seconds, learner_bound)
    return model


def _predictions(x, model: dict, throughput, step_seconds, learner_bound) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=25, help="outer steps per measurement (5 are warm-up)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, of {', '.join(CONFIGS)} (default: all)",
    )
    parser.add_argument("--role", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="quadratic", help=argparse.SUPPRESS)
    parser.add_argument("--per-group", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cores", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        _role(args)
        return
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {list(CONFIGS)}")
    load = os.getloadavg()
    print(
        f"cores available: {len(os.sched_getaffinity(0))}; load average before: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    msg = _child("rpc", args.steps, None, [])
    print(
        f"Ray: round trip {msg['latency_s'] * 1e3:.2f} ms, {msg['per_call_s'] * 1e3:.2f} ms a pipelined call"
    )
    out = {"rpc": msg, "configs": {}}
    for name in names:
        got = measure(name, args.steps)
        got["model"] = report(got, msg)
        out["configs"][name] = got
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def _role(args) -> None:
    """A measurement in this (child) process; its result written to ``args.result``."""
    import jax  # compiled programs persist (as `lopt meta-train` does): only the first run compiles

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/lopt/jax"))
    if args.role == "single":
        got = single(args.steps, args.config, args.per_group)
    elif args.role == "rpc":
        got = rpc(args.steps)
    else:
        cores = [int(c) for c in args.cores.split(",")] if args.cores else None
        with tempfile.TemporaryDirectory() as out:
            got = distributed(args.steps, args.config, args.workers, cores, out)
    Path(args.result).write_text(json.dumps(got))


if __name__ == "__main__":
    main()
