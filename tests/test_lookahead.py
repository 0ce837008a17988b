"""`lookahead` against hand-worked trajectories and the paper's algorithm (a float64 numpy loop)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.optimizers import BASELINES, LookaheadState, lookahead
from lopt.validate import ConfigError

LR, XSTAR, X0 = 0.1, 2.0, 0.0


def loss_1d(x):
    return 0.5 * (x - XSTAR) ** 2  # gradient x − 2


def paper_lookahead_sgd(x0, lr, k, alpha, steps):
    """Zhang et al. 2019, Algorithm 1 with SGD inside, in float64: params after each step."""
    phi = theta = float(x0)
    out = []
    for t in range(steps):
        theta = theta - lr * (theta - XSTAR)  # fast step
        if (t + 1) % k == 0:
            phi = phi + alpha * (theta - phi)  # slow step
            theta = phi  # fast weights restart from the slow ones
        out.append(theta)
    return np.array(out)


def trajectory(opt, x0, steps, **extra):
    """Params after each of ``steps`` updates, inside `lax.scan`."""

    def step(carry, _):
        x, state = carry
        loss, grads = jax.value_and_grad(loss_1d)(x)
        updates, state = opt.update(grads, state, x, **extra)
        x = optax.apply_updates(x, updates)
        return (x, state), x

    return jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)[1]


def test_hand_computed_steps():
    """SGD lr 0.1 on ½(x − 2)² from 0, k = 2, α = ½, worked by hand:
    t1: θ = 0 − 0.1·(−2) = 0.2
    t2: θ' = 0.2 + 0.18 = 0.38; φ = 0 + ½(0.38 − 0) = 0.19; θ = 0.19
    t3: θ = 0.19 + 0.1·1.81 = 0.371
    t4: θ' = 0.371 + 0.1·1.629 = 0.5339; φ = 0.19 + ½(0.5339 − 0.19) = 0.36195; θ = 0.36195
    """
    opt = lookahead(optax.sgd(LR), k=2, alpha=0.5)
    xs = jax.jit(lambda: trajectory(opt, jnp.float32(X0), 4))()
    np.testing.assert_allclose(np.asarray(xs), [0.2, 0.19, 0.371, 0.36195], rtol=1e-6)


@pytest.mark.parametrize("k, alpha", [(2, 0.5), (3, 0.8), (5, 0.3)])
def test_matches_paper_algorithm(k, alpha):
    opt = lookahead(optax.sgd(LR), k=k, alpha=alpha)
    xs = jax.jit(lambda: trajectory(opt, jnp.float32(X0), 20))()
    expected = paper_lookahead_sgd(X0, LR, k, alpha, 20)
    np.testing.assert_allclose(np.asarray(xs), expected, rtol=1e-5, atol=1e-6)


def test_python_loop_state_and_sync_semantics():
    """Eager loop: count is int32 and counts updates; after a sync params == slow weights; between
    syncs the update is the inner optimizer's."""
    k = 3
    opt = lookahead(optax.sgd(LR), k=k, alpha=0.5)
    x = jnp.float32(X0)
    state = opt.init(x)
    assert isinstance(state, LookaheadState)
    assert state.count.dtype == jnp.int32 and state.count.shape == ()
    for t in range(1, 8):
        g = jax.grad(loss_1d)(x)
        updates, state = opt.update(g, state, x)
        if t % k:
            np.testing.assert_allclose(updates, -LR * g, rtol=1e-7)
        x = optax.apply_updates(x, updates)
        assert int(state.count) == t
        if t % k == 0:
            np.testing.assert_allclose(x, state.slow, rtol=1e-7)


def test_k1_alpha1_is_the_inner_optimizer():
    params = {"a": jnp.linspace(-1.0, 1.0, 7), "b": jnp.full((2, 3), 0.5)}

    def loss(p):
        return sum(jnp.sum(jnp.cos(3.0 * v) + v**2) for v in jax.tree.leaves(p))

    def run(opt):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(step, (params, opt.init(params)), None, length=20)[1]

    adam = BASELINES["adam"].make({"learning_rate": 0.05})
    ours, inner = jax.jit(lambda: (run(lookahead(adam, k=1, alpha=1.0)), run(adam)))()
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(inner)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-7, atol=1e-7)


def test_alpha0_resets_to_initial_params_at_every_sync():
    k, x0 = 3, jnp.array([0.5, -1.5, 3.0])
    opt = lookahead(optax.sgd(LR), k=k, alpha=0.0)

    def step(carry, _):
        x, s = carry
        u, s = opt.update(x - XSTAR, s, x)
        x = optax.apply_updates(x, u)
        return (x, s), (x, s.slow)

    xs, slows = jax.jit(lambda: jax.lax.scan(step, (x0, opt.init(x0)), None, length=9)[1])()
    np.testing.assert_array_equal(np.asarray(slows), np.broadcast_to(x0, (9, 3)))  # φ never moves
    for t in range(1, 10):
        if t % k == 0:
            np.testing.assert_allclose(np.asarray(xs[t - 1]), np.asarray(x0), rtol=1e-7, atol=1e-7)
        else:
            assert not np.allclose(np.asarray(xs[t - 1]), np.asarray(x0))


