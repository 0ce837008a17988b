"""The noisy quadratic model: closed-form dynamics against the textbook formula and Monte Carlo,
and the learning-rate hypergradient of `lopt.hpo` against the closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.hpo import HParamSpace, unrolled_hypergrad
from lopt.tasks import TaskConfig, get_family
from lopt.tasks.nqm import (
    NQM,
    NQMStatic,
    curvatures,
    expected_losses,
    sgd_expected_loss,
    task_expected_losses,
)


def _task(dim=16, batch_size=4, seed=0):
    family = NQM()
    static = NQMStatic(dim, batch_size)
    return family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(seed), static)))


def test_registered():
    assert isinstance(get_family("nqm"), NQM)


def test_batch_loss_is_unbiased_with_noise_covariance_h_over_b():
    task = _task(dim=5, batch_size=4)
    params = {"x": jnp.linspace(-1.0, 1.0, 5)}
    h = curvatures(5, task.dynamic["exponent"])
    keys = jax.random.split(jax.random.key(1), 20000)
    losses, grads = jax.vmap(lambda k: jax.value_and_grad(task.loss)(params, k, task.batch(k, "train")))(keys)
    exact = task.loss(params, keys[0], task.batch(keys[0], "test"))
    np.testing.assert_allclose(float(exact), float(0.5 * jnp.sum(h * params["x"] ** 2)), rtol=1e-6)
    assert abs(float(jnp.mean(losses)) - float(exact)) < 4 * float(jnp.std(losses)) / np.sqrt(20000)
    noise = grads["x"] - (h * params["x"])[None]  # (S, n)
    np.testing.assert_allclose(jnp.var(noise, axis=0), h / 4, rtol=0.05)


@pytest.mark.parametrize("lr", [0.05, 0.5, 1.5])
def test_recursion_matches_sgd_closed_form(lr):
    task = _task()
    h = curvatures(16, task.dynamic["exponent"])
    losses = task_expected_losses(task, jnp.full((50,), lr))
    for t in (0, 1, 7, 50):
        ref = sgd_expected_loss(h, task.dynamic["x0"], lr, 4, t)
        np.testing.assert_allclose(float(losses[t]), float(ref), rtol=1e-4)


def test_recursion_matches_monte_carlo_of_sgd_with_momentum():
    task = _task(dim=8, batch_size=2)
    lr, mu, steps, num = 0.3, 0.8, 30, 4000
    opt = optax.sgd(lr, momentum=mu)

    def run(key):
        def step(carry, k):
            params, state = carry
            g = jax.grad(task.loss)(params, k, task.batch(k, "train"))
            u, state = opt.update(g, state, params)
            params = optax.apply_updates(params, u)
            return (params, state), task.loss(params, k, task.batch(k, "test"))

        params = task.init(key)
        return jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))[1]

    sampled = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(2), num))  # (S, T)
    exact = task_expected_losses(task, jnp.full((steps,), lr), mu)[1:]
    se = jnp.std(sampled, axis=0) / np.sqrt(num)
    assert np.all(np.abs(np.asarray(jnp.mean(sampled, axis=0) - exact)) < 4 * np.asarray(se) + 1e-6)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("momentum", 0.6)])
def test_lr_hypergradient_matches_closed_form(optimizer, momentum):
    task = _task(dim=16, batch_size=8)
    steps, num = 25, 2000
    fixed = {} if optimizer == "sgd" else {"momentum": momentum}
    space = HParamSpace.build(optimizer, ("learning_rate",), start={"learning_rate": 0.4}, fixed=fixed)
    theta = space.init()
    # closed form: d E[L(x_T)] / d log η through the exact recursion
    closed = jax.grad(lambda u: task_expected_losses(task, jnp.full((steps,), jnp.exp(u)), momentum)[-1])(
        theta["learning_rate"]
    )
    if optimizer == "sgd":  # the textbook formula agrees
        h = curvatures(16, task.dynamic["exponent"])
        textbook = jax.grad(lambda u: sgd_expected_loss(h, task.dynamic["x0"], jnp.exp(u), 8, steps))(
            theta["learning_rate"]
        )
        np.testing.assert_allclose(float(closed), float(textbook), rtol=1e-4)
    one = lambda k: unrolled_hypergrad(k, task, space, theta, steps, "test", 1)[1]["learning_rate"]
    grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), num))  # (S,) sampled hypergradients
    mean, se = float(jnp.mean(grads)), float(jnp.std(grads)) / np.sqrt(num)
    assert abs(mean - float(closed)) < 4 * se, (mean, float(closed), se)
    assert se < 0.1 * abs(float(closed))  # the check has teeth: the estimate is tight


def test_expected_losses_with_a_schedule_differentiates_per_step():
    task = _task()
    lrs = jnp.full((20,), 0.3)
    g = jax.grad(lambda lrs: task_expected_losses(task, lrs)[-1])(lrs)
    assert g.shape == (20,) and np.all(np.isfinite(g))
    # a step's rate changes the final loss in the same way as the chain of one-step maps
    eps = 1e-3
    bumped = task_expected_losses(task, lrs.at[5].add(eps))[-1]
    np.testing.assert_allclose(
        float(g[5]), float((bumped - task_expected_losses(task, lrs)[-1]) / eps), rtol=2e-2
    )


def test_expected_losses_rejects_nothing_and_is_finite_when_diverging():
    h = jnp.ones((3,))
    out = expected_losses(h, jnp.ones((3,)), jnp.full((10,), 3.0), 0.0, 1.0)  # |1 − η h| = 2: diverges
    assert np.all(np.diff(np.asarray(out)) > 0)
