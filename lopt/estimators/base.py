r"""The `GradientEstimator` contract and helpers shared by the estimators.

    est = ESTIMATORS["pes"](learned, family, static, num_particles=8, truncation_length=50)
    hparams = est.default_hparams()                       # {"sigma": 0.01}: numbers, vmappable
    state = est.init(key_init, theta, hparams)
    meta_grad, state, metrics = est.estimate(key, theta, state, hparams)   # jit this
    updates, outer_state = outer_opt.update(meta_grad, outer_state, theta)

Every estimator is a frozen dataclass of static structure (hashable: pass it to `jax.jit` as a
static argument, or close over it) with the same constructor fields, so code never branches on
names. ``estimate`` is pure: a function of (key, theta, state, hparams) only, with no host
randomness and no Python loop over steps or particles, so the whole of it jits as one program and
the same key gives the same meta-gradient, bitwise.

Non-finite estimates never reach theta: each particle's contribution to the meta-gradient that is
NaN or infinite is replaced by zero (the mean still divides by P) and counted in
``metrics["num_zeroed"]``. The meta-losses are finite by construction (`lopt.unroll`: a non-finite
loss becomes the clip value), and ``metrics["num_nonfinite"]`` counts the unrolls whose raw losses
were not. Metrics (scalar arrays but the phase bins):

- ``meta_loss``: mean normalized meta-loss over the truncation's steps and unrolls;
- ``meta_loss_weighted``: the same with each step's weight (`lopt.unroll.step_weight`): what is optimized;
- ``phase_sum``, ``phase_count`` (`PHASE_BINS`,): ℓ summed and counted by episode phase s/H;
- ``num_dropped``: pairs left out for a diverged episode (``drop_diverged``; 0 otherwise);
- ``num_nonfinite``: unrolls with a non-finite training or meta-loss in this truncation;
- ``num_zeroed``: particles whose non-finite gradient contribution was replaced by zero;
- ``num_resets``: episodes that ended during the truncation;
- ``inner_steps``: inner steps computed (every unroll, both members of an antithetic pair).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from lopt.tasks.base import TaskFamily
from lopt.unroll import Unroller, UnrollOutput, phase_bins
from lopt.validate import check_choice, check_range

PyTree = Any

SHAPINGS = ("none", "zscore")
SIGMA_SCALES = ("global", "rms")
SIGMA_RMS_FLOOR = 0.01  # sigma_scale="rms": a leaf whose RMS is below this is perturbed as if it were this
ZSCORE_CLIP = 3.0  # zscore shaping: a pair's normalized difference is clipped to [-3, 3]
PHASE_BINS = 4  # meta-loss metrics binned by episode phase s/H: (0, 1/4], ..., (3/4, 1]


@dataclasses.dataclass(frozen=True)
class GradientEstimator(abc.ABC):
    """Abstract: a meta-gradient estimator over truncated unrolls of one static task group.

    Subclasses are final frozen dataclasses that add no fields; they set ``name`` and implement
    `init` and `estimate`.
    """

    name: ClassVar[str]

    learned: Any  # the learned optimizer: ``init(key) -> theta``, ``transform(theta) -> optax``
    family: TaskFamily  # the task family
    static: Any  # the static structure shared by every particle's task
    num_particles: int = 8  # P: particles (tasks); ES, PES and NRES run each as an antithetic pair
    truncation_length: int = 50  # K: inner steps per estimate (full-unroll ES: horizon[1] instead)
    horizon: tuple[int, int] = (100, 1000)  # episode lengths, log-uniform between the bounds
    valid_every: int = 10  # E: feed the inner-valid loss to the optimizer every E steps
    meta_split: str = "outer_valid"  # meta-loss split: "outer_valid", or "train" (cheaper, biased to fit)
    meta_clip: float = 3.0  # normalized meta-loss clipped to [-c, c]; NaN/inf become c
    loss_reference: float = 0.0  # L_ref of the normalization (L − L_ref)/|L_0 − L_ref|
    stagger: bool = True  # cut first episodes to random lengths so truncations are staggered
    objective: str = "relative"  # per-step ℓ of the relative excess loss x: "relative" (x) or "log" (log x)
    step_weights: str = "uniform"  # weight of each step by its place in the episode: uniform, ramp, final
    shaping: str = "none"  # ES fitness shaping of the antithetic differences: none, or zscore (`shape_pairs`)
    # ES: a pair with a non-finite loss contributes nothing until its episode restarts
    drop_diverged: bool = False
    # ES: σ the same for every coordinate, or rms: σ x each leaf's RMS (`leaf_scales`)
    sigma_scale: str = "global"

    def __post_init__(self):
        check_range(f"{self.name}.num_particles", self.num_particles, 1, 10_000_000)
        check_choice(f"{self.name}.shaping", self.shaping, SHAPINGS)
        check_choice(f"{self.name}.sigma_scale", self.sigma_scale, SIGMA_SCALES)
        check_range(f"{self.name}.truncation_length", self.truncation_length, 1, 10_000_000)
        _ = self.unroller  # validates the unroll fields

    @property
    def unroller(self) -> Unroller:
        """The `Unroller` these fields describe."""
        return Unroller(
            self.learned,
            self.family,
            self.static,
            horizon=tuple(self.horizon),
            valid_every=self.valid_every,
            meta_split=self.meta_split,
            meta_clip=self.meta_clip,
            loss_reference=self.loss_reference,
            stagger=self.stagger,
            objective=self.objective,
            step_weights=self.step_weights,
        )

    def default_hparams(self) -> dict[str, jax.Array]:
        """Numeric hyperparameters (a dict of float32 scalars; vmappable). ES family: σ."""
        return {"sigma": jnp.float32(0.01)}  # σ: std of the Gaussian perturbations of theta

    def num_unrolls(self) -> int:
        """Inner trainings run side by side: 2P for antithetic estimators, P otherwise."""
        return 2 * self.num_particles

    def inner_steps_per_estimate(self) -> int:
        """Inner steps one `estimate` computes (for throughput)."""
        return self.num_unrolls() * self.truncation_length

    @abc.abstractmethod
    def init(self, key: jax.Array, theta: PyTree, hparams: dict) -> Any:
        """The initial estimator state (a pytree of arrays; cheap: no task is built until the
        first `estimate`)."""

    @abc.abstractmethod
    def estimate(
        self, key: jax.Array, theta: PyTree, state: Any, hparams: dict, *, data: PyTree = None
    ) -> tuple[PyTree, Any, dict[str, jax.Array]]:
        """(meta_grad, new state, metrics).

        ``meta_grad`` has theta's structure and estimates the gradient of the meta-loss, so
        ``theta − lr · meta_grad`` lowers it (feed it to an optax outer optimizer as a gradient).
        ``data``: ``self.unroller.data()``, passed as an argument of the caller's jitted function
        so a large dataset is not embedded in the compiled program (default: loaded here and
        closed over as a constant -- fine for data-free or small families).
        """


# --- helpers -----------------------------------------------------------------------------------


def flat_normal(key: jax.Array, theta: PyTree, num: int) -> jax.Array:
    """(num, D) standard normal draws for flattened ``theta`` (D floats, `ravel_pytree` order).

    The ES estimators do all their perturbation arithmetic on flat (P, D) arrays: one op per step of
    the formula instead of one per theta leaf, which is what XLA's compile time grows with.
    """
    flat, _ = ravel_pytree(theta)
    return jax.random.normal(key, (num * flat.size,), flat.dtype).reshape(num, flat.size)


def leaf_scales(theta: PyTree, kind: str = "global") -> jax.Array:
    """(D,) per-coordinate scale s of the perturbations ε = σ s z (`ravel_pytree` order): ones for
    ``"global"``; for ``"rms"`` each leaf's root-mean-square, floored at `SIGMA_RMS_FLOOR`, so σ is a
    fraction of every tensor's scale (a small output layer is not swamped, an LSTM not starved). The
    estimators divide each coordinate's estimate by s², so it stays an unbiased estimate of the
    gradient of the objective smoothed with those per-coordinate σ s."""
    if kind == "global":
        return jnp.ones_like(ravel_pytree(theta)[0])
    rms = jax.tree.map(
        lambda x: jnp.full(
            jnp.shape(x), jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(x))), SIGMA_RMS_FLOOR), jnp.result_type(x)
        ),
        theta,
    )
    return ravel_pytree(rms)[0]


def antithetic_thetas(theta: PyTree, noise: jax.Array) -> PyTree:
    """(2P, ...) theta-like: [θ + ε_1, ..., θ + ε_P, θ − ε_1, ..., θ − ε_P] for flat ``noise`` (P, D)."""
    flat, unravel = ravel_pytree(theta)
    rows = jnp.concatenate([flat[None] + noise, flat[None] - noise])  # (2P, D)
    return jax.vmap(unravel)(rows)


def finite_mean_rows(grads: jax.Array, theta: PyTree) -> tuple[PyTree, jax.Array]:
    """Mean over rows of flat per-particle contributions (P, D), each row with a non-finite entry
    replaced by zero (the mean still divides by P), unraveled like ``theta``; and the rows zeroed."""
    num = grads.shape[0]
    ok = jnp.all(jnp.isfinite(grads), axis=1)  # (P,)
    mean = jnp.sum(jnp.where(ok[:, None], grads, 0.0), axis=0) / num  # (D,)
    return ravel_pytree(theta)[1](mean), jnp.sum(~ok, dtype=jnp.int32)


def broadcast(tree: PyTree, num: int) -> PyTree:
    """``tree`` repeated along a new leading axis of length ``num``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num, *jnp.shape(x))), tree)