def test_inside_chain_with_clipping():
    """chain(clip, lookahead(sgd)) = lookahead(chain(clip, sgd)): both clip before the inner step."""
    x0 = jnp.array([4.0, -3.0])  # far, so the gradient norm > 1 and clipping binds
    outer = optax.chain(optax.clip_by_global_norm(1.0), lookahead(optax.sgd(LR), k=2, alpha=0.5))
    inner = lookahead(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(LR)), k=2, alpha=0.5)

    def run(opt):
        def step(carry, _):
            x, s = carry
            u, s = opt.update(jax.grad(lambda x: jnp.sum(loss_1d(x)))(x), s, x)
            x = optax.apply_updates(x, u)
            return (x, s), x

        return jax.lax.scan(step, (x0, opt.init(x0)), None, length=10)[1]

    a, b = jax.jit(lambda: (run(outer), run(inner)))()
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7)
    assert float(jnp.linalg.norm(a[0] - x0)) == pytest.approx(LR, rel=1e-5)  # the first step was clipped


def test_vmap_over_alpha():
    alphas = jnp.array([0.0, 0.25, 0.5, 1.0])
    xs = jax.jit(jax.vmap(lambda a: trajectory(lookahead(optax.sgd(LR), k=2, alpha=a), jnp.float32(X0), 12)))(
        alphas
    )
    for row, alpha in zip(np.asarray(xs), [0.0, 0.25, 0.5, 1.0]):
        np.testing.assert_allclose(row, paper_lookahead_sgd(X0, LR, 2, alpha, 12), rtol=1e-5, atol=1e-6)


class _RecordState(NamedTuple):
    last_loss: jax.Array
    last_valid_loss: jax.Array


def _recording_sgd(lr):
    """An inner optimizer whose update requires ``loss=`` and ``valid_loss=`` and records them."""

    def init(params):
        del params
        return _RecordState(jnp.zeros([]), jnp.zeros([]))

    def update(updates, state, params=None, *, loss, valid_loss, **extra):
        del state, params, extra
        new_state = _RecordState(jnp.asarray(loss), jnp.asarray(valid_loss))
        return jax.tree.map(lambda g: -lr * g, updates), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def test_extra_kwargs_are_forwarded():
    opt = lookahead(_recording_sgd(LR), k=2, alpha=0.5)
    x = jnp.float32(X0)
    state = opt.init(x)
    for loss in (3.0, 4.0):
        extras = {"loss": loss, "valid_loss": loss + 1, "step_hint": 7}  # step_hint: ignored by the inner
        u, state = jax.jit(opt.update)(jnp.float32(1.0), state, x, **extras)
        x = optax.apply_updates(x, u)
        assert float(state.inner_state.last_loss) == loss
        assert float(state.inner_state.last_valid_loss) == loss + 1
    with pytest.raises(TypeError, match="loss"):
        opt.update(jnp.float32(1.0), state, x)  # the inner optimizer's required kwargs stay required


def test_state_round_trips_through_numpy():
    """The state is a pytree of arrays: save as numpy leaves, restore, continue identically."""
    opt = lookahead(BASELINES["adam"].make({"learning_rate": 0.1}), k=3, alpha=0.5)
    step = jax.jit(lambda x, s: (lambda u, s: (optax.apply_updates(x, u), s))(*opt.update(x - XSTAR, s, x)))
    x, s = jnp.array([1.0, -1.0]), opt.init(jnp.array([1.0, -1.0]))
    for _ in range(4):
        x, s = step(x, s)
    leaves, treedef = jax.tree.flatten(s)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    restored = jax.tree.unflatten(treedef, [np.asarray(leaf).copy() for leaf in leaves])
    xa, sa, xb, sb = x, s, x, restored
    for _ in range(5):
        xa, sa = step(xa, sa)
        xb, sb = step(xb, sb)
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(xb))


def test_needs_params():
    opt = lookahead(optax.sgd(LR))
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"k": 0}, r"k=0 is out of range: it must be >= 1"),
        ({"k": 2.0}, r"k=2.0 must be a static Python int"),
        ({"k": True}, r"k=True must be a static Python int"),
        ({"alpha": 1.5}, r"alpha=1.5 is out of range: it must be in \[0.0, 1.0\]"),
        ({"alpha": -0.1}, r"alpha=-0.1 is out of range"),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        lookahead(optax.sgd(LR), **kwargs)


def test_traced_alpha_is_not_validated():
    @jax.jit
    def first_update(alpha):
        opt = lookahead(optax.sgd(LR), k=1, alpha=alpha)
        return opt.update(jnp.ones(()), opt.init(jnp.zeros(())), jnp.zeros(()))[0]

    np.testing.assert_allclose(first_update(2.0), -2 * LR, rtol=1e-6)  # φ + 2(θ' − φ), out of [0, 1]
