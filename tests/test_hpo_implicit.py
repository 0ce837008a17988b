"""`lopt.hpo.implicit`: IFT hypergradients (CG and Neumann) against ridge regression's closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.hpo import (
    HParamSpace,
    cg_solve,
    check_ift_hparams,
    ift_hypergrad,
    ift_hypergrad_task,
    neumann_solve,
)
from lopt.hpo.implicit import regularized_train_loss
from lopt.hpo.unrolled import meta_loss
from lopt.tasks import TaskConfig
from lopt.tasks.regression import LinearRegression, LinearRegressionStatic
from lopt.validate import ConfigError


def _ridge(seed=0, n=60, d=6):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    x, xv = jax.random.normal(k1, (n, d)), jax.random.normal(k2, (n, d))
    w_true = jax.random.normal(k3, (d,))
    y = x @ w_true + 0.5 * jax.random.normal(k4, (n,))
    yv = xv @ w_true
    return x, y, xv, yv


def test_solvers_invert_a_spd_matrix():
    a = jax.random.normal(jax.random.key(0), (8, 8))
    a = a @ a.T / 8 + 0.5 * jnp.eye(8)
    b = jnp.arange(8.0)
    ref = jnp.linalg.solve(a, b)
    np.testing.assert_allclose(cg_solve(lambda v: a @ v, b, 8), ref, rtol=1e-3, atol=1e-4)
    alpha = 1.0 / float(jnp.linalg.eigvalsh(a)[-1])
    np.testing.assert_allclose(neumann_solve(lambda v: a @ v, b, 2000, alpha), ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("solver", ["cg", "neumann"])
def test_ift_matches_ridge_closed_form(solver):
    x, y, xv, yv = _ridge()
    n, d = x.shape
    lam = jnp.float32(0.3)
    train = lambda w, lam: 0.5 * jnp.mean((x @ w - y) ** 2) + 0.5 * lam * jnp.sum(w**2)
    valid = lambda w, lam: 0.5 * jnp.mean((xv @ w - yv) ** 2)
    a = x.T @ x / n

    def w_star(lam):  # (XᵀX/N + λI)⁻¹ Xᵀy/N
        return jnp.linalg.solve(a + lam * jnp.eye(d), x.T @ y / n)

    # closed form: dL_V/dλ = −∇L_V(w*)ᵀ (A + λI)⁻¹ w*
    w = w_star(lam)
    g_v = xv.T @ (xv @ w - yv) / n
    closed = -g_v @ jnp.linalg.solve(a + lam * jnp.eye(d), w)
    np.testing.assert_allclose(closed, jax.grad(lambda l: valid(w_star(l), l))(lam), rtol=1e-4)
    alpha = 1.0 / float(jnp.linalg.eigvalsh(a + lam * jnp.eye(d))[-1])
    value, grad = ift_hypergrad(
        train, valid, w, lam, solver=solver, num_iters=d if solver == "cg" else 3000, alpha=alpha
    )
    np.testing.assert_allclose(float(value), float(valid(w, lam)), rtol=1e-6)
    np.testing.assert_allclose(float(grad), float(closed), rtol=2e-3)


def test_ift_on_a_task_matches_the_exact_minimizer():
    family = LinearRegression(l2=(0.0, 0.0))
    static = LinearRegressionStatic("diabetes", None)  # full batch: L_T is one fixed quadratic
    task = family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(0), static)))
    space = HParamSpace.build("adam8p", ("l2",), start={"l2": 0.05}, ranges={"l2": (1e-6, 10.0)})
    theta, key = space.init(), jax.random.key(1)
    k_train, k_valid = jax.random.split(key)
    train = regularized_train_loss(k_train, task, space)
    w0 = task.init(jax.random.key(2))

    def newton(theta):  # the exact minimizer of the quadratic L_T: one Newton step from anywhere
        from jax.flatten_util import ravel_pytree

        flat, unravel = ravel_pytree(w0)
        f = lambda v: train(unravel(v), theta)
        return unravel(flat - jnp.linalg.solve(jax.hessian(f)(flat), jax.grad(f)(flat)))

    ref = jax.grad(lambda th: meta_loss(k_valid, task, newton(th)))(theta)
    _, grad = ift_hypergrad_task(key, task, space, theta, newton(theta), solver="cg", num_iters=40)
    np.testing.assert_allclose(float(grad["l2"]), float(ref["l2"]), rtol=1e-3)
    fd_f = lambda u: meta_loss(k_valid, task, newton({"l2": u}))
    u = theta["l2"]
    np.testing.assert_allclose(float(grad["l2"]), float((fd_f(u + 1e-2) - fd_f(u - 1e-2)) / 2e-2), rtol=2e-2)


def test_ift_on_a_learning_rate_says_why_and_suggests_l2():
    space = HParamSpace.build("adam", ("learning_rate",))
    with pytest.raises(ConfigError) as e:
        check_ift_hparams(space)
    msg = str(e.value)
    assert "does not" in msg or "not w* itself" in msg
    assert "l2" in msg and "adam8p" in msg
    with pytest.raises(ConfigError, match="preconditioner"):
        check_ift_hparams(HParamSpace.build("adamw", ("weight_decay",)))
