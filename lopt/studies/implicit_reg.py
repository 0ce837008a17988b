r"""The implicit-regularization study: which minimum of a flat valley does an optimizer pick?

.. math::
    f(x, y) = \tfrac12 (x - y)^2, \qquad \nabla f = (d, -d), \quad d = x - y.

Every point of the valley x = y is a global minimum. An optimizer whose update is always along
(1, −1) conserves x + y, so it can only land at the orthogonal projection of its start onto the
valley, the minimum nearest to the start:

.. math::
    p^\star = \tfrac{x_0 + y_0}{2}\,(1, 1), \qquad \lVert p^\star \rVert = |x_0 + y_0| / \sqrt2.

SGD, momentum and Adam are all of this kind: SGD and momentum move along the gradient history,
and Adam's per-coordinate moments of y are those of x (m_y = −m_x, v_y = v_x), so u_y = −u_x
exactly. A learned optimizer also sees the parameters themselves (lopt's per-parameter features
include θ), so it may drift along the valley, e.g. toward the origin: a preference for
small-norm solutions that no term of the loss asks for.

    result = run_study(default_optimizers())     # trajectories, final points, norms, projection
    rows = summary_rows(result)                  # one row per optimizer, for tables
    figure("implicit_reg.png", result)

    python -m lopt.implicit_reg --out runs/implicit_reg

References: Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein 2020, "Tasks, stability,
architecture, and compute: Training more effective learned optimizers, and using them to train
themselves", arXiv:2009.11243, section on implicit regularization.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lopt.pretrained import pretrained

NUM_STEPS = 1000  # inner steps per trajectory; SGD and Adam below reach the valley in < 300
RADIUS = 2.5  # the starting points lie on a circle of this radius around the origin
NUM_STARTS = 8
SGD_LR = 0.1  # d_{t+1} = (1 − 2·lr) d_t = 0.8 d_t: |d| < 1e-7 after ~80 steps
ADAM_LR = 0.01  # |d| shrinks by ≈ 2·lr per step at first: ≤ 3.3 / 0.02 ≈ 170 steps to the valley
PRETRAINED = "mlp-small-v1"
_ROW = (
    "{optimizer:<16} {final_loss:>11.3g} {solution_norm:>14.4f} {projection_norm:>16.4f} {ratio:>7.4f}"
    " {valley_drift:>+13.4f} {starts_shrunk:>4}/{num_starts}"
)


def loss_fn(params: dict) -> jax.Array:
    """f(x, y) = ½ (x − y)² on ``params = {"xy": [x, y]}``."""
    x, y = params["xy"]
    return 0.5 * (x - y) ** 2


def default_starts(num: int = NUM_STARTS, radius: float = RADIUS) -> np.ndarray:
    """(num, 2) float32 points on a circle at angles π/num + 2πk/num: none on the valley x = y
    (angle π/4) nor on its normal x = −y (where the projection is the origin itself)."""
    a = np.pi / num + 2 * np.pi * np.arange(num) / num  # (S,)
    return (radius * np.stack([np.cos(a), np.sin(a)], -1)).astype(np.float32)  # (S, 2)


def default_optimizers(
    learned: str = PRETRAINED, num_steps: int = NUM_STEPS
) -> dict[str, optax.GradientTransformationExtraArgs]:
    """label -> optimizer: SGD (lr 0.1), Adam (lr 0.01, optax defaults otherwise) and the shipped
    learned optimizer ``learned`` (no learning rate: its step sizes are in its weights; a
    horizon-aware one is told the run's length ``num_steps``)."""
    return {
        f"sgd (lr {SGD_LR:g})": optax.sgd(SGD_LR),
        f"adam (lr {ADAM_LR:g})": optax.adam(ADAM_LR),
        learned: pretrained(learned, num_steps=num_steps),  # a v1 architecture ignores T
    }


def _trajectory(optimizer: optax.GradientTransformationExtraArgs, xy0: jax.Array, num_steps: int):
    """(T+1, 2): p_0 = xy0, then p_{t+1} = p_t + update(∇f(p_t), state_t, p_t, loss=f(p_t))."""
    params = {"xy": xy0}

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params, loss=loss)
        params = optax.apply_updates(params, updates)
        return (params, state), params["xy"]

    _, xys = jax.lax.scan(step, (params, optimizer.init(params)), None, length=num_steps)  # (T, 2)
    return jnp.concatenate([xy0[None], xys])  # (T+1, 2)


@functools.partial(jax.jit, static_argnames=("optimizer", "num_steps"))
def _trajectories(optimizer, starts, num_steps):
    return jax.vmap(lambda xy0: _trajectory(optimizer, xy0, num_steps))(starts)


def trajectories(optimizer: optax.GradientTransformation, starts, num_steps: int = NUM_STEPS) -> jax.Array:
    """(S, T+1, 2) float32: the path of ``optimizer`` from each of the (S, 2) ``starts`` (scan over
    steps, vmap over starts, jitted once per optimizer object). Plain optax optimizers are wrapped
    with `optax.with_extra_args_support`, so every one receives ``loss=``."""
    optimizer = optax.with_extra_args_support(optimizer)
    return _trajectories(optimizer, jnp.asarray(starts, jnp.float32), num_steps)


def projection(starts) -> np.ndarray:
    """(S, 2): the closed-form end point ((x0 + y0)/2)(1, 1) of any update along (1, −1)."""
    s = np.asarray(starts, np.float64)
    return np.repeat(s.mean(-1, keepdims=True), 2, axis=-1)


