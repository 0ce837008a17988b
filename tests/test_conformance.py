"""One conformance suite over every registered optimizer (docs/design.md habit 11, like optax's alias_test.py).

`OPTIMIZERS` lists (name, factory) pairs; a factory maps an hparams dict (or None) to an optax
transformation. It is built from `BASELINES` plus Lookahead-wrapped adam and sgd; learned
optimizers join by appending their factories. Every entry needs its test hparams in
`TEST_HPARAMS` (`test_every_optimizer_has_test_hparams` says so when one is missing).

Problems: a 10-d diagonal quadratic (curvatures 0.5..2, minimum x* = linspace(-1, 2), start at 1)
and Rosenbrock f = (1 − x)² + 100 (y − x²)² from (−1.2, 1), where f = 24.2, to the minimum at (1, 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.optimizers import BASELINES, lookahead
from lopt.optimizers.baselines import bind_num_steps

Factory = Callable[[dict[str, Any] | None], optax.GradientTransformationExtraArgs]


def _factory(
    b,
):  # a horizon-aware baseline (adam_cosine) is told T = QUAD_STEPS unless the loop says otherwise
    return lambda hp=None: bind_num_steps(b.make(hp), QUAD_STEPS)


OPTIMIZERS: list[tuple[str, Factory]] = [(name, _factory(b)) for name, b in BASELINES.items()] + [
    ("lookahead_adam", lambda hp=None: lookahead(BASELINES["adam"].make(hp), k=5, alpha=0.5)),
    ("lookahead_sgd", lambda hp=None: lookahead(BASELINES["sgd"].make(hp), k=5, alpha=0.5)),
]
NAMES = [name for name, _ in OPTIMIZERS]
FACTORIES = dict(OPTIMIZERS)

# Learning rates picked from a grid (1e-3 .. 1) in the middle of each optimizer's good range, not at
# its edge: Rosenbrock's stable SGD step is ~1e-3 (curvature ~1000 at the start), adaptive methods
# take larger ones; Adagrad's accumulated denominator wants a large base rate.
TEST_HPARAMS: dict[str, dict[str, dict[str, float]]] = {
    "sgd": {"quadratic": {"learning_rate": 0.3}, "rosenbrock": {"learning_rate": 1.5e-3}},
    "momentum": {"quadratic": {"learning_rate": 0.1}, "rosenbrock": {"learning_rate": 1e-3}},
    "nesterov": {"quadratic": {"learning_rate": 0.1}, "rosenbrock": {"learning_rate": 7e-4}},
    "adam": {"quadratic": {"learning_rate": 0.1}, "rosenbrock": {"learning_rate": 3e-2}},
    "adam_cosine": {"quadratic": {"learning_rate": 0.2}, "rosenbrock": {"learning_rate": 5e-2}},
    "adamw": {"quadratic": {"learning_rate": 0.1}, "rosenbrock": {"learning_rate": 2e-2}},
    "nadamw": {"quadratic": {"learning_rate": 0.1}, "rosenbrock": {"learning_rate": 2e-2}},
    "rmsprop": {"quadratic": {"learning_rate": 0.03}, "rosenbrock": {"learning_rate": 2e-3}},
    "adagrad": {"quadratic": {"learning_rate": 0.5}, "rosenbrock": {"learning_rate": 0.3}},
    "adafactor": {"quadratic": {"learning_rate": 0.05}, "rosenbrock": {"learning_rate": 1e-2}},
    "adam8p": {"quadratic": {"learning_rate": 0.1}, "rosenbrock": {"learning_rate": 3e-2}},
    "lookahead_adam": {"quadratic": {"learning_rate": 0.3}, "rosenbrock": {"learning_rate": 3e-2}},
    "lookahead_sgd": {"quadratic": {"learning_rate": 0.5}, "rosenbrock": {"learning_rate": 2e-3}},
}

QUAD_STEPS, QUAD_TOL = 300, 1e-3  # max |x − x*| after 300 steps; the start is 2 away
ROSEN_STEPS, ROSEN_LOSS = 5000, 0.05  # f < 0.05 (from 24.2) means past the valley's bend, near (1, 1)

_CURV = jnp.linspace(0.5, 2.0, 10)  # (10,)
_XSTAR = jnp.linspace(-1.0, 2.0, 10)  # (10,)
_X0 = jnp.ones(10)


def quadratic(x):
    return 0.5 * jnp.sum(_CURV * (x - _XSTAR) ** 2)


def rosenbrock(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def structured_loss(params):
    """A loss on a dict of params of several shapes (a 130×129 matrix makes Adafactor factor)."""
    return sum(jnp.sum((p.astype(jnp.float32) - 0.5) ** 2) for p in jax.tree.leaves(params))


def structured_params(dtype=jnp.float32):
    return {"w": jnp.full((130, 129), 0.1, dtype), "b": jnp.zeros((3,), dtype), "s": jnp.ones((), dtype)}


def minimize(opt, loss_fn, x0, steps):
    """Params after ``steps`` updates inside `lax.scan`, passing ``loss=`` as learned optimizers want."""

    def step(carry, _):
        x, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(x)
        updates, state = opt.update(grads, state, x, loss=loss, num_steps=steps)
        return (optax.apply_updates(x, updates), state), loss

    (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)
    return x


def signature(tree):
    """Structure, shapes, dtypes and weak types of a pytree (a weak-type flip also recompiles)."""
    return jax.tree.structure(tree), [jax.typeof(x) for x in jax.tree.leaves(tree)]


def test_every_optimizer_has_test_hparams():
    missing = sorted(set(NAMES) - set(TEST_HPARAMS))
    assert not missing, f"add test hparams for {missing} to TEST_HPARAMS"


@pytest.mark.parametrize("name", NAMES)
def test_quadratic_reaches_minimum(name):
    opt = FACTORIES[name](TEST_HPARAMS[name]["quadratic"])
    x = jax.jit(lambda: minimize(opt, quadratic, _X0, QUAD_STEPS))()
    np.testing.assert_array_less(np.abs(np.asarray(x - _XSTAR)), QUAD_TOL)


@pytest.mark.parametrize("name", NAMES)
def test_rosenbrock_progress(name):
    opt = FACTORIES[name](TEST_HPARAMS[name]["rosenbrock"])
    x = jax.jit(lambda: minimize(opt, rosenbrock, jnp.array([-1.2, 1.0]), ROSEN_STEPS))()
    loss = float(rosenbrock(x))
    assert loss < ROSEN_LOSS, f"{name}: Rosenbrock loss {loss:.3g} after {ROSEN_STEPS} steps (from 24.2)"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_state_and_dtypes_stable(name, dtype):
    """After 3 jitted updates: same state structure, shapes and dtypes; params keep their dtype."""
    opt = FACTORIES[name](TEST_HPARAMS[name]["quadratic"])
    params = structured_params(dtype)
    state0 = opt.init(params)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(structured_loss)(params), state, params)
        assert signature(updates) == signature(params)
        return optax.apply_updates(params, updates), state

    new_params, state = params, state0
    for _ in range(3):
        new_params, state = step(new_params, state)
    assert signature(state) == signature(state0)
    assert signature(new_params) == signature(params)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(new_params))


@pytest.mark.parametrize("name", NAMES)
def test_extra_args_accepted(name):
    opt = FACTORIES[name](TEST_HPARAMS[name]["quadratic"])
    state = opt.init(_X0)
    grads = jax.grad(quadratic)(_X0)
    updates, new_state = jax.jit(lambda g, s, x: opt.update(g, s, x, loss=quadratic(x), valid_loss=1.5))(
        grads, state, _X0
    )
    assert signature(new_state) == signature(state)
    assert bool(jnp.all(jnp.isfinite(updates)))


@pytest.mark.parametrize("name", NAMES)
def test_composes_with_chain_and_lookahead(name):
    """Inside `optax.chain(clip, opt)` and `lookahead(opt)` it still gets within 0.05 of the quadratic's
    minimum (the start is 2 away; Lookahead's averaging slows some optimizers' last digits)."""
    hparams = TEST_HPARAMS[name]["quadratic"]
    wrapped = {
        "chain": optax.chain(optax.clip_by_global_norm(1.0), FACTORIES[name](hparams)),
        "lookahead": lookahead(FACTORIES[name](hparams), k=5, alpha=0.5),
    }
    final = jax.jit(lambda: {k: minimize(o, quadratic, _X0, QUAD_STEPS) for k, o in wrapped.items()})()
    for kind, x in final.items():
        err = float(jnp.max(jnp.abs(x - _XSTAR)))
        assert err < 5e-2, f"{name} inside {kind}: max |x − x*| = {err:.3g} after {QUAD_STEPS} steps"


@pytest.mark.parametrize("name", NAMES)
def test_jitted_step_compiles_once_and_matches_scan(name):
    """Repeated jitted updates trace once; `lax.scan` over steps gives the same trajectory."""
    opt = FACTORIES[name](TEST_HPARAMS[name]["quadratic"])
    traces = []

    @jax.jit
    def step(x, state):
        traces.append(1)  # runs only while tracing
        loss, grads = jax.value_and_grad(quadratic)(x)
        updates, state = opt.update(grads, state, x, loss=loss, num_steps=5)  # T as `minimize` passes it
        return optax.apply_updates(x, updates), state

    x, state = _X0, opt.init(_X0)
    for _ in range(5):
        x, state = step(x, state)
    assert len(traces) == 1, f"{name}: the jitted step was traced {len(traces)} times in 5 calls"
    x_scan = jax.jit(lambda: minimize(opt, quadratic, _X0, 5))()
    # atol 1e-6: a per-tensor normalized update (hierarchical_v2) reassociates its RMS reduction
    # differently in the two programs; 5 steps of size ~1e-1 leave ~5e-7 of rounding
    np.testing.assert_allclose(np.asarray(x_scan), np.asarray(x), rtol=1e-6, atol=1e-6)


# --- learned optimizers ----------------------------------------------------------------------------
# Every registered learned optimizer joins twice: at its initial theta (``init(key)``) and at a random
# theta (init + N(0, 1) noise on every entry of theta, far beyond an ES perturbation). Their factories
# ignore hparams: a learned optimizer has none for the user.
#
# What they must satisfy, and why it differs from the hand-designed ones above:
# * everything structural, exactly as above, at both thetas: state structure, shapes and dtypes stable
#   in float32 and bfloat16, extra args accepted, one trace for repeated jitted steps, `lax.scan`
#   equal to the jitted loop (`test_learned_structural` runs the tests above on them);
# * at the initial theta, progress, not convergence: an untrained learned optimizer takes steps of
#   about c_step = 1e-3 per parameter (Metz et al. 2020's small output scale), so 300 steps cannot
#   cross the quadratic's distance of 2. It must cut the quadratic's loss by 20% in 300 steps -- alone,
#   inside `optax.chain(clip, ·)` and inside Lookahead -- and halve Rosenbrock's in 5000 steps;
# * at a random theta, an optimizer is an arbitrary learned dynamical system that may well ascend: it
#   must stay finite (params and loss) over the same runs.
from lopt.optimizers.learned import LEARNED  # noqa: E402


def _random_theta(theta):
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    )


def _learned_factory(name: str, which: str) -> Factory:
    learned = LEARNED[name]()
    theta = learned.init(jax.random.key(0))
    theta = theta if which == "init" else _random_theta(theta)
    return lambda hp=None: learned.transform(theta, num_steps=QUAD_STEPS)


LEARNED_OPTIMIZERS: list[tuple[str, Factory]] = [
    (f"{name}@{which}", _learned_factory(name, which)) for name in LEARNED for which in ("init", "random")
]
LEARNED_NAMES = [name for name, _ in LEARNED_OPTIMIZERS]
FACTORIES.update(LEARNED_OPTIMIZERS)
TEST_HPARAMS.update({name: {"quadratic": {}, "rosenbrock": {}} for name in LEARNED_NAMES})


@pytest.mark.parametrize("name", LEARNED_NAMES)
def test_learned_structural(name):
    for dtype in (jnp.float32, jnp.bfloat16):
        test_state_and_dtypes_stable(name, dtype)
    test_extra_args_accepted(name)
    test_jitted_step_compiles_once_and_matches_scan(name)


@pytest.mark.parametrize("name", LEARNED_NAMES)
def test_learned_progress_or_finite(name):
    opt = FACTORIES[name](None)
    runs = jax.jit(
        lambda: {
            "quadratic": minimize(opt, quadratic, _X0, QUAD_STEPS),
            "chain": minimize(optax.chain(optax.clip_by_global_norm(1.0), opt), quadratic, _X0, QUAD_STEPS),
            "lookahead": minimize(lookahead(opt, k=5, alpha=0.5), quadratic, _X0, QUAD_STEPS),
            "rosenbrock": minimize(opt, rosenbrock, jnp.array([-1.2, 1.0]), ROSEN_STEPS),
        }
    )()
    for kind, x in runs.items():
        f = rosenbrock if kind == "rosenbrock" else quadratic
        start = 24.2 if kind == "rosenbrock" else float(quadratic(_X0))
        loss = float(f(x))
        assert bool(jnp.all(jnp.isfinite(x))) and np.isfinite(loss), f"{name} on {kind}: not finite ({x})"
        if name.endswith("@init"):
            bound = 0.5 * start if kind == "rosenbrock" else 0.8 * start
            assert loss < bound, f"{name} on {kind}: loss {loss:.3g} from {start:.3g}, needed < {bound:.3g}"
