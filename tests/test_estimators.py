"""Meta-gradient estimators against exact answers (docs/design.md habit 12).

The reference problem has a closed form: a diagonal quadratic f(x) = ½ Σ λ_i x_i² with a fixed
start x_0 (the same task for every particle), trained by SGD whose per-group log learning rates are
theta. After t steps x_{t,i} = (1 − η_i λ_i)^t x_{0,i}, so the meta-objective of an episode of H
steps, J(θ) = (1/H) Σ_t f(x_{t+1}) / f(x_0), and its gradient are closed-form expressions; the
Gaussian-smoothed gradient ∇E[J(θ + ε)] comes from Gauss–Hermite quadrature.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.estimators import ESTIMATORS, get_estimator
from lopt.estimators.base import PHASE_BINS
from lopt.tasks.base import TaskFamily
from lopt.tasks.registry import get_family
from lopt.validate import UnknownNameError

# Tests compile about twice as fast without LLVM's optimizations; at these sizes run time is nil.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@dataclasses.dataclass(frozen=True)
class DiagStatic:
    dim: int


@dataclasses.dataclass(frozen=True)
class DiagQuadratic(TaskFamily):
    """f(x) = ½ Σ λ_i x_i² from x_0, the same task every time (noise-free, deterministic)."""

    name = "diag_quadratic"
    eigvals: tuple[float, ...] = (1.0, 0.5, 0.1, 0.05)
    x0: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    def sample_static(self, key):
        return DiagStatic(len(self.eigvals))

    def sample_dynamic(self, key, static):
        return {"eigvals": jnp.asarray(self.eigvals, jnp.float32), "x0": jnp.asarray(self.x0, jnp.float32)}

    def static_extremes(self):
        return DiagStatic(len(self.eigvals)), DiagStatic(len(self.eigvals))

    def init(self, key, task):
        return {"x": task.dynamic["x0"]}

    def batch(self, key, split, task):
        return {}

    def loss(self, params, key, batch, task):
        return 0.5 * jnp.sum(task.dynamic["eigvals"] * params["x"] ** 2)


@dataclasses.dataclass(frozen=True)
class GroupSGD:
    """SGD with a learned log learning rate per group of coordinates: u_i = −exp(θ[g_i])·∂f/∂x_i."""

    groups: tuple[int, ...] = (0, 0, 1, 1)
    init_log_lr: tuple[float, ...] = (math.log(0.5), math.log(2.0))

    def init(self, key):
        return {"log_lr": jnp.asarray(self.init_log_lr, jnp.float32)}

    def transform(self, theta):
        lr = jnp.exp(theta["log_lr"])[jnp.asarray(self.groups)]  # (d,)

        def update(grads, state, params=None, **extra):
            return {"x": -lr * grads["x"]}, state

        return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


def objective(log_lr, family, opt, horizon):
    """J = mean over t = 0..H−1 of f(x_{t+1}) / f(x_0), in closed form."""
    lam, x0 = jnp.asarray(family.eigvals), jnp.asarray(family.x0)
    r = (1.0 - jnp.exp(log_lr)[jnp.asarray(opt.groups)] * lam) ** 2  # (d,) per-step loss factor
    t = jnp.arange(1, horizon + 1, dtype=jnp.float32)
    losses = 0.5 * jnp.sum((lam * x0**2)[None, :] * r[None, :] ** t[:, None], axis=1)  # (H,)
    return jnp.mean(losses) / (0.5 * jnp.sum(lam * x0**2))


def truncated_objective(log_lr, family, opt, trunc_len, t):
    """Truncation t's mean meta-loss as TBPTT sees it: its starting point x_{tK} held fixed."""
    lam, x0 = jnp.asarray(family.eigvals), jnp.asarray(family.x0)
    a = 1.0 - jnp.exp(log_lr)[jnp.asarray(opt.groups)] * lam  # (d,)
    start = jax.lax.stop_gradient(a ** (t * trunc_len) * x0)
    s = jnp.arange(1, trunc_len + 1, dtype=jnp.float32)
    losses = 0.5 * jnp.sum((lam * start**2)[None, :] * (a**2)[None, :] ** s[:, None], axis=1)  # (K,)
    return jnp.mean(losses) / (0.5 * jnp.sum(lam * x0**2))


