"""Step cost of every learned optimizer against `optax.adam` on the same parameters, side by side.

For each parameter set (one flat tensor of 1e5, 1e6, 1e7 floats; a 3-layer MLP; a small CNN) and
each optimizer: one jitted step (``update`` + ``optax.apply_updates``, params and state donated,
as a training loop runs it), its compile time, and the median over interleaved rounds of the
step time. The ratio is against Adam measured in the same rounds. XLA's cost analysis gives
FLOPs and bytes accessed per parameter; dividing the achieved rates by this machine's measured
float32 matmul rate and streaming bandwidth says how close each step is to the hardware.

Run: .venv/bin/python benchmarks/step_cost.py [--rounds 15] [--sizes 1e5 1e6 1e7] [--only mlp ...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rich.console import Console
from rich.table import Table

from lopt.optimizers.learned import LEARNED


def matmul_flops_per_second(n: int = 1024, repeats: int = 20) -> float:
    """Best float32 FLOP/s of an (n, n) @ (n, n) matmul on this machine."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, a))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, a))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def stream_bytes_per_second(n: int = 10**7, repeats: int = 20) -> float:
    """Best bytes/s of y ← 2x + y over n float32 (3 arrays touched: read x, y; write y, donated)."""
    f = jax.jit(lambda x, y: 2.0 * x + y, donate_argnums=1)
    x = jnp.ones((n,), jnp.float32)
    y = f(x, jnp.zeros((n,), jnp.float32))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = jax.block_until_ready(f(x, y))
        times.append(time.perf_counter() - t0)
    return 12 * n / min(times)


def flat(n: int) -> dict[str, jax.Array]:
    return {"w": jax.random.normal(jax.random.key(1), (n,), jnp.float32)}


def mlp3() -> dict[str, jax.Array]:
    """A 3-layer MLP, 784-512-512-10: 669,706 floats in 6 tensors."""
    sizes = [(784, 512), (512, 512), (512, 10)]
    keys = jax.random.split(jax.random.key(2), len(sizes))
    tree = {}
    for i, ((a, b), k) in enumerate(zip(sizes, keys)):
        tree[f"w{i}"] = jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a)
        tree[f"b{i}"] = jnp.zeros((b,), jnp.float32)
    return tree


def cnn() -> dict[str, Any]:
    """A small CNN: 3 conv layers (32, 64, 128 channels, 3x3) and 2 dense (2048-256-10); 620,362 floats."""
    shapes = {
        "conv0": {"w": (3, 3, 3, 32), "b": (32,)},
        "conv1": {"w": (3, 3, 32, 64), "b": (64,)},
        "conv2": {"w": (3, 3, 64, 128), "b": (128,)},
        "dense0": {"w": (2048, 256), "b": (256,)},
        "dense1": {"w": (256, 10), "b": (10,)},
    }
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(jax.random.key(3), len(leaves))
    return jax.tree.unflatten(
        treedef, [0.05 * jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, leaves)]
    )


def make_step(opt: optax.GradientTransformationExtraArgs) -> Callable:
    """A jitted optimizer step with params and state donated; the loss is passed as learned ones want."""

    def step(params, state, grads, loss):
        updates, state = opt.update(grads, state, params, loss=loss)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def copy(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def measure(opts: dict[str, optax.GradientTransformationExtraArgs], params: Any, rounds: int, calls: int):
    """{name: (median step s, compile s, flops, bytes)}; optimizers interleaved within every round."""
    grads = jax.tree.map(lambda p: 0.01 * jax.random.normal(jax.random.key(4), p.shape, p.dtype), params)
    loss = jnp.float32(1.0)
    runs, info = {}, {}
    for name, opt in opts.items():
        step = make_step(opt)
        p, s = copy(params), opt.init(params)
        t0 = time.perf_counter()
        compiled = step.lower(p, s, grads, loss).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        p, s = jax.block_until_ready(compiled(p, s, grads, loss))  # warm up
        runs[name] = [compiled, p, s, []]
        info[name] = (compile_s, float(cost.get("flops", np.nan)), float(cost.get("bytes accessed", np.nan)))
    for _ in range(rounds):
        for run in runs.values():
            compiled, p, s, times = run
            for _ in range(calls):
                t0 = time.perf_counter()
                p, s = jax.block_until_ready(compiled(p, s, grads, loss))
                times.append(time.perf_counter() - t0)
            run[1], run[2] = p, s
    return {name: (float(np.median(run[3])), *info[name]) for name, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median over all calls)")
    parser.add_argument("--calls", type=int, default=5, help="calls per optimizer per round")
    parser.add_argument("--sizes", type=float, nargs="*", default=[1e5, 1e6, 1e7], help="flat tensor sizes")
    parser.add_argument("--only", nargs="*", default=list(LEARNED), help="learned optimizers to measure")
    parser.add_argument("--no-trees", action="store_true", help="skip the MLP and CNN parameter trees")
    args = parser.parse_args()
    peak, bandwidth = matmul_flops_per_second(), stream_bytes_per_second()
    cases = [(f"flat {n:.0e}", flat(int(n))) for n in args.sizes]
    if not args.no_trees:
        cases += [("mlp 784-512-512-10", mlp3()), ("cnn 3conv+2dense", cnn())]
    console = Console(width=180)
    title = (
        f"Optimizer step cost vs optax.adam, {jax.devices()[0].device_kind}; "
        f"matmul {peak / 1e9:.1f} GFLOP/s, stream {bandwidth / 1e9:.1f} GB/s"
    )
    table = Table(title=title)
    for col in (
        "params",
        "optimizer",
        "ms/step",
        "x adam",
        "compile s",
        "FLOP/param",
        "bytes/param",
        "GFLOP/s",
        "of matmul",
        "GB/s",
        "of stream",
    ):
        table.add_column(col, justify="left" if col in ("params", "optimizer") else "right")
    for label, params in cases:
        n = sum(x.size for x in jax.tree.leaves(params))
        opts = {"adam": optax.adam(1e-3)}
        for name in args.only:
            learned = LEARNED[name]()
            opts[name] = learned.transform(learned.init(jax.random.key(0)), num_steps=1000)
        results = measure(opts, params, args.rounds, args.calls)
        adam_s = results["adam"][0]
        for name, (sec, compile_s, flops, nbytes) in results.items():
            table.add_row(
                f"{label} ({n:,})",
                name,
                f"{sec * 1e3:.3f}",
                f"{sec / adam_s:.2f}",
                f"{compile_s:.2f}",
                f"{flops / n:.0f}",
                f"{nbytes / n:.0f}",
                f"{flops / sec / 1e9:.2f}",
                f"{flops / sec / peak:.1%}",
                f"{nbytes / sec / 1e9:.1f}",
                f"{nbytes / sec / bandwidth:.0%}",
            )
        table.add_section()
    console.print(table)


if __name__ == "__main__":
    main()
