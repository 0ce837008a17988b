"""Step time of lopt's learned optimizers in torch against `torch.optim.AdamW`, side by side.

For each parameter set (one flat tensor of 1e5, 1e6, 1e7 floats; an MLP 784-512-512-10, the
shapes of benchmarks/step_cost.py) and each optimizer: ``step()`` on fixed gradients, interleaved
rounds, the median over rounds of the mean over ``--calls`` calls. Ratios are against AdamW with
``foreach=True`` (torch's default on CPU tensors) measured in the same rounds; AdamW ``fused=True``
and the for-loop AdamW are listed too. The learned optimizers are the shipped ones and every
architecture of `lopt.LEARNED` at its initial theta (the step cost does not depend on theta).

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


def optimizers() -> dict[str, Callable[[list], torch.optim.Optimizer]]:
    opts: dict[str, Callable] = {
        "AdamW foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
        "AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
        "AdamW for-loop": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=False),
    }
    for name in sorted(lopt.PRETRAINED):
        opts[name] = lambda ps, name=name: lopt.torch.LearnedOptimizer(ps, name=name, num_steps=NUM_STEPS)
    for arch in LEARNED:
        opts[f"{arch} (init)"] = lambda ps, arch=arch: lopt.torch.LearnedOptimizer(
            ps, architecture=arch, num_steps=NUM_STEPS
        )
    return opts


def measure(params_fn: Callable[[], list], names: list[str], rounds: int, calls: int) -> dict[str, float]:
    """Median over interleaved rounds of the mean step time (s) of each optimizer."""
    runs = {}
    for name in names:
        params = params_fn()
        for p in params:
            p.grad = torch.randn_like(p) * 1e-2
        try:
            opt = optimizers()[name](params)
            for _ in range(2):  # warm-up (lazy state, allocator)
                opt.step(loss=1.0) if isinstance(opt, lopt.torch.LearnedOptimizer) else opt.step()
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
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median over rounds)")
    parser.add_argument("--calls", type=int, default=5, help="steps per optimizer per round")
    parser.add_argument("--sizes", type=float, nargs="*", default=[1e5, 1e6, 1e7], help="flat tensor sizes")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="optimizers to measure (AdamW foreach always)"
    )
    parser.add_argument("--no-model", action="store_true", help="skip the MLP parameter set")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = (
        list(optimizers())
        if args.only is None
        else ["AdamW foreach", *[n for n in args.only if n != "AdamW foreach"]]
    )
    sets: list[tuple[str, Callable]] = [
        (f"flat {s:.0e} ({int(s):,})", lambda s=s: flat(int(s))) for s in args.sizes
    ]
    if not args.no_model:
        sets.append((f"mlp 784-512-512-10 ({sum(p.numel() for p in mlp3()):,})", mlp3))
    load_start = os.getloadavg()[0]
    table = Table(
        title=f"torch step time vs AdamW(foreach), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for col in ("params", "optimizer", "ms/step", "x AdamW foreach"):
        table.add_column(col, justify="left" if col in ("params", "optimizer") else "right")
    for label, params_fn in sets:
        print(f"measuring {label} ...", flush=True)
        result = measure(params_fn, names, args.rounds, args.calls)
        base = result["AdamW foreach"]
        for name, t in result.items():
            table.add_row(label, name, f"{t * 1e3:.3f}", f"{t / base:.2f}")
        table.add_section()
    Console(width=140).print(table)
    print(f"load average (1 min): {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