def smoothed_grad(f, theta, sigma, nodes=20):
    """∇ E_{ε~N(0,σ²I)} f(θ + ε) = E[∇f(θ + ε)] by tensor-product Gauss–Hermite quadrature."""
    x, w = np.polynomial.hermite.hermgauss(nodes)
    d = theta.shape[0]
    grid = np.stack(np.meshgrid(*[x] * d, indexing="ij"), -1).reshape(-1, d)
    weights = np.prod(np.stack(np.meshgrid(*[w] * d, indexing="ij"), -1).reshape(-1, d), axis=1) / np.pi ** (
        d / 2
    )
    grads = jax.jit(jax.vmap(jax.grad(f)))(
        theta[None, :] + sigma * math.sqrt(2.0) * jnp.asarray(grid, jnp.float32)
    )
    return np.asarray(jnp.sum(grads * jnp.asarray(weights, jnp.float32)[:, None], axis=0))


FAMILY, OPT = DiagQuadratic(), GroupSGD()
STATIC = FAMILY.sample_static(None)
THETA = OPT.init(None)
H, K, SIGMA, P, SEEDS = 20, 5, 0.05, 64, 16


@functools.cache
def episode_estimates(name: str, num_particles: int, sigma_scale: str = "global") -> np.ndarray:
    """(SEEDS, 2): per seed, the mean of the estimates over one episode of H steps from fresh
    tasks (H / K truncations; one full unroll for ES), theta fixed. With ``sigma_scale="rms"`` the
    relative σ is set so that the effective σ is SIGMA again (theta has one leaf)."""
    est = get_estimator(
        name,
        learned=OPT,
        family=FAMILY,
        static=STATIC,
        num_particles=num_particles,
        truncation_length=K,
        horizon=(H, H),
        stagger=False,
        sigma_scale=sigma_scale,
    )
    rms = float(np.sqrt(np.mean(np.square(THETA["log_lr"])))) if sigma_scale == "rms" else 1.0
    hparams = {"sigma": jnp.float32(SIGMA / rms)}
    num = 1 if name == "es" else H // K

    def one_seed(key):
        def truncation(state, k):
            grad, state, _ = est.estimate(k, THETA, state, hparams)
            return state, grad["log_lr"]

        state = est.init(key, THETA, hparams)
        _, grads = jax.lax.scan(truncation, state, jax.random.split(key, num))
        return jnp.mean(grads, axis=0)

    return np.asarray(jit(jax.vmap(one_seed))(jax.random.split(jax.random.key(num_particles), SEEDS)))


@pytest.mark.parametrize("sigma_scale", ["global", "rms"])
@pytest.mark.parametrize("name", ["es", "pes", "nres"])
def test_es_family_matches_the_exact_smoothed_gradient(name, sigma_scale):
    f = functools.partial(objective, family=FAMILY, opt=OPT, horizon=H)
    target = smoothed_grad(f, THETA["log_lr"], SIGMA)
    np.testing.assert_allclose(target, jax.grad(f)(THETA["log_lr"]), rtol=0.01)  # σ small: near ∇J
    errors = {}
    for n in (P, 4 * P):
        g = episode_estimates(name, n, sigma_scale)  # (SEEDS, 2)
        # unbiased: the mean over seeds is within 4 standard errors of the exact gradient
        se = g.std(axis=0, ddof=1) / math.sqrt(SEEDS)
        assert np.all(np.abs(g.mean(axis=0) - target) < 4 * se + 1e-6), (n, g.mean(axis=0), target, se)
        errors[n] = np.sqrt(np.mean(np.sum((g - target) ** 2, axis=1))) / np.linalg.norm(target)
    # antithetic ES with ε = σz: ĝ ≈ z zᵀ∇J, E|ĝ − ∇J|² = (d + 1)|∇J|²/P; PES and NRES compare
    assert errors[P] < 2.0 * math.sqrt(3 / P), errors
    # the error shrinks like 1/√P: ×4 particles, ÷2 error
    assert 0.3 < errors[4 * P] / errors[P] < 0.75, errors


