"""Step time of lopt's learned optimizers in torch against `torch.optim.AdamW`, side by side.

For each parameter set (one flat tensor of 1e5, 1e6, 1e7 floats; an MLP 784-512-512-10, the
shapes of benchmarks/step_cost.py) and each optimizer: ``step()`` on fixed gradients, interleaved
rounds, the median over rounds of the mean over ``--calls`` calls. Ratios are against three AdamW
steps measured in the same rounds, side by side: ``fused=True``, ``foreach=True``, and
the default ``torch.optim.AdamW(params, lr)`` (on CPU in torch 2.13 neither: the for-loop). The
learned optimizers are the shipped ones and every architecture of `lopt.LEARNED` at its initial
theta (the step cost does not depend on theta), each with compiled kernels (the default,
``compile=True``) and eager (``compile=False``, rows marked "eager"; ``adam_lr`` and ``sgdm`` have
no compiled kernels and run eagerly either way). "first step" is the wall time
of the first ``step()``, which for compiled rows includes compiling the kernels for that size class
(inductor's on-disk cache makes it shorter in later processes).

Run: .venv/bin/python benchmarks/torch_step.py [--rounds 9] [--sizes 1e5 1e6 1e7] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

import lopt
import lopt.torch
from lopt.optimizers.learned.registry import LEARNED
from lopt.torch.kernels import ARCHITECTURES

NUM_STEPS = 10_000  # T for the horizon-aware architectures (the cost does not depend on it)


def flat(n: int) -> list[torch.Tensor]:
    return [torch.randn(n, generator=torch.Generator().manual_seed(1)).requires_grad_()]


def mlp3() -> list[torch.Tensor]:
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )
    return list(model.parameters())


BASELINES = ("AdamW fused", "AdamW foreach", "AdamW default")


def optimizers() -> dict[str, Callable[[list], torch.optim.Optimizer]]:
    opts: dict[str, Callable] = {
        "AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
        "AdamW foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
        "AdamW default": lambda ps: torch.optim.AdamW(ps, lr=1e-3),
    }
    for compile in (True, False):
        tag = "" if compile else " eager"
        for name in sorted(lopt.PRETRAINED):
            opts[name + tag] = lambda ps, name=name, c=compile: lopt.torch.LearnedOptimizer(
                ps, name=name, num_steps=NUM_STEPS, compile=c
            )
        for arch in LEARNED if compile else [a for a in LEARNED if a in ARCHITECTURES]:
            opts[f"{arch} (init){tag}"] = lambda ps, arch=arch, c=compile: lopt.torch.LearnedOptimizer(
                ps, architecture=arch, num_steps=NUM_STEPS, compile=c
            )
    return opts


def measure(
    params_fn: Callable[[], list], names: list[str], rounds: int, calls: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(median over interleaved rounds of the mean step time (s), first step's wall time (s)) per optimizer."""
    runs, first = {}, {}
    for name in names:
        params = params_fn()
        for p in params:
            p.grad = torch.randn_like(p) * 1e-2
        try:
            opt = optimizers()[name](params)
            for i in range(3):  # the first step (compilation, lazy state), then warm-up (allocator)
                t0 = time.perf_counter()
                opt.step(loss=1.0) if isinstance(opt, lopt.torch.LearnedOptimizer) else opt.step()
                if i == 0:
                    first[name] = time.perf_counter() - t0
        except (RuntimeError, ValueError) as err:  # e.g. fused AdamW unavailable on this device
            print(f"  {name}: not available ({err})")
            continue
        runs[name] = opt
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, opt in runs.items():
            learned = isinstance(opt, lopt.torch.LearnedOptimizer)
            t0 = time.perf_counter()
            for _ in range(calls):
                opt.step(loss=1.0) if learned else opt.step()
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median over rounds)")
    parser.add_argument("--calls", type=int, default=5, help="steps per optimizer per round")
    parser.add_argument("--sizes", type=float, nargs="*", default=[1e5, 1e6, 1e7], help="flat tensor sizes")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="optimizers to measure (the three AdamW always)"
    )
    parser.add_argument("--no-model", action="store_true", help="skip the MLP parameter set")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = (
        list(optimizers())
        if args.only is None
        else [*BASELINES, *[n for n in args.only if n not in BASELINES]]
    )
    sets: list[tuple[str, Callable]] = [
        (f"flat {s:.0e} ({int(s):,})", lambda s=s: flat(int(s))) for s in args.sizes
    ]
    if not args.no_model:
        sets.append((f"mlp 784-512-512-10 ({sum(p.numel() for p in mlp3()):,})", mlp3))
    load_start = os.getloadavg()[0]
    table = Table(
        title=f"torch step time vs AdamW, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for col in ("params", "optimizer", "ms/step", "x fused", "x foreach", "x default", "first step"):
        table.add_column(col, justify="left" if col in ("params", "optimizer") else "right")
    for label, params_fn in sets:
        print(f"measuring {label} ...", flush=True)
        result, first = measure(params_fn, names, args.rounds, args.calls)
        for name, t in result.items():
            ratios = [f"{t / result[b]:.2f}" if b in result else "-" for b in BASELINES]
            table.add_row(label, name, f"{t * 1e3:.3f}", *ratios, f"{first[name]:.2f} s")
        table.add_section()
    Console(width=140).print(table)
    print(f"load average (1 min): {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
