r"""Hypergradients by the implicit function theorem (IFT) at an approximately converged inner solution.

For w*(λ) = argmin_w L_T(w, λ), the stationarity condition ∇_w L_T(w*, λ) = 0 holds for every λ;
differentiating it gives dw*/dλ = −H⁻¹ ∂²L_T/∂w∂λ with H = ∇²_w L_T(w*, λ), so

.. math::
    \frac{d L_V(w^*(\lambda), \lambda)}{d\lambda}
      = \frac{\partial L_V}{\partial \lambda} - \Big(\frac{\partial^2 L_T}{\partial \lambda\,\partial w}\Big)^{\!\top} q,
    \qquad H q = \nabla_w L_V(w^*).

No unroll is differentiated: the cost is one inverse-Hessian-vector product, computed from
Hessian-vector products (forward-over-reverse, `jax.jvp` of `jax.grad`) by

- conjugate gradient (`cg_solve`): exact after dim(w) iterations for a positive-definite H;
- a Neumann series (`neumann_solve`): H⁻¹ ≈ α Σ_{k=0}^{N} (I − αH)^k, convergent for 0 < α < 2/λ_max(H).

Which hyperparameters. Only those that change the training objective, hence w*: here ``l2``
(`lopt.optimizers.adam8p` adds l2·w to the gradient, the gradient of L_T + ½·l2·‖w‖²). A learning
rate, momentum or β changes how w* is reached, not w* (its implicit hypergradient is 0), and the
fixed point of decoupled weight decay (AdamW) depends on Adam's preconditioner rather than on a
regularized loss; both raise `ConfigError` naming what to use instead (`check_ift_hparams`).

References: Bengio 2000; Pedregosa 2016, "Hyperparameter optimization with approximate gradient"
(ICML); Lorraine, Vicol, Duvenaud 2020, "Optimizing millions of hyperparameters by implicit
differentiation" (AISTATS; the Neumann series); Grosse, CSC2541 lecture on bilevel optimization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from lopt.hpo.space import HParamSpace
from lopt.hpo.unrolled import meta_loss
from lopt.tasks.base import Task
from lopt.validate import ConfigError

PyTree = Any

# hparam -> (the optimizers whose gradient it regularizes, the penalty R(w, λ) it adds to L_T)
IFT_HPARAMS: dict[str, tuple[tuple[str, ...], Callable[[Any, PyTree], jax.Array]]] = {
    "l2": (("adam8p",), lambda lam, w: 0.5 * lam * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(w))),
}
SOLVERS = ("cg", "neumann")


def check_ift_hparams(space: HParamSpace) -> None:
    """Raise `ConfigError` for a tuned hyperparameter the implicit method cannot handle, saying why
    and which one can."""
    for name in space.names:
        if name in IFT_HPARAMS and space.optimizer in IFT_HPARAMS[name][0]:
            continue
        if name == "weight_decay":
            why = (
                "decoupled weight decay's fixed point depends on the optimizer's preconditioner, not on a "
                "regularized training loss"
            )
        elif name in IFT_HPARAMS:
            why = f"{space.optimizer} does not regularize the training loss with {name}"
        else:
            why = (
                f"{name} changes how the minimizer w* of the training loss is reached, not w* itself, "
                "so its implicit hypergradient is 0"
            )
        raise ConfigError(
            f"--method ift cannot tune {name!r} of {space.optimizer}: {why}. The implicit method tunes "
            "regularization hparams: use --optimizer adam8p --hparams l2 (an L2 penalty / weight decay "
            f"on the loss), or tune {name} with --method unrolled or --method pes."
        )


def hvp(loss: Callable[[PyTree], jax.Array], w: PyTree, v: PyTree) -> PyTree:
    """H v for H = ∇²loss(w): forward-over-reverse, one gradient's cost times about 2."""
    return jax.jvp(jax.grad(loss), (w,), (v,))[1]


