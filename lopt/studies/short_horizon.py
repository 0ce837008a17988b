r"""The short-horizon bias of online hyperparameter tuning (Wu, Ren, Liao, Grosse 2018), on the noisy
quadratic model (exactly, by its closed-form dynamics) and on an MLP (by sampled training runs).

    lopt study short_horizon --out docs/short_horizon

The tuner is online tuning with horizon k: a training run of T steps of SGD is cut into windows of
k steps; at the start of each window, from the current state, the learning rate is set to the one
(of a fine log-spaced grid) that minimizes the loss k steps later, and training goes on with it:

.. math::
    \eta_j = \arg\min_{\eta \in \mathcal G}\ \mathbb E\,[L(w_{jk + k}) \mid w_{jk},\ \eta_{jk..jk+k-1} = \eta].

It is the truncated method of `lopt.hpo.truncated` with the inner argmin solved exactly (grid)
instead of by one hypergradient step, so only the horizon differs between the rows. With k = T
(one window) it is the best constant learning rate for the full run: the full-horizon optimum.
The learning rate a horizon "chooses" is the tuner's rate where it has settled, the geometric mean
over the second half of the run (the table also gives it at the start and the final loss).

On the NQM the expectation is exact (`lopt.tasks.nqm.evolve`: the second moments of the state);
on the MLP each window's candidates are scored by the mean outer-valid loss of 2 batches after k
steps on the same training batches (common random numbers), one seed per run.

Why short horizons choose small rates: a step's immediate gain is dominated by the high-curvature
directions, which reach their noise floor fast; lowering η lowers that floor at once, while the
slow progress in low-curvature directions that a large η buys pays off only over many steps. A
greedy (k = 1) tuner so keeps lowering η and starves the low-curvature directions.

References: Wu, Ren, Liao, Grosse 2018, "Understanding short-horizon bias in stochastic
meta-optimization" (ICLR); Zhang et al. 2019 (the NQM, NeurIPS).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from lopt.tasks.base import TaskConfig
from lopt.tasks.mlp import MLP
from lopt.tasks.nqm import NQM, NQMStatic, curvatures, evolve, init_moments

HORIZONS = (1, 10, 100, 1000)
NQM_STEPS = 10_000  # T of the NQM runs
NQM_GRID = np.logspace(-6, np.log10(1.9), 160).astype(np.float32)  # candidate rates (stable: η < 2/h_max = 2)
NQM_SETTINGS = (  # (dim, batch size, spectrum exponent p): the main one first, then a sensitivity sweep
    (1000, 1, 1.0),
    (100, 1, 1.0),
    (100, 16, 1.0),
    (10, 1, 1.0),
    (100, 16, 2.0),
)
MLP_STEPS = 1000  # T of the MLP runs (horizons above it are left out)
MLP_GRID = np.logspace(-3, 0.5, 12).astype(np.float32)


# --- NQM (exact) -----------------------------------------------------------------------------------


def nqm_online(h: jax.Array, x0: jax.Array, batch_size: float, horizon: int, num_steps: int, grid: jax.Array):
    """(rates (T,), expected losses (T,)) of online tuning with ``horizon`` on the NQM, exact."""

    def window(m, _):
        ahead = jax.vmap(lambda lr: evolve(h, m, jnp.full((horizon,), lr), 0.0, batch_size)[1][-1])(
            grid
        )  # (G,)
        lr = grid[jnp.argmin(jnp.where(jnp.isfinite(ahead), ahead, jnp.inf))]
        m, losses = evolve(h, m, jnp.full((horizon,), lr), 0.0, batch_size)
        return m, (jnp.full((horizon,), lr), losses)

    _, (lrs, losses) = jax.lax.scan(window, init_moments(x0), None, length=num_steps // horizon)
    return lrs.reshape(-1), losses.reshape(-1)


def nqm_study(dim: int, batch_size: int, exponent: float, num_steps: int = NQM_STEPS, seed: int = 0) -> dict:
    """Every horizon (and the full one) on one NQM; x_0 ~ N(0, I) from ``seed``."""
    family = NQM(dims=(dim,), batch_sizes=(batch_size,), exponent=(exponent, exponent))
    static = NQMStatic(dim, batch_size)
    dyn = family.sample_dynamic(jax.random.key(seed), static)
    h, x0 = curvatures(dim, dyn["exponent"]), dyn["x0"]
    grid = jnp.asarray(NQM_GRID)
    rows = {}
    for k in (*[k for k in HORIZONS if k < num_steps], num_steps):
        lrs, losses = jax.jit(nqm_online, static_argnums=(2, 3, 4))(
            h, x0, float(batch_size), k, num_steps, grid
        )
        rows[k] = _summary(np.asarray(lrs), float(losses[-1]))
    return {
        "task": f"nqm(dim={dim}, bs{batch_size}, p={exponent:g})",
        "num_steps": num_steps,
        "horizons": rows,
    }


# --- MLP (sampled) ----------------------------------------------------------------------------------


def mlp_online(key, task, horizon: int, num_steps: int, grid: jax.Array):
    """(rates (T,), outer-valid loss at the end) of online tuning with ``horizon`` of SGD on ``task``."""
    k_init, k_run, k_final = jax.random.split(key, 3)

    def train(params, keys, lr):
        def step(p, k):
            k_b, k_l = jax.random.split(k)
            g = jax.grad(task.loss)(p, k_l, task.batch(k_b, "train"))
            return jax.tree.map(lambda w, d: w - lr * d, p, g), None

        return jax.lax.scan(step, params, keys)[0]

    def valid(params, key):
        ks = jax.random.split(key, 2)
        return jnp.mean(jax.vmap(lambda k: task.loss(params, k, task.batch(k, "outer_valid")))(ks))

    def window(params, key):
        k_train, k_valid = jax.random.split(key)
        keys = jax.random.split(k_train, horizon)
        ahead = jax.vmap(lambda lr: valid(train(params, keys, lr), k_valid))(grid)  # (G,) same batches
        lr = grid[jnp.argmin(jnp.where(jnp.isfinite(ahead), ahead, jnp.inf))]
        return train(params, keys, lr), jnp.full((horizon,), lr)

    params, lrs = jax.lax.scan(window, task.init(k_init), jax.random.split(k_run, num_steps // horizon))
    return lrs.reshape(-1), valid(params, k_final)


def mlp_study(num_steps: int = MLP_STEPS, seed: int = 0) -> dict:
    family = MLP()
    static = family.static_extremes()[0]
    task = family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(seed), static)))
    grid = jnp.asarray(MLP_GRID)
    run = jax.jit(mlp_online, static_argnums=(2, 3))
    rows = {}
    for k in (*[k for k in HORIZONS if k < num_steps], num_steps):
        lrs, loss = run(jax.random.key(seed + 1), task, k, num_steps, grid)
        rows[k] = _summary(np.asarray(lrs), float(loss))
    return {"task": task.name, "num_steps": num_steps, "horizons": rows}


# --- the report -------------------------------------------------------------------------------------


def _summary(lrs: np.ndarray, final_loss: float) -> dict:
    late = lrs[len(lrs) // 2 :]
    return {
        "lr_chosen": float(np.exp(np.mean(np.log(late)))),  # geometric mean over the second half
        "lr_first": float(lrs[0]),
        "final_loss": final_loss,
        "schedule": [float(x) for x in lrs[:: max(1, len(lrs) // 200)]],  # thinned, for the figure
    }


def table(study: dict) -> str:
    from lopt.report.render import table as render

    full = study["horizons"][study["num_steps"]]
    header = [
        "horizon k",
        "lr chosen (2nd half, geo. mean)",
        "full-horizon lr / chosen",
        "first lr",
        "final loss",
    ]
    rows = [
        [
            f"{k} (full)" if int(k) == study["num_steps"] else str(k),
            f"{r['lr_chosen']:.3g}",
            f"{full['lr_chosen'] / r['lr_chosen']:.1f}x",
            f"{r['lr_first']:.3g}",
            f"{r['final_loss']:.4g}",
        ]
        for k, r in study["horizons"].items()
    ]
    title = f"**{study['task']}**, T = {study['num_steps']} steps of SGD"
    return f"{title}\n\n{render(header, rows)}".rstrip("\n")


def figure(path: str, studies: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(studies), figsize=(5 * len(studies), 3.6), squeeze=False)
    for ax, study in zip(axes[0], studies):
        t = study["num_steps"]
        for k, r in study["horizons"].items():
            sched = np.asarray(r["schedule"])
            steps = np.linspace(1, t, len(sched))
            ax.plot(steps, sched, label=f"k={k}" + (" (full)" if int(k) == t else ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("learning rate chosen online")
        ax.set_title(study["task"], fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclasses.dataclass(frozen=True)
class Config:
    """The short-horizon bias of online learning-rate tuning on the NQM and an MLP."""

    out: str = "docs/short_horizon"  # folder for results.json, table.md, the figure
    mlp_steps: int = MLP_STEPS  # T of the MLP runs
    nqm_steps: int = NQM_STEPS  # T of the NQM runs


def run(cfg: Config) -> dict:
    """Every NQM setting and the MLP; writes results.json, table.md and short_horizon.png."""
    t0 = time.perf_counter()
    nqm = [nqm_study(d, b, p, cfg.nqm_steps) for d, b, p in NQM_SETTINGS]
    mlp = mlp_study(cfg.mlp_steps)
    seconds = time.perf_counter() - t0
    os.makedirs(cfg.out, exist_ok=True)
    flags = f"--out {cfg.out} --mlp-steps {cfg.mlp_steps} --nqm-steps {cfg.nqm_steps}"
    out = {"command": f"lopt study short_horizon {flags}", "seconds": seconds, "nqm": nqm, "mlp": mlp}
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    text = "\n\n".join(table(s) for s in [nqm[0], mlp, *nqm[1:]])
    with open(os.path.join(cfg.out, "table.md"), "w") as f:
        f.write(text + "\n")
    figure(os.path.join(cfg.out, "short_horizon.png"), [nqm[0], mlp])
    print(text)
    print(f"{seconds:.0f} s; written to {cfg.out}/")
    return out


if __name__ == "__main__":  # python -m lopt.studies.short_horizon: the same as `lopt study short_horizon`
    from lopt.studies import main

    main("short_horizon")
