"""`lopt.unroll`: restarts at the horizon, staggering, antithetic twins, loss feeds, the meta-loss
normalization and clipping, determinism. Hand-checked on the quadratic family with a plain SGD
whose learning rate is theta."""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.tasks.registry import get_family
from lopt.unroll import Unroller, first_segment, normalize_meta_loss
from lopt.validate import ConfigError


@dataclasses.dataclass(frozen=True)
class SGD:
    """u = −exp(log_lr)·g; theta = {"log_lr": scalar}."""

    log_lr: float = -2.0

    def init(self, key):
        return {"log_lr": jnp.float32(self.log_lr)}

    def transform(self, theta):
        def update(grads, state, params=None, **extra):
            return jax.tree.map(lambda g: -jnp.exp(theta["log_lr"]) * g, grads), state

        return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


class FeedCount(NamedTuple):
    losses: jax.Array  # finite ``loss=`` received
    valids: jax.Array  # finite ``valid_loss=`` received
    last_valid: jax.Array


@dataclasses.dataclass(frozen=True)
class Recorder:
    """SGD that counts the loss features it is fed."""

    def init(self, key):
        return {"log_lr": jnp.float32(-2.0)}

    def transform(self, theta):
        def init(params):
            z = jnp.zeros([], jnp.int32)
            return FeedCount(z, z, jnp.float32(0.0))

        def update(grads, state, params=None, *, loss=None, valid_loss=None, **extra):
            ok = jnp.isfinite(valid_loss)
            state = FeedCount(
                state.losses + jnp.isfinite(loss).astype(jnp.int32),
                state.valids + ok.astype(jnp.int32),
                jnp.where(ok, valid_loss, state.last_valid),
            )
            return jax.tree.map(lambda g: -jnp.exp(theta["log_lr"]) * g, grads), state

        return optax.GradientTransformationExtraArgs(init, update)


# noise-free (train loss = valid loss), curvatures in [1, 10]
FAMILY = get_family("quadratic", dims=(4,), noise=(0.0, 0.0), log10_condition=(0.0, 1.0))
STATIC = FAMILY.sample_static(jax.random.key(0))
THETA = SGD().init(None)


# Tests compile about twice as fast without LLVM's optimizations; at these sizes run time is nil.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def make(**kw) -> Unroller:
    kw = {"horizon": (5, 5), "stagger": False, **kw}
    return Unroller(kw.pop("learned", SGD()), FAMILY, STATIC, **kw)


@jax.jit
def _quadratic_loss(dynamic, x):
    d = dynamic
    z = d["rotation"].T @ (x - d["center"])
    return 0.5 * jnp.sum(d["eigvals"] * z**2)


def test_restart_at_the_horizon_hand_checked(key):
    unroller = make()  # H = 5, no staggering
    state = unroller.init(THETA, 3)
    assert np.all(np.asarray(state.step) >= np.asarray(state.horizon))  # not started: start at step 0
    run = jit(lambda k, s: unroller.unroll(k, s, THETA, 6))
    s1, out1 = run(key, state)
    s2, out2 = run(jax.random.key(1), s1)
    done = np.concatenate([out1.done, out2.done])  # (12, 3)
    np.testing.assert_array_equal(np.nonzero(done[:, 0])[0], [4, 9])  # steps 5 and 10 end episodes
    assert np.all(done == done[:, :1])
    np.testing.assert_array_equal(s1.step, [1, 1, 1])  # 6 = 5 + 1
    np.testing.assert_array_equal(s1.episodes, [2, 2, 2])
    np.testing.assert_array_equal(s2.step, [2, 2, 2])  # 12 = 5 + 5 + 2
    np.testing.assert_array_equal(s2.episodes, [3, 3, 3])
    assert not np.allclose(s1.task["center"][0], s1.task["center"][1])  # particles: different tasks

    # the restart at step 6 (j = 5): a fresh task, fresh params; the first training loss is the new
    # task's loss at its x0, which is also L_0; one SGD step later the params are x0 − lr·∇f(x0)
    lr = float(np.exp(THETA["log_lr"]))
    for i in range(3):
        assert not np.allclose(s2.task["center"][i], s1.task["center"][i])  # fresh dynamic values
        dyn = jax.tree.map(operator.itemgetter(i), s1.task)
        x0 = s1.task["x0"][i]
        np.testing.assert_allclose(out1.loss[5, i], _quadratic_loss(dyn, x0), rtol=1e-5)
        np.testing.assert_allclose(s1.init_loss[i], _quadratic_loss(dyn, x0), rtol=1e-5)
        x1 = x0 - lr * jax.grad(_quadratic_loss, argnums=1)(dyn, x0)
        np.testing.assert_allclose(s1.params["x"][i], x1, rtol=1e-5, atol=1e-6)


def test_horizons_are_log_uniform_between_the_bounds(key):
    unroller = make(horizon=(10, 1000))
    h = np.asarray(jax.jit(jax.vmap(unroller.sample_horizon))(jax.random.split(key, 4000)))
    assert h.min() >= 10 and h.max() <= 1000
    assert abs(np.median(h) - 100) < 12  # log-uniform: the median is √(10·1000) = 100
    assert abs(np.mean(h < 31.6) - 0.25) < 0.03  # a quarter of the log-range
    with pytest.raises(ConfigError, match="horizon"):
        make(horizon=(10, 5))