def cg_solve(
    matvec: Callable[[jax.Array], jax.Array], b: jax.Array, num_iters: int, damping: float = 0.0
) -> jax.Array:
    r"""x ≈ (A + δI)⁻¹ b by ``num_iters`` conjugate-gradient iterations (flat vectors; A symmetric
    positive definite, δ = ``damping``):

    .. math::
        \alpha_k = \frac{r_k^\top r_k}{p_k^\top A p_k},\ x_{k+1} = x_k + \alpha_k p_k,\
        r_{k+1} = r_k - \alpha_k A p_k,\ p_{k+1} = r_{k+1} + \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k} p_k

    Iterations after the residual vanishes are no-ops (guarded divisions)."""

    def a(v):
        return matvec(v) + damping * v

    def body(_, carry):
        x, r, p, rr = carry
        ap = a(p)
        pap = jnp.vdot(p, ap)
        alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        x, r = x + alpha * p, r - alpha * ap
        rr_new = jnp.vdot(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_new

    x0 = jnp.zeros_like(b)
    x, *_ = jax.lax.fori_loop(0, num_iters, body, (x0, b, b, jnp.vdot(b, b)))
    return x


def neumann_solve(
    matvec: Callable[[jax.Array], jax.Array], b: jax.Array, num_iters: int, alpha: float
) -> jax.Array:
    r"""x ≈ A⁻¹ b by the truncated Neumann series x = α Σ_{k=0}^{N} (I − αA)^k b, N = ``num_iters``
    (flat vectors; converges when 0 < α < 2 / λ_max(A), geometrically at rate max|1 − αλ|)."""

    def body(_, carry):
        term, total = carry
        term = term - alpha * matvec(term)  # (I − αA)^k b
        return term, total + term

    _, total = jax.lax.fori_loop(0, num_iters, body, (b, b))
    return alpha * total


def ift_hypergrad(
    train_loss: Callable[[PyTree, PyTree], jax.Array],
    valid_loss: Callable[[PyTree, PyTree], jax.Array],
    w: PyTree,
    lam: PyTree,
    *,
    solver: str = "cg",
    num_iters: int = 100,
    damping: float = 0.0,
    alpha: float = 0.01,
) -> tuple[jax.Array, PyTree]:
    """(L_V(w, λ), dL_V/dλ) of the module docstring at an (approximate) minimizer ``w`` of
    ``train_loss(w, lam)``. ``solver``: "cg" (with ``damping`` δ added to H) or "neumann" (step α)."""
    if solver not in SOLVERS:
        raise ConfigError(f"solver={solver!r} is not valid: choose one of {list(SOLVERS)}.")
    _, unravel = ravel_pytree(w)
    value, (v_w, v_lam) = jax.value_and_grad(valid_loss, argnums=(0, 1))(w, lam)
    v = ravel_pytree(v_w)[0]

    def matvec(x):  # H x on flat vectors
        return ravel_pytree(hvp(lambda p: train_loss(p, lam), w, unravel(x)))[0]

    q = (
        cg_solve(matvec, v, num_iters, damping)
        if solver == "cg"
        else neumann_solve(matvec, v, num_iters, alpha)
    )

    def cross(lam):  # ∇_w L_T(w, λ) · q, whose λ-gradient is (∂²L_T/∂λ∂w)ᵀ q
        return jnp.vdot(ravel_pytree(jax.grad(train_loss)(w, lam))[0], jax.lax.stop_gradient(q))

    mixed = jax.grad(cross)(lam)
    return value, jax.tree.map(lambda a, b: a - b, v_lam, mixed)


def regularized_train_loss(
    key: jax.Array, task: Task, space: HParamSpace, num_batches: int = 4
) -> Callable[[PyTree, PyTree], jax.Array]:
    """L_T(w, theta): the mean training loss on ``num_batches`` fixed batches (drawn from ``key``)
    plus each tuned hparam's penalty (`IFT_HPARAMS`) at the values of theta."""
    check_ift_hparams(space)

    def loss(w, theta):
        base = meta_loss(key, task, w, "train", num_batches)
        values = space.values(theta)
        return base + sum(IFT_HPARAMS[n][1](values[n], w) for n in space.names)

    return loss


def ift_hypergrad_task(
    key: jax.Array,
    task: Task,
    space: HParamSpace,
    theta: PyTree,
    w: PyTree,
    *,
    split: str = "outer_valid",
    num_batches: int = 4,
    solver: str = "cg",
    num_iters: int = 100,
    damping: float = 0.0,
    alpha: float = 0.01,
) -> tuple[jax.Array, PyTree]:
    """(L_V, dL_V/dtheta) by the IFT on a task at params ``w`` (trained to near convergence), with
    L_T = `regularized_train_loss` and L_V the mean loss on ``num_batches`` batches of ``split``."""
    k_train, k_valid = jax.random.split(key)
    train_loss = regularized_train_loss(k_train, task, space, num_batches)
    valid = lambda p, th: meta_loss(k_valid, task, p, split, num_batches)
    return ift_hypergrad(
        train_loss, valid, w, theta, solver=solver, num_iters=num_iters, damping=damping, alpha=alpha
    )