def finite_mean(grads: PyTree) -> tuple[PyTree, jax.Array]:
    """Mean over the leading particle axis, each particle whose contribution has a non-finite entry
    replaced by zero; returns (mean, number of particles zeroed)."""
    leaves = jax.tree.leaves(grads)
    num = leaves[0].shape[0]
    ok = jnp.ones((num,), bool)
    for x in leaves:
        ok = ok & jnp.all(jnp.isfinite(x.reshape(num, -1)), axis=1)
    clean = jax.tree.map(lambda x: jnp.where(ok.reshape((num,) + (1,) * (x.ndim - 1)), x, 0), grads)
    mean = jax.tree.map(lambda x: jnp.sum(x, axis=0) / num, clean)
    return mean, jnp.sum(~ok, dtype=jnp.int32)


def shape_pairs(
    a: jax.Array, b: jax.Array, kind: str, live: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Fitness shaping of per-pair antithetic weights (P,): ``a`` and ``b`` scale a pair's two
    perturbation sums, d = a + b is its total difference.

    ``"zscore"``: both are divided by the root-mean-square of d over the ``live`` pairs (all by
    default) and a pair whose |d| / rms exceeds `ZSCORE_CLIP` is scaled down to it, so the estimate
    no longer depends on the scale of the group's losses and no single pair (a twin that diverged, a
    lucky batch) can steer a step. The direction of each pair's contribution is unchanged; the
    estimate's scale is that of the perturbations (σ), not of a gradient, which the outer
    optimizer's normalization (Adam) absorbs. ``"none"``: unchanged.
    """
    if kind == "none":
        return a, b
    d = a + b
    live = jnp.ones(d.shape, bool) if live is None else live
    rms = jnp.sqrt(jnp.sum(jnp.where(live, d * d, 0.0)) / jnp.maximum(jnp.sum(live), 1)) + 1e-30
    z = d / rms
    factor = jnp.minimum(1.0, ZSCORE_CLIP / jnp.maximum(jnp.abs(z), 1e-30)) / rms
    return a * factor, b * factor


def unroll_metrics(
    out: UnrollOutput, num_zeroed: jax.Array, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """The metrics of an estimate from its unroll outputs (K, N); ``mask`` (K, N) selects the
    steps that count for the meta-loss (default: all).

    ``meta_loss`` is the plain mean of ℓ; ``meta_loss_weighted`` the mean of w·ℓ (what is optimized);
    ``phase_sum`` / ``phase_count`` (`PHASE_BINS`,) bin ℓ by episode phase (`lopt.unroll.phase_bins`).
    """
    mask = jnp.ones(out.meta_loss.shape, bool) if mask is None else mask
    count = jnp.maximum(jnp.sum(mask), 1)
    meta_loss = jnp.sum(jnp.where(mask, out.meta_loss, 0.0)) / count
    weighted = jnp.sum(jnp.where(mask, out.weight * out.meta_loss, 0.0)) / count
    sums, counts = phase_bins(out.meta_loss, out.phase, PHASE_BINS, mask)
    return {
        "meta_loss": meta_loss,
        "meta_loss_weighted": weighted,
        "phase_sum": sums,
        "phase_count": counts,
        "num_nonfinite": jnp.sum(~jnp.all(out.finite, axis=0), dtype=jnp.int32),
        "num_zeroed": num_zeroed,
        "num_resets": jnp.sum(out.done, dtype=jnp.int32),
        "inner_steps": jnp.int32(out.done.size),
    }