def test_pes_over_an_episode_agrees_with_full_unroll_es():
    es, pes = episode_estimates("es", 4 * P), episode_estimates("pes", 4 * P)
    se = np.sqrt(es.var(axis=0, ddof=1) / SEEDS + pes.var(axis=0, ddof=1) / SEEDS)
    assert np.all(np.abs(es.mean(axis=0) - pes.mean(axis=0)) < 4 * se), (es.mean(0), pes.mean(0), se)
    # NRES reuses one perturbation for all of an episode's truncations: with aligned episodes its
    # episode sum *is* full-unroll ES, so the two agree far more closely than two independent runs
    nres = episode_estimates("nres", 4 * P)
    assert np.all(np.abs(nres.mean(axis=0) - es.mean(axis=0)) < 4 * se)


@pytest.mark.parametrize("name", ["pes", "nres"])
def test_online_es_is_unbiased_when_episodes_end_inside_truncations(name):
    # H = 20, K = 6: episodes end at steps 20, 40, 60 -- inside the 4th and 7th truncations and
    # at the end of the 10th. The mean of the 10 estimates is the gradient of the mean over those
    # 60 steps, i.e. of J, and steps after a restart must be weighted by the new perturbation only.
    est = get_estimator(
        name,
        learned=OPT,
        family=FAMILY,
        static=STATIC,
        num_particles=2 * P,
        truncation_length=6,
        horizon=(H, H),
        stagger=False,
    )
    hparams = {"sigma": jnp.float32(SIGMA)}

    def one_seed(key):
        def truncation(state, k):
            grad, state, metrics = est.estimate(k, THETA, state, hparams)
            return state, (grad["log_lr"], metrics["num_resets"])

        _, (grads, resets) = jax.lax.scan(
            truncation, est.init(key, THETA, hparams), jax.random.split(key, 10)
        )
        return jnp.mean(grads, axis=0), resets

    g, resets = jit(jax.vmap(one_seed))(jax.random.split(jax.random.key(5), SEEDS))
    np.testing.assert_array_equal(resets[0], [0, 0, 0, 4 * P, 0, 0, 4 * P, 0, 0, 4 * P])
    target = smoothed_grad(
        functools.partial(objective, family=FAMILY, opt=OPT, horizon=H), THETA["log_lr"], SIGMA
    )
    g = np.asarray(g)
    se = g.std(axis=0, ddof=1) / math.sqrt(SEEDS)
    assert np.all(np.abs(g.mean(axis=0) - target) < 4 * se), (g.mean(axis=0), target, se)
    assert np.all(se < 0.1 * np.abs(target))  # a sharp test: the standard error is small


