"""`lopt.hpo` core: the hparam space, unrolled and truncated hypergradients against `jax.grad`
through a hand-written unroll and against finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.hpo import (
    HParamSpace,
    inner_init,
    inner_steps,
    online_tune,
    truncated_hypergrad,
    unrolled_hypergrad,
    unrolled_loss,
)
from lopt.hpo.unrolled import meta_loss
from lopt.tasks import TaskConfig
from lopt.tasks.quadratic import Quadratic, QuadraticStatic
from lopt.validate import ConfigError


def _quadratic(noise=0.5, dim=4):
    family = Quadratic(dims=(dim,), log10_condition=(1.0, 1.0), noise=(noise, noise))
    static = QuadraticStatic(dim)
    return family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(3), static)))


def test_unknown_hparam_lists_the_optimizers_hparams():
    with pytest.raises(ConfigError) as e:
        HParamSpace.build("adam", ("learning_rate", "weight_decay"))
    for name in ("learning_rate", "b1", "b2", "eps"):
        assert name in str(e.value)
    assert "weight_decay" in str(e.value)


def test_range_excluding_start_says_which():
    with pytest.raises(
        ConfigError, match=r"start value learning_rate=0.001 is outside its range \[0.01, 1\]"
    ):
        HParamSpace.build("adam", ("learning_rate",), ranges={"learning_rate": (1e-2, 1.0)})
    with pytest.raises(ConfigError, match="valid range of learning_rate"):
        HParamSpace.build("adam", ("learning_rate",), ranges={"learning_rate": (1e-3, 100.0)})


def test_log_space_roundtrip_and_values_never_leave_range():
    space = HParamSpace.build(
        "momentum", ("learning_rate", "momentum"), start={"learning_rate": 0.1, "momentum": 0.9}
    )
    theta = space.init()
    np.testing.assert_allclose(float(theta["learning_rate"]), math.log(0.1), rtol=1e-6)
    np.testing.assert_allclose(float(theta["momentum"]), math.log(0.1), rtol=1e-5)  # log(1 - 0.9)
    vals = space.describe(theta)
    np.testing.assert_allclose([vals["learning_rate"], vals["momentum"]], [0.1, 0.9], rtol=1e-5)
    for extreme in (-1e3, 1e3):
        v = space.describe({k: jnp.float32(extreme) for k in theta})
        for name, (lo, hi) in zip(space.names, space.ranges):
            assert lo * (1 - 1e-5) <= v[name] <= hi * (1 + 1e-5), (name, v[name])


def test_zero_default_starts_inside_log_range():
    space = HParamSpace.build("adam8p", ("l2",), ranges={"l2": (1e-6, 1.0)})
    np.testing.assert_allclose(space.start[0], 1e-3, rtol=1e-9)


def test_unrolled_hypergrad_matches_handwritten_unroll_and_finite_differences():
    task = _quadratic()
    space = HParamSpace.build(
        "momentum", ("learning_rate", "momentum"), start={"learning_rate": 0.05, "momentum": 0.5}
    )
    theta, key, steps = space.init(), jax.random.key(0), 20

    def by_hand(theta):  # optax.sgd written out: v = μ v + g, w = w − η v
        k_init, k_train, k_meta = jax.random.split(key, 3)
        lr, mu = jnp.exp(theta["learning_rate"]), 1.0 - jnp.exp(theta["momentum"])
        w = task.init(k_init)
        v = jax.tree.map(jnp.zeros_like, w)
        for k in jax.random.split(k_train, steps):
            k_b, k_l = jax.random.split(k)
            g = jax.grad(task.loss)(w, k_l, task.batch(k_b, "train"))
            v = jax.tree.map(lambda a, b: mu * a + b, v, g)
            w = jax.tree.map(lambda a, b: a - lr * b, w, v)
        ks = jax.random.split(k_meta, 4)
        return jnp.mean(
            jnp.stack(
                [
                    task.loss(w, jax.random.split(k)[1], task.batch(jax.random.split(k)[0], "outer_valid"))
                    for k in ks
                ]
            )
        )

    loss, grad = jax.jit(unrolled_hypergrad, static_argnums=(2, 4))(key, task, space, theta, steps)
    ref_loss, ref = jax.value_and_grad(by_hand)(theta)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    for n in space.names:
        np.testing.assert_allclose(float(grad[n]), float(ref[n]), rtol=1e-4, atol=1e-7)
    f = jax.jit(lambda th: unrolled_loss(key, task, space, th, steps))
    for n in space.names:
        d = 1e-3
        fd = (f({**theta, n: theta[n] + d}) - f({**theta, n: theta[n] - d})) / (2 * d)
        np.testing.assert_allclose(float(grad[n]), float(fd), rtol=2e-2, atol=1e-5)


def test_truncated_hypergrad_is_the_gradient_of_the_window_alone():
    task = _quadratic()
    space = HParamSpace.build("adam", ("learning_rate",), start={"learning_rate": 0.03})
    theta, key = space.init(), jax.random.key(1)
    k_init, k_pre, k_win = jax.random.split(key, 3)
    state, _ = inner_steps(k_pre, task, space, theta, inner_init(k_init, task, space, theta), 15)
    _, grad, new, losses = truncated_hypergrad(k_win, task, space, theta, state, 10)
    assert int(new.step) == 25 and losses.shape == (10,)

    def window(u):  # the same 10 steps from the same (fixed) state, differentiated by hand
        k_train, k_meta = jax.random.split(k_win)
        th = {"learning_rate": u}
        s, _ = inner_steps(k_train, task, space, th, state, 10)
        return meta_loss(k_meta, task, s.params)

    u = theta["learning_rate"]
    np.testing.assert_allclose(float(grad["learning_rate"]), float(jax.grad(window)(u)), rtol=1e-5)
    fd = (window(u + 1e-3) - window(u - 1e-3)) / 2e-3
    np.testing.assert_allclose(float(grad["learning_rate"]), float(fd), rtol=2e-2)


def test_online_tune_raises_a_too_small_learning_rate_and_stays_in_range():
    task = _quadratic(noise=0.0)
    space = HParamSpace.build(
        "sgd", ("learning_rate",), start={"learning_rate": 1e-4}, ranges={"learning_rate": (1e-5, 0.05)}
    )
    trace = jax.jit(online_tune, static_argnums=(2,), static_argnames=("num_steps", "truncation"))(
        jax.random.key(0), task, space, space.init(), num_steps=200, truncation=10, outer_lr=0.3
    )
    lrs = np.exp(np.asarray(trace.theta["learning_rate"]))
    assert lrs.shape == (20,)
    assert lrs[-1] > 30 * lrs[0]  # the hypergradient pushes a far-too-small rate up
    assert np.all(lrs <= 0.05 * (1 + 1e-5))
    assert float(trace.meta_loss[-1]) < float(trace.meta_loss[0])