def test_stagger_cuts_first_episodes_only(key):
    unroller = make(horizon=(10, 10), stagger=True)
    state = unroller.init(THETA, 64)
    _, out = jit(lambda k, s: unroller.unroll(k, s, THETA, 25))(key, state)
    done = np.asarray(out.done)  # (25, 64)
    first = np.argmax(done, axis=0)  # step of each particle's first end
    assert done[:10].any(axis=0).all()  # every first episode lasts at most H
    assert len(np.unique(first)) >= 8  # spread over the 10 possible lengths
    for i in range(64):  # later episodes have the full length
        expect = [t for t in (first[i], first[i] + 10, first[i] + 20) if t < 25]
        np.testing.assert_array_equal(np.nonzero(done[:, i])[0], expect)


def test_losses_fed_to_the_optimizer(key):
    unroller = make(learned=Recorder(), horizon=(100, 100), valid_every=3)
    state = unroller.init(THETA, 2)
    state, out = jit(lambda k, s: unroller.unroll(k, s, THETA, 10))(key, state)
    np.testing.assert_array_equal(state.opt_state.losses, [10, 10])  # loss= every step
    np.testing.assert_array_equal(state.opt_state.valids, [4, 4])  # valid_loss= at j = 0, 3, 6, 9
    # the last inner-valid loss fed is the noise-free loss before step 9
    np.testing.assert_allclose(state.opt_state.last_valid, out.loss[9], rtol=1e-6)


def test_meta_loss_normalization_and_clipping():
    f = jax.jit(normalize_meta_loss, static_argnames=("reference", "clip"))
    np.testing.assert_allclose(f(jnp.float32(0.5), jnp.float32(2.0)), 0.25, rtol=1e-5)  # L / L_0
    np.testing.assert_allclose(f(jnp.float32(10.0), jnp.float32(1.0)), 3.0)  # clipped at c
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        assert float(f(jnp.float32(bad), jnp.float32(1.0), clip=5.0)) == 5.0  # non-finite → c
    assert float(f(jnp.float32(1.0), jnp.float32(jnp.nan))) == 3.0  # a non-finite L_0 too
    # negative losses with a reference: (L − L_ref) / |L_0 − L_ref|
    np.testing.assert_allclose(f(jnp.float32(-1.5), jnp.float32(-1.0), reference=-2.0), 0.5, rtol=1e-5)
    np.testing.assert_allclose(f(jnp.float32(-2.5), jnp.float32(-1.0), reference=-2.0), -0.5, rtol=1e-5)
    np.testing.assert_allclose(f(jnp.float32(-100.0), jnp.float32(-1.0), reference=-2.0), -3.0)


def test_meta_loss_in_the_unroll_is_relative_and_clipped(key):
    unroller = make(horizon=(30, 30), meta_clip=2.0)
    thetas = {"log_lr": jnp.asarray([-2.0, 3.0], jnp.float32)}  # particle 1 diverges (lr = 20)
    state = unroller.init(thetas, 2, theta_axis=0)
    state, out = jit(lambda k, s: unroller.unroll(k, s, thetas, 30, theta_axis=0))(key, state)
    ml = np.asarray(out.meta_loss)
    assert np.all(np.isfinite(ml)) and ml.max() <= 2.0
    assert np.all(ml[:, 0] < 1.0) and np.all(np.diff(ml[:, 0]) <= 1e-6)  # converging: below L_0
    assert np.all(ml[-5:, 1] == 2.0)  # diverged (inf/NaN): the clip value
    assert not np.asarray(out.finite)[:, 1].all() and np.asarray(out.finite)[:, 0].all()
    # the meta-loss is L(w_{t+1}) / L_0 on the (noise-free) outer-valid split
    train = make(horizon=(30, 30), meta_split="train")
    state = train.init(thetas, 2, theta_axis=0)
    _, out_t = jit(lambda k, s: train.unroll(k, s, thetas, 30, theta_axis=0))(key, state)
    np.testing.assert_allclose(
        out_t.meta_loss[1:, 0], out.meta_loss[:-1, 0], rtol=1e-5
    )  # train: before the update
    np.testing.assert_allclose(out_t.meta_loss[0, 0], 1.0, rtol=1e-6)


def test_antithetic_twins_share_tasks_and_restarts(key):
    unroller = make(horizon=(3, 8), stagger=True)
    thetas = {"log_lr": jnp.asarray([-2.0, -2.5, -1.5, -3.0], jnp.float32)}  # [θ+ε1, θ+ε2, θ−ε1, θ−ε2]
    state = unroller.init(thetas, 4, theta_axis=0)
    state, out = jit(lambda k, s: unroller.unroll(k, s, thetas, 20, theta_axis=0, antithetic=True))(
        key, state
    )
    np.testing.assert_array_equal(out.done[:, :2], out.done[:, 2:])
    np.testing.assert_array_equal(state.task["center"][:2], state.task["center"][2:])
    np.testing.assert_array_equal(state.horizon[:2], state.horizon[2:])
    assert not np.allclose(state.params["x"][:2], state.params["x"][2:])  # different thetas
    assert not np.allclose(state.task["center"][0], state.task["center"][1])  # different pairs


def test_same_key_same_result_bitwise(key):
    unroller = make(horizon=(3, 20), stagger=True)
    state = unroller.init(THETA, 4)
    run = jit(lambda k, s: unroller.unroll(k, s, THETA, 15))
    a, b = run(key, state), run(key, state)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    c = run(jax.random.key(1), state)
    assert not np.array_equal(np.asarray(a[1].loss), np.asarray(c[1].loss))


def test_first_segment():
    done = jnp.asarray([[0, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 0]], bool)  # (K=4, N=3)
    np.testing.assert_array_equal(first_segment(done), [[1, 1, 1], [1, 1, 0], [0, 1, 0], [0, 1, 0]])