def run_study(optimizers, num_steps: int = NUM_STEPS, starts=None) -> dict:
    """Run every optimizer from every start. Returns ``{"num_steps", "starts": (S, 2), "projection":
    (S, 2), "projection_norm": (S,), "runs": label -> {"trajectories": (S, T+1, 2), "final": (S, 2),
    "initial_loss": (S,), "final_loss": (S,), "norm": (S,), "mean_norm": float, "drift": (S,)}}`` (numpy);
    ``drift`` = (x_T + y_T)/2 − (x0 + y0)/2 is 0 for any update along (1, −1)."""
    starts = default_starts() if starts is None else np.asarray(starts, np.float32)
    proj = projection(starts)
    runs = {}
    for label, opt in optimizers.items():
        traj = np.asarray(trajectories(opt, starts, num_steps))  # (S, T+1, 2)
        final = traj[:, -1].astype(np.float64)  # (S, 2)
        norm = np.linalg.norm(final, axis=-1)  # (S,)
        runs[label] = {
            "trajectories": traj,
            "final": final,
            "initial_loss": 0.5 * (starts[:, 0].astype(np.float64) - starts[:, 1]) ** 2,
            "final_loss": 0.5 * (final[:, 0] - final[:, 1]) ** 2,
            "norm": norm,
            "mean_norm": float(norm.mean()),
            "drift": final.mean(-1) - proj[:, 0],  # (S,) shift along the valley, in units of (1, 1)
        }
    return {
        "num_steps": num_steps,
        "starts": starts,
        "projection": proj,
        "projection_norm": np.abs(starts.sum(-1, dtype=np.float64)) / np.sqrt(2.0),
        "runs": runs,
    }


def summary_rows(result: dict) -> list[dict]:
    """One row per optimizer: mean final loss, mean solution norm ‖p_T‖, mean projection norm
    |x0 + y0|/√2 and their ratio (< 1: it lands closer to the origin than the projection), plus
    the mean drift along the valley and on how many starts ‖p_T‖ < ‖projection‖. A drift of one
    sign for every start is a bias along (1, 1), not a pull toward the origin."""
    proj = float(result["projection_norm"].mean())
    return [
        {
            "optimizer": label,
            "final_loss": float(run["final_loss"].mean()),
            "solution_norm": run["mean_norm"],
            "projection_norm": proj,
            "ratio": run["mean_norm"] / proj,
            "valley_drift": float(run["drift"].mean()),
            "starts_shrunk": int((run["norm"] < result["projection_norm"] - 1e-6).sum()),
            "num_starts": len(run["norm"]),
        }
        for label, run in result["runs"].items()
    ]


def figure(path: str, result: dict) -> None:
    """One panel per optimizer: its trajectory from each start (circle: start, dot: end), the valley
    x = y (dashed), the projections of the starts onto it (crosses) and the origin (+)."""
    runs = result["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 4.1), squeeze=False)
    lim = 1.15 * float(np.abs(result["starts"]).max())
    for ax, (label, run) in zip(axes.flat, runs.items()):
        ax.plot([-lim, lim], [-lim, lim], "--", color="gray", lw=0.8, label="valley x = y")
        ax.plot(*result["projection"].T, "x", color="gray", ms=5, label="projection of start")
        for i, traj in enumerate(run["trajectories"]):
            color = f"C{i % 10}"
            ax.plot(traj[:, 0], traj[:, 1], "-", color=color, lw=1)
            ax.plot(*traj[0], "o", color=color, ms=4, mfc="none")
            ax.plot(*traj[-1], ".", color=color, ms=6)
        ax.plot(0.0, 0.0, "k+", ms=9, label="origin")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="x", ylabel="y")
        ratio = run["mean_norm"] / result["projection_norm"].mean()
        ax.set_title(f"{label}: mean ‖p_T‖ / ‖projection‖ = {ratio:.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(f"f(x, y) = ½(x − y)², {result['num_steps']} steps", fontsize=9)
    fig.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(out_dir: str, num_steps: int = NUM_STEPS, learned: str = PRETRAINED) -> dict:
    """Run the default study; write ``implicit_reg.png`` and ``implicit_reg.json`` (the summary rows,
    the starts, their projections and every optimizer's final points) to ``out_dir``; print the
    table and return the JSON content."""
    result = run_study(default_optimizers(learned, num_steps), num_steps)
    os.makedirs(out_dir, exist_ok=True)
    figure(os.path.join(out_dir, "implicit_reg.png"), result)
    summary = {
        "num_steps": result["num_steps"],
        "starts": result["starts"].tolist(),
        "projection": result["projection"].tolist(),
        "rows": summary_rows(result),
        "final_points": {label: run["final"].tolist() for label, run in result["runs"].items()},
    }
    with open(os.path.join(out_dir, "implicit_reg.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    head = ("optimizer", "final loss", "solution norm", "projection norm", "ratio", "valley drift", "shrunk")
    print("{:<16} {:>11} {:>14} {:>16} {:>7} {:>13} {:>6}".format(*head))
    for r in summary["rows"]:
        print(_ROW.format(**r))
    return summary


@dataclasses.dataclass(frozen=True)
class Config:
    """Where optimizers end in the valley of ½(x − y)² from the same starting points."""

    out: str = "runs/implicit_reg"  # output directory
    steps: int = NUM_STEPS  # steps per trajectory
    pretrained: str = PRETRAINED  # shipped learned optimizer (lopt.PRETRAINED)


def run(cfg: Config) -> dict:
    """`main` with the config's values."""
    return main(cfg.out, cfg.steps, cfg.pretrained)
