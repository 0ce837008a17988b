r"""Truncated inner training of a population of particles: `lax.scan` over steps, `vmap` over
particles, automatic restarts at the horizon.

    unroller = Unroller(learned, family, static, horizon=(100, 1000), valid_every=10)
    state = unroller.init(theta, num_particles=16)                           # UnrollState, axis N
    state, out = unroller.unroll(key, state, theta, num_steps=50)            # out fields: (K, N)

A *particle* trains one task of the static group (``family``, ``static``): its own dynamic task
values, params, optimizer state, step counter and horizon. An *episode* is one inner training run
of a particle, from fresh params to its horizon H (log-uniform between the bounds). Each step:

0. a particle whose episode is over (step ≥ horizon; `init` makes every particle so) restarts:
   fresh dynamic task values (same static group), fresh params and optimizer state, a fresh
   horizon, and L_0, its meta-split loss at initialization, and an inner-valid loss measured;
1. the training loss L and its gradient g at params w_t on a ``train`` batch;
2. the optimizer step ``update(g, state, w_t, loss=L, valid_loss=V, num_steps=H)``, w_{t+1} = w_t + u
   (H, the episode's horizon, is what a horizon-aware optimizer such as `hierarchical_v2` is told T is),
   where V is the inner-valid loss if one was measured since the last step and NaN otherwise
   (the learned optimizers read a non-finite ``valid_loss`` as "no new value");
3. the meta-loss ℓ_t: the normalized loss of w_{t+1} on an ``outer_valid`` batch (with
   ``meta_split="train"``: the training loss L of step 1 -- free, but measured before the update);
4. step ← step + 1; ``done`` marks the step that reaches the horizon.

The inner-valid loss is measured at steps j ≡ 0 (mod E) of each truncation (j = 0..K−1) and at
every restart. Restarts and measurements sit behind population-level `lax.cond`s, so they cost
nothing on steps where no particle needs them, and a restart builds fresh tasks only for the
particles that end (one at a time, once per antithetic pair), not for the whole population. Restarts never depend on theta:
the two members of an antithetic pair (same keys, θ ± ε) restart together on the same task.

A particle that diverges (non-finite loss) runs on until its horizon -- restarting it early would
make restarts depend on theta and split antithetic twins -- with its meta-loss at the clip value
and `UnrollOutput.finite` False.

Staggering (``stagger=True``): each particle's first episode is cut to a uniformly random length in
[1, H], as if it had started earlier, so truncation boundaries fall at different points of
different particles' episodes (Metz et al. 2020; Vicol et al. 2021). Params still start at init.

The meta-objective (Metz et al. 2020: normalized per task, clipped). With x_t the relative excess
loss of step t,

.. math::
    x_t = \frac{L_t - L_\text{ref}}{|L_0 - L_\text{ref}| + \epsilon}, \qquad
    \ell_t = \begin{cases}
        \operatorname{clip}(x_t, -c, c) & \texttt{objective="relative"} \\
        \operatorname{clip}(\log \max(x_t, x_\text{min}),\ \log x_\text{min},\ \log c) & \texttt{objective="log"}
    \end{cases}
    \qquad \text{NaN and } \pm\infty \mapsto \text{the upper clip}

with L_0 the episode's loss at initialization, L_ref = ``loss_reference``, c = ``meta_clip`` and
x_min = `LOG_FLOOR`. With L_ref = 0, "relative" is L/L_0: 1 is "no progress", 0 is perfect, and a
particle 3x worse than its init counts as no worse than that. Late in training the differences
between optimizers are tiny in those units (0.001-0.02 of L_0 on VAEs and LMs), so "log" measures
them relative to the excess loss that is left: going from 2x to 1x the reference's excess counts
as much as going from 20x to 10x. L_ref should be a lower bound or a good loss of the task's group
(`lopt.objective.group_reference`: the best loss tuned Adam reaches, less a margin), so that
x_t -> 0 only for a very good optimizer. L_0 and L_ref do not depend on theta, so the antithetic
differences of the ES estimators are differences of relative (log) losses.

Step weights. Each step's loss has a weight w(s, H) that depends only on the particle's step s
(1..H, after the update) and its episode's horizon H, never on theta, and averages 1 over an episode
(Σ_s w = H), so an episode's total weight is its length, as with uniform weights:

- ``"uniform"``: w = 1 (the step-average of ℓ over the episode);
- ``"ramp"``: w = 2s / (H + 1), rising linearly: the second half of the episode carries 3/4 of it;
- ``"final"``: w = H / n on the last n = ceil(`FINAL_FRACTION` · H) steps, 0 before them.

A truncation's meta-loss is (1/K) Σ_t w_t ℓ_t. `UnrollOutput.phase` = s / H is each step's place in
its episode, for metrics binned by phase (`phase_bins`).

References: Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein 2020, arXiv:2009.11243;
Vicol, Metz, Sohl-Dickstein 2021, "Unbiased gradient estimation in unrolled computation graphs
with persistent evolution strategies" (ICML).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.objective import (
    FINAL_FRACTION,
    LOG_FLOOR,
    NORM_EPS,
    OBJECTIVES,
    STEP_WEIGHTS,
    normalize_meta_loss,
    phase_bins,
    step_weight,
)
from lopt.tasks.base import Task, TaskFamily
from lopt.validate import check_choice, check_range

PyTree = Any

__all__ = [
    "KEYS_PER_STEP",
    "META_SPLITS",
    "UnrollOutput",
    "UnrollState",
    "Unroller",
    "first_segment",
    "restart_chunk",
    # the meta-objective's pieces (`lopt.objective`), defined here before
    "FINAL_FRACTION",
    "LOG_FLOOR",
    "NORM_EPS",
    "OBJECTIVES",
    "STEP_WEIGHTS",
    "normalize_meta_loss",
    "phase_bins",
    "step_weight",
]

META_SPLITS = ("outer_valid", "train")
KEYS_PER_STEP = 7  # inner-valid batch and loss, train batch and loss, meta batch and loss, restart


class UnrollState(NamedTuple):
    """A population of particles; every leaf has a leading particle axis N."""

    task: PyTree  # (N, ...) dynamic values of each particle's task (a `TaskConfig.dynamic`)
    params: PyTree  # (N, ...) inner params
    opt_state: PyTree  # (N, ...) inner optimizer state
    step: jax.Array  # (N,) int32: steps taken in the current episode
    horizon: jax.Array  # (N,) int32: length of the current episode (step ≥ horizon: restart next)
    init_loss: jax.Array  # (N,) float32: L_0, the meta-split loss at the episode's initial params
    valid_loss: jax.Array  # (N,) float32: the last inner-valid loss
    valid_fresh: jax.Array  # (N,) bool: valid_loss was measured after the last optimizer step
    episodes: jax.Array  # (N,) int32: episodes started so far (0: not started yet)


class UnrollOutput(NamedTuple):
    """Per-step outputs of `Unroller.unroll`, each (K, N)."""

    meta_loss: jax.Array  # float32: normalized, clipped meta-loss ℓ_t (finite by construction)
    loss: jax.Array  # float32: raw training loss before the update
    done: jax.Array  # bool: the episode reached its horizon with this step
    finite: jax.Array  # bool: the training loss and the raw meta-loss were finite
    weight: jax.Array  # float32: the step's weight w(s, H) in the meta-loss (theta-free; mean 1 per episode)
    phase: jax.Array  # float32: s / H, the step's place in its episode, in (0, 1]


def first_segment(done: jax.Array) -> jax.Array:
    """(K, N) bool: the steps of the episode each particle runs first in the truncation (up to
    and including its first ``done``)."""
    d = done.astype(jnp.int32)
    return jnp.cumsum(d, axis=0) - d == 0


def restart_chunk(num: int) -> int:
    """R: fresh tasks built per iteration of the restart loop, for ``num`` particles with their own keys."""
    return max(1, num // 64)


def _select(mask: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """Leafwise ``where(mask, new, old)`` with ``mask`` (N,) broadcast explicitly over trailing axes."""

    def one(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1)), a, b)

    return jax.tree.map(one, new, old)


@dataclasses.dataclass(frozen=True)
class Unroller:
    """Truncated inner training of one static task group by a learned optimizer.

    All fields are static structure (hashable); theta, keys and states are arguments.
    """

    learned: Any  # a learned optimizer: ``init(key) -> theta``, ``transform(theta) -> optax``
    family: TaskFamily  # the task family
    static: Any  # the static structure every particle's task shares
    horizon: tuple[int, int] = (100, 1000)  # episode lengths, log-uniform between these bounds
    valid_every: int = 10  # E: measure the inner-valid loss (and feed it) every E steps
    meta_split: str = "outer_valid"  # split of the meta-loss; "train" reuses the training loss
    meta_clip: float = 3.0  # c: the normalized meta-loss is clipped to [-c, c]; NaN/inf become c
    loss_reference: float = 0.0  # L_ref of the normalization; 0 for losses bounded below by 0
    stagger: bool = True  # cut each particle's first episode to a random length in [1, H]
    objective: str = "relative"  # ℓ of the relative excess loss x: "relative" (x) or "log" (log x)
    step_weights: str = "uniform"  # w(s, H) of each step: "uniform", "ramp" or "final"

    def __post_init__(self):
        lo, hi = self.horizon
        check_range("horizon[0]", lo, 1, 10_000_000)
        check_range("horizon[1]", hi, lo, 10_000_000)
        check_range("valid_every", self.valid_every, 1, 10_000_000)
        check_choice("meta_split", self.meta_split, META_SPLITS)
        check_range("meta_clip", self.meta_clip, 1e-6, 1e30)
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("step_weights", self.step_weights, STEP_WEIGHTS)
        if self.objective == "log" and self.meta_clip <= LOG_FLOOR:
            raise ValueError(
                f"meta_clip={self.meta_clip} must exceed LOG_FLOOR={LOG_FLOOR} with objective='log'."
            )

    # --- building blocks (one particle) ------------------------------------------------------
    def data(self) -> PyTree:
        """The family's device-resident arrays for ``static`` (None for data-free families).

        Pass them as ``data=`` to `unroll` from inside a jitted function whose argument they are,
        so large datasets are not embedded in the compiled program as constants.
        """
        return self.family.load_data(self.static)

    def task(self, dynamic: PyTree, data: PyTree) -> Task:
        """The task of one particle from its dynamic values."""
        return Task(dynamic=dynamic, data=data, family=self.family, static=self.static)

    def optimizer(self, theta: PyTree) -> optax.GradientTransformationExtraArgs:
        return optax.with_extra_args_support(self.learned.transform(theta))

    def sample_horizon(self, key: jax.Array) -> jax.Array:
        """int32 H, log-uniform on [lo, hi]: floor(exp(U(log lo, log(hi + 1)))), clipped."""
        lo, hi = self.horizon
        u = jax.random.uniform(key, (), jnp.float32, math.log(lo), math.log(hi + 1))
        return jnp.clip(jnp.floor(jnp.exp(u)).astype(jnp.int32), lo, hi)

    def _loss_on(self, task: Task, params: PyTree, keys: jax.Array, split: str) -> jax.Array:
        """Loss of ``params`` on a batch of ``split``; ``keys`` (2,): batch and loss keys."""
        return task.loss(params, keys[1], task.batch(keys[0], split)).astype(jnp.float32)

    def _fresh_task(self, key: jax.Array, episodes: jax.Array, data: PyTree) -> UnrollState:
        """A particle at the start of its next episode, without optimizer state (theta-free)."""
        k_task, k_init, k_horizon, k_cut, k_meta, k_valid = jax.random.split(key, 6)
        dynamic = self.family.sample_dynamic(k_task, self.static)
        task = self.task(dynamic, data)
        params = task.init(k_init)
        horizon = self.sample_horizon(k_horizon)
        if self.stagger:  # first episode: a uniformly random length in [1, H]
            cut = 1 + jnp.floor(jax.random.uniform(k_cut, (), jnp.float32) * horizon).astype(jnp.int32)
            horizon = jnp.where(episodes == 0, jnp.clip(cut, 1, horizon), horizon)
        return UnrollState(
            task=dynamic,
            params=params,
            opt_state=None,
            step=jnp.zeros([], jnp.int32),
            horizon=horizon,
            init_loss=self._loss_on(task, params, jax.random.split(k_meta), self.meta_split),
            valid_loss=self._loss_on(task, params, jax.random.split(k_valid), "inner_valid"),
            valid_fresh=jnp.ones([], bool),
            episodes=episodes + 1,
        )

    def _step(self, theta: PyTree, state: UnrollState, keys: jax.Array, data: PyTree):
        """One inner step of one particle: (state, (ℓ, L, finite, w, phase)); ``keys`` (4,): train
        batch, train loss, meta batch, meta loss."""
        task = self.task(state.task, data)
        opt = self.optimizer(theta)
        loss, grads = jax.value_and_grad(task.loss)(state.params, keys[1], task.batch(keys[0], "train"))
        loss = loss.astype(jnp.float32)
        valid = jnp.where(state.valid_fresh, state.valid_loss, jnp.nan)  # NaN: no new value
        updates, opt_state = opt.update(
            grads, state.opt_state, state.params, loss=loss, valid_loss=valid, num_steps=state.horizon
        )
        params = optax.apply_updates(state.params, updates)
        raw = loss if self.meta_split == "train" else self._loss_on(task, params, keys[2:], self.meta_split)
        meta = normalize_meta_loss(raw, state.init_loss, self.loss_reference, self.meta_clip, self.objective)
        step = state.step + 1
        weight = step_weight(step, state.horizon, self.step_weights)
        phase = step.astype(jnp.float32) / jnp.maximum(state.horizon, 1).astype(jnp.float32)
        state = state._replace(params=params, opt_state=opt_state, step=step, valid_fresh=jnp.zeros([], bool))
        return state, (meta, loss, jnp.isfinite(loss) & jnp.isfinite(raw), weight, phase)

    def _restart(
        self, state: UnrollState, ended: jax.Array, keys: jax.Array, theta, theta_axis, antithetic, data
    ):
        """Restart the particles where ``ended`` (N,), with keys (N,).

        Fresh tasks are built for the ended particles only, R at a time (R = 1 below 64 particles:
        unbatched, which also compiles fastest), in a loop of ceil(#ended / R) iterations, so a
        restart costs about one task sample, not N. An antithetic pair shares one fresh task. The
        loop carries nothing that depends on theta (the optimizer states are initialized
        afterwards, for all N, which is cheap), so `jax.grad` differentiates through it.
        """
        n = ended.shape[0]
        own = n // 2 if antithetic else n  # particles with their own keys; i + n/2 is i's twin
        r = restart_chunk(own)
        order = jnp.nonzero(ended[:own], size=-(-own // r) * r, fill_value=n)[0]  # ended first, then n
        count = jnp.sum(ended[:own], dtype=jnp.int32)

        def chunk(i, buffer):
            idx = jax.lax.dynamic_slice_in_dim(order, i * r, r)  # (R,); n marks an empty slot
            safe = jnp.minimum(idx, n - 1)
            if r == 1:
                fresh = self._fresh_task(keys[safe[0]], buffer.episodes[safe[0]], data)
                fresh = jax.tree.map(lambda x: x[None], fresh)
            else:
                fresh = jax.vmap(self._fresh_task, in_axes=(0, 0, None))(
                    keys[safe], buffer.episodes[safe], data
                )
            if antithetic:
                idx = jnp.concatenate([idx, idx + own])  # empty slots stay out of range
                fresh = jax.tree.map(lambda x: jnp.concatenate([x, x]), fresh)
            return jax.tree.map(lambda b, f: b.at[idx].set(f, mode="drop"), buffer, fresh)

        buffer = jax.lax.stop_gradient(state._replace(opt_state=None))
        fresh = jax.lax.fori_loop(0, (count + r - 1) // r, chunk, buffer)
        opt_init = jax.vmap(lambda t, p: self.optimizer(t).init(p), in_axes=(theta_axis, 0))
        return _select(ended, fresh._replace(opt_state=opt_init(theta, fresh.params)), state)

    # --- the population ----------------------------------------------------------------------
    def init(self, theta: PyTree, num_particles: int, *, theta_axis: int | None = None) -> UnrollState:
        """``num_particles`` particles that have not started: each starts its first episode (a
        fresh task) at its first step in `unroll`. Cheap: builds zeros of the right shapes.

        ``theta`` (shared, or with a leading N axis if ``theta_axis=0``) only gives the shapes.
        """
        one = jax.eval_shape(self._fresh_task, jax.random.key(0), jnp.zeros([], jnp.int32), self.data())
        th = theta if theta_axis is None else jax.tree.map(lambda x: x[0], theta)
        opt = jax.eval_shape(lambda t, p: self.optimizer(t).init(p), th, one.params)
        one = one._replace(opt_state=opt)
        state = jax.tree.map(lambda s: jnp.zeros((num_particles, *s.shape), s.dtype), one)
        return state._replace(valid_fresh=jnp.zeros((num_particles,), bool))

    def unroll(
        self,
        key: jax.Array,
        state: UnrollState,
        theta: PyTree,
        num_steps: int,
        *,
        theta_axis: int | None = None,
        antithetic: bool = False,
        data: PyTree = None,
    ) -> tuple[UnrollState, UnrollOutput]:
        """K = ``num_steps`` inner steps of every particle, restarting particles at their horizon.

        Args:
          key: randomness of batches and restarts.
          state: the population (leading axis N).
          theta: shared by all particles (``theta_axis=None``) or one per particle (``theta_axis=0``,
            leading axis N: e.g. [θ + ε_1..θ + ε_P, θ − ε_1..θ − ε_P]).
          num_steps: K, static.
          antithetic: particles i and i + N/2 get the same keys, hence the same batches and
            restarts (their states stay twins except for what theta changes).
          data: `data()` (default: loaded here, closed over as a constant).

        Returns:
          The new state and an `UnrollOutput` of (K, N) arrays.
        """
        data = self.data() if data is None else data
        num = state.step.shape[0]
        keys = self._step_keys(key, num, num_steps, antithetic)  # (K, N, KEYS_PER_STEP)
        step_fn = jax.vmap(self._step, in_axes=(theta_axis, 0, 0, None))
        valid_fn = jax.vmap(
            lambda dyn, params, k: self._loss_on(self.task(dyn, data), params, k, "inner_valid")
        )

        def restart(state, keys):
            return self._restart(
                state, state.step >= state.horizon, keys, theta, theta_axis, antithetic, data
            )

        def measure_valid(state, keys):
            valid = valid_fn(state.task, state.params, keys)  # (N,)
            return state._replace(valid_loss=valid, valid_fresh=jnp.ones_like(state.valid_fresh))

        def body(state, xs):
            j, keys = xs  # (), (N, KEYS_PER_STEP)
            ended = jnp.any(state.step >= state.horizon)
            state = jax.lax.cond(ended, restart, lambda s, _: s, state, keys[:, 6])
            state = jax.lax.cond(
                j % self.valid_every == 0, measure_valid, lambda s, _: s, state, keys[:, 0:2]
            )
            state, (meta, loss, finite, weight, phase) = step_fn(theta, state, keys[:, 2:6], data)
            return state, UnrollOutput(meta, loss, state.step >= state.horizon, finite, weight, phase)

        return jax.lax.scan(body, state, (jnp.arange(num_steps), keys))

    def _step_keys(self, key: jax.Array, num: int, num_steps: int, antithetic: bool) -> jax.Array:
        """(K, N, KEYS_PER_STEP): every key of a truncation from one flat split (a 1-D split
        compiles fast on CPU, a vmapped or 2-D one does not); with ``antithetic`` particles i and
        i + N/2 get the same keys."""
        if antithetic and num % 2:
            raise ValueError(f"an antithetic population needs an even number of particles, got {num}.")
        unique = num // 2 if antithetic else num
        keys = jax.random.split(key, num_steps * unique * KEYS_PER_STEP).reshape(
            num_steps, unique, KEYS_PER_STEP
        )
        return jnp.concatenate([keys, keys], axis=1) if antithetic else keys