def test_tbptt_is_exact_within_truncations_and_has_the_short_horizon_bias():
    # one shared learning rate; a stiff direction (λ = 1) and a slow one (λ = 0.01)
    family = DiagQuadratic(eigvals=(1.0, 0.01), x0=(1.0, 3.0))
    opt = GroupSGD(groups=(0, 0), init_log_lr=(0.0,))
    horizon, trunc = 50, 5
    full = functools.partial(objective, family=family, opt=opt, horizon=horizon)

    def tbptt_closed_form(log_lr):  # mean over the episode's truncations of the truncated gradients
        grads = [
            jax.grad(truncated_objective)(log_lr, family, opt, trunc, t) for t in range(horizon // trunc)
        ]
        return sum(grads) / len(grads)

    grid = jnp.linspace(-1.0, 0.7, 341)[:, None]  # log learning rates
    best = grid[int(jnp.argmin(jax.jit(jax.vmap(full))(grid)))]  # the long-horizon optimum η*
    greedy = grid[
        int(jnp.argmin(jnp.abs(jax.jit(jax.vmap(tbptt_closed_form))(grid)[:, 0])))
    ]  # TBPTT's fixed point
    # short-horizon bias (Wu et al. 2018): truncations prefer a much smaller learning rate ...
    assert float(jnp.exp(greedy[0])) < 0.85 * float(jnp.exp(best[0])), (greedy, best)

    est = get_estimator(
        "tbptt",
        learned=opt,
        family=family,
        static=family.sample_static(None),
        num_particles=2,
        truncation_length=trunc,
        horizon=(horizon, horizon),
        stagger=False,
    )

    @jit
    def episode_mean(log_lr):
        theta = {"log_lr": log_lr}

        def truncation(state, k):
            grad, state, _ = est.estimate(k, theta, state, {})
            return state, grad["log_lr"]

        _, grads = jax.lax.scan(
            truncation,
            est.init(jax.random.key(0), theta, {}),
            jax.random.split(jax.random.key(1), horizon // trunc),
        )
        return jnp.mean(grads, axis=0)

    closed_form = jax.jit(tbptt_closed_form)
    for log_lr in (best, greedy, jnp.asarray([-0.5])):
        np.testing.assert_allclose(episode_mean(log_lr), closed_form(log_lr), rtol=2e-3, atol=1e-6)
    # ... so at η* the full gradient is ~0 while TBPTT's points toward a smaller learning rate
    g_full, g_tbptt = float(jax.jit(jax.grad(full))(best)[0]), float(episode_mean(best)[0])
    assert abs(g_full) < 1e-3 and g_tbptt > 0.01, (g_full, g_tbptt)


def diverging(name: str, **kw):
    return get_estimator(
        name,
        learned=OPT,
        family=FAMILY,
        static=STATIC,
        num_particles=4,
        truncation_length=40,
        horizon=(40, 40),
        stagger=False,
        **kw,
    )


@pytest.mark.parametrize("name", ["es", "tbptt"])
def test_non_finite_particles_never_reach_theta(name):
    theta = {"log_lr": jnp.asarray([math.log(30.0), math.log(30.0)], jnp.float32)}  # |1 − 30λ| ≫ 1: overflow
    est = diverging(name)
    hparams = est.default_hparams()
    grad, _, metrics = jit(est.estimate)(
        jax.random.key(0), theta, est.init(jax.random.key(1), theta, hparams), hparams
    )
    g = np.asarray(grad["log_lr"])
    assert np.all(np.isfinite(g))
    assert int(metrics["num_nonfinite"]) == est.num_unrolls()  # every unroll overflowed
    assert float(metrics["meta_loss"]) == pytest.approx(est.meta_clip, rel=0.05)  # mostly the clip value
    if name == "tbptt":  # NaN gradients through the overflow: every contribution zeroed, counted
        assert int(metrics["num_zeroed"]) == est.num_particles and np.all(g == 0.0)
    else:  # clipped losses keep ES finite: nothing to zero
        assert int(metrics["num_zeroed"]) == 0


QUAD = get_family("quadratic", dims=(4,), log10_condition=(0.0, 1.0))
QUAD_OPT = GroupSGD(init_log_lr=(math.log(0.1), math.log(0.1)))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_contract_shapes_metrics_determinism(name, key):
    est = get_estimator(
        name,
        learned=QUAD_OPT,
        family=QUAD,
        static=QUAD.sample_static(key),
        num_particles=3,
        truncation_length=6,
        horizon=(4, 9),
    )
    theta, hparams = QUAD_OPT.init(None), est.default_hparams()
    state = est.init(jax.random.key(1), theta, hparams)
    estimate = jit(est.estimate)
    grad, state1, metrics = estimate(jax.random.key(2), theta, state, hparams)
    assert jax.tree.structure(grad) == jax.tree.structure(theta)
    assert grad["log_lr"].shape == (2,) and grad["log_lr"].dtype == jnp.float32
    assert np.all(np.isfinite(grad["log_lr"])) and np.any(grad["log_lr"] != 0.0)
    binned = {"phase_sum", "phase_count"}
    assert set(metrics) == {
        "meta_loss",
        "meta_loss_weighted",
        "num_nonfinite",
        "num_zeroed",
        "num_resets",
        "inner_steps",
        "num_dropped",
        *binned,
    }
    assert all(np.shape(v) == () for k, v in metrics.items() if k not in binned)
    assert all(np.shape(metrics[k]) == (PHASE_BINS,) for k in binned)
    # uniform weights: the weighted meta-loss is the plain one; the phase bins hold every counted step
    np.testing.assert_allclose(metrics["meta_loss_weighted"], metrics["meta_loss"], rtol=1e-6)
    np.testing.assert_allclose(
        np.sum(metrics["phase_sum"]) / np.sum(metrics["phase_count"]), metrics["meta_loss"], rtol=1e-5
    )
    assert int(metrics["inner_steps"]) == est.inner_steps_per_estimate()
    assert 0.0 < float(metrics["meta_loss"]) < 1.0 and int(metrics["num_resets"]) > 0
    # the state has a fixed structure: a second estimate reuses the compiled program
    grad2, state2, _ = estimate(jax.random.key(3), theta, state1, hparams)
    assert jax.tree.structure(state2) == jax.tree.structure(state1)
    assert estimate._cache_size() == 1
    # same key, same result, bitwise; another key, another estimate
    again = estimate(jax.random.key(2), theta, state, hparams)
    for a, b in zip(jax.tree.leaves((grad, state1, metrics)), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(grad["log_lr"]), np.asarray(grad2["log_lr"]))


def test_hparams_vmap():
    est = diverging("es")
    theta = THETA
    sigmas = {"sigma": jnp.asarray([0.01, 0.1], jnp.float32)}
    grads, _, metrics = jit(jax.vmap(est.estimate, in_axes=(None, None, None, 0)))(
        jax.random.key(0), theta, est.init(jax.random.key(1), theta, est.default_hparams()), sigmas
    )
    assert grads["log_lr"].shape == (2, 2) and metrics["meta_loss"].shape == (2,)
    assert np.all(np.isfinite(grads["log_lr"])) and not np.allclose(grads["log_lr"][0], grads["log_lr"][1])


def test_registry():
    assert set(ESTIMATORS) == {"es", "pes", "nres", "tbptt"}
    with pytest.raises(UnknownNameError, match="valid estimator names are: es, nres, pes, tbptt"):
        get_estimator("sgd", learned=OPT, family=FAMILY, static=STATIC)
    for name, cls in ESTIMATORS.items():  # one constructor signature; hashable static structure
        est = get_estimator(name, learned=OPT, family=FAMILY, static=STATIC, num_particles=2)
        assert type(est) is cls and est.name == name
        assert est == get_estimator(name, learned=OPT, family=FAMILY, static=STATIC, num_particles=2)
        hash(est)


def test_pes_with_the_mlp_learned_optimizer(key):
    from lopt.optimizers.learned import LEARNED

    learned = LEARNED["mlp"]()
    family = get_family("quadratic", dims=(10,))
    est = get_estimator(
        "pes",
        learned=learned,
        family=family,
        static=family.sample_static(key),
        num_particles=4,
        truncation_length=10,
        horizon=(20, 60),
    )
    theta, hparams = learned.init(key), est.default_hparams()
    outer = optax.adam(1e-3)

    @jit
    def outer_step(key, theta, opt_state, state):
        grad, state, metrics = est.estimate(key, theta, state, hparams)
        updates, opt_state = outer.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, state, metrics

    opt_state, state = outer.init(theta), est.init(key, theta, hparams)
    for i in range(3):
        theta, opt_state, state, metrics = outer_step(jax.random.key(i), theta, opt_state, state)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(theta))
    assert int(metrics["num_nonfinite"]) == 0 and 0.0 < float(metrics["meta_loss"]) < 1.5
