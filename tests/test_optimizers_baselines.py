"""The `BASELINES` registry: each entry is optax's own optimizer, hparams can be traced, Adam8p's
update rule and schedule, and the errors for unknown names, unknown hparams and bad values."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.optimizers import BASELINES, Baseline, get_baseline
from lopt.optimizers.baselines import adam8p_schedule
from lopt.validate import ConfigError, UnknownNameError

# The optax alias each baseline must reproduce, given its resolved hparams.
OPTAX_ALIASES = {
    "sgd": lambda h: optax.sgd(h["learning_rate"]),
    "momentum": lambda h: optax.sgd(h["learning_rate"], momentum=h["momentum"]),
    "nesterov": lambda h: optax.sgd(h["learning_rate"], momentum=h["momentum"], nesterov=True),
    "adam": lambda h: optax.adam(h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"]),
    "adamw": lambda h: optax.adamw(
        h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"], weight_decay=h["weight_decay"]
    ),
    "nadamw": lambda h: optax.nadamw(
        h["learning_rate"], b1=h["b1"], b2=h["b2"], eps=h["eps"], weight_decay=h["weight_decay"]
    ),
    "rmsprop": lambda h: optax.rmsprop(h["learning_rate"], decay=h["decay"], eps=h["eps"]),
    "adagrad": lambda h: optax.adagrad(
        h["learning_rate"], initial_accumulator_value=h["initial_accumulator_value"], eps=h["eps"]
    ),
    "adafactor": lambda h: optax.adafactor(
        h["learning_rate"],
        decay_rate=h["decay_rate"],
        clipping_threshold=h["clipping_threshold"],
        eps=h["eps"],
    ),
    # adam8p has no optax alias: see test_adam8p_* below.
}

STEPS = 6


def non_default(baseline: Baseline) -> dict[str, float]:
    """Every hparam moved off its default (halved; zeros moved to 1e-3 of their range)."""
    return {
        k: v / 2 if v else baseline.ranges[k][0] + 1e-3 * (baseline.ranges[k][1] - baseline.ranges[k][0])
        for k, v in baseline.defaults.items()
    }


def params0():
    """A dict of params; the 130×129 matrix takes Adafactor's factored path."""
    return {"w": jnp.full((130, 129), 0.3), "b": jnp.linspace(-1.0, 1.0, 5)}


@functools.cache
def grad_sequence():
    keys = jax.random.split(jax.random.key(42), STEPS)
    return jax.vmap(lambda k: jax.tree.map(lambda p: jax.random.normal(k, p.shape), params0()))(keys)


def run(opt, grads_seq):
    """Params after applying ``opt`` to a fixed gradient sequence (leading axis = step)."""

    def step(carry, g):
        params, state = carry
        updates, state = opt.update(g, state, params, num_steps=STEPS)  # T, for adam_cosine
        return (optax.apply_updates(params, updates), state), None

    p = params0()
    return jax.lax.scan(step, (p, opt.init(p)), grads_seq)[0][0]


def assert_trees_equal(a, b, rtol=0.0, atol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_registry_entries_are_consistent():
    for name, b in BASELINES.items():
        assert b.name == name
        assert set(b.defaults) == set(b.ranges), name
        for k, (lo, hi) in b.ranges.items():
            assert lo <= b.defaults[k] <= hi, f"{name}.{k} default outside its range"
        assert b.doc and "\n" not in b.doc
        assert isinstance(b.make(), optax.GradientTransformationExtraArgs)
        assert b.resolve(None) == b.defaults
    assert get_baseline("adam") is BASELINES["adam"]


def test_every_baseline_has_an_optax_reference():
    assert set(OPTAX_ALIASES) == set(BASELINES) - {"adam8p", "adam_cosine"}


@pytest.mark.parametrize("name", sorted(OPTAX_ALIASES))
def test_baseline_equals_optax_alias(name):
    b = BASELINES[name]
    both = (b.defaults, non_default(b))
    ours, theirs = jax.jit(
        lambda g: ([run(b.make(h), g) for h in both], [run(OPTAX_ALIASES[name](h), g) for h in both])
    )(grad_sequence())
    assert_trees_equal(ours, theirs, rtol=1e-7)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_hparam_can_be_traced(name):
    """vmap over all hparams at once (they become tracers inside make) matches concrete runs."""
    b = BASELINES[name]
    both = (b.defaults, non_default(b))
    batch = {k: jnp.array([h[k] for h in both]) for k in b.defaults}  # each (2,)

    @jax.jit
    def traced_and_concrete(batch, g):
        traced = jax.vmap(lambda hp: run(b.make(hp), g))(batch)
        return traced, [run(b.make(h), g) for h in both]

    traced, concrete = traced_and_concrete(batch, grad_sequence())
    for i in range(2):
        assert_trees_equal(jax.tree.map(lambda x: x[i], traced), concrete[i], rtol=1e-5, atol=1e-7)


def test_adam8p_without_regularization_or_decay_is_adam():
    hparams = {"learning_rate": 3e-3, "b1": 0.8, "b2": 0.99, "eps": 1e-6}
    grads = grad_sequence()
    ours, adam = jax.jit(
        lambda g: (run(BASELINES["adam8p"].make(hparams), g), run(BASELINES["adam"].make(hparams), g))
    )(grads)
    assert_trees_equal(ours, adam, rtol=1e-7)


def test_adam8p_schedule_matches_formula():
    lr, linear, exponential = 0.1, 1e-3, 2e-3
    schedule = adam8p_schedule(lr, linear, exponential)
    for t in [0, 1, 10, 100, 999, 1000, 5000]:
        expected = lr * max(0.0, 1.0 - linear * t) * np.exp(-exponential * t)
        # atol: at t = 999, 1 − 0.999 cancels in float32 (relative error ~1e-4 of a 1e-5 rate)
        np.testing.assert_allclose(float(schedule(jnp.asarray(t, jnp.int32))), expected, rtol=1e-6, atol=1e-9)


def test_adam8p_steps_follow_the_schedule():
    """With β1 = β2 = 0 and a constant gradient 1, Adam's direction is 1, so u_t = −η_t from t = 0."""
    hp = {
        "learning_rate": 0.1,
        "b1": 0.0,
        "b2": 0.0,
        "eps": 1e-10,
        "linear_decay": 0.1,
        "exponential_decay": 0.05,
    }
    opt = BASELINES["adam8p"].make(hp)
    x = jnp.zeros(())
    state = opt.init(x)
    for t in range(12):
        u, state = opt.update(jnp.ones(()), state, x)
        expected = -0.1 * max(0.0, 1.0 - 0.1 * t) * np.exp(-0.05 * t)
        np.testing.assert_allclose(float(u), expected, rtol=1e-6, atol=1e-12)


def test_adam8p_matches_numpy_reference():
    """Full Adam8p (L1, L2, both decays) against a float64 loop written from the update rule."""
    hp = {
        "learning_rate": 0.05,
        "b1": 0.8,
        "b2": 0.95,
        "eps": 1e-4,
        "l1": 0.01,
        "l2": 0.2,
        "linear_decay": 0.05,
        "exponential_decay": 0.1,
    }
    grads = grad_sequence()
    ours = jax.jit(lambda g: run(BASELINES["adam8p"].make(hp), g))(grads)

    def reference(p, gs):  # float64
        m = v = np.zeros_like(p)
        for t, g in enumerate(gs):
            g = g + hp["l1"] * np.sign(p) + hp["l2"] * p
            m = hp["b1"] * m + (1 - hp["b1"]) * g
            v = hp["b2"] * v + (1 - hp["b2"]) * g**2
            m_hat, v_hat = m / (1 - hp["b1"] ** (t + 1)), v / (1 - hp["b2"] ** (t + 1))
            decay = max(0.0, 1 - hp["linear_decay"] * t) * np.exp(-hp["exponential_decay"] * t)
            lr_t = hp["learning_rate"] * decay
            p = p - lr_t * m_hat / (np.sqrt(v_hat) + hp["eps"])
        return p

    for k in ("w", "b"):
        expected = reference(np.asarray(params0()[k], np.float64), np.asarray(grads[k], np.float64))
        np.testing.assert_allclose(np.asarray(ours[k]), expected, rtol=1e-5, atol=1e-6)


def test_unknown_baseline_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        get_baseline("adma")
    assert "'adma'" in str(err.value)
    assert all(name in str(err.value) for name in BASELINES)
    assert isinstance(err.value, KeyError)


def test_unknown_hparam_names_key_and_lists_valid_keys():
    pattern = r"adam has no hparam 'lr'; valid hparams are: learning_rate, b1, b2, eps"
    with pytest.raises(ConfigError, match=pattern):
        BASELINES["adam"].make({"lr": 1e-3})


@pytest.mark.parametrize(
    "hparams, pattern",
    [
        (
            {"learning_rate": -1},
            r"adam: learning_rate=-1.0 is out of range: it must be in \[1e-08, 10.0\] \(",
        ),
        ({"b1": 1.0}, r"b1=1.0 is out of range: it must be in \[0.0, 0.9999\] \(.*divide by 0"),
        ({"eps": float("nan")}, r"eps=nan is out of range"),
        ({"learning_rate": np.float32(20.0)}, r"learning_rate=20.0 is out of range"),
        ({"learning_rate": jnp.array(-1.0)}, r"learning_rate=-1.0 is out of range"),
        ({"learning_rate": "fast"}, r"learning_rate='fast' is not a number"),
        ({"learning_rate": np.array([1e-3, 1e-2])}, r"must be a scalar, got shape \(2,\); .*vmap"),
    ],
)
def test_bad_concrete_hparams_raise(hparams, pattern):
    with pytest.raises(ConfigError, match=pattern):
        BASELINES["adam"].make(hparams)


def test_concrete_numpy_and_jax_scalars_are_accepted():
    for lr in (np.float32(1e-3), np.float64(1e-3), jnp.array(1e-3), 1):
        BASELINES["adam"].make({"learning_rate": lr})


def test_traced_hparams_are_not_validated():
    """Validation needs a concrete value; a traced one is passed on (here deliberately out of range)."""

    @jax.jit
    def first_update(lr):
        opt = BASELINES["sgd"].make({"learning_rate": lr})
        return opt.update(jnp.ones(2), opt.init(jnp.zeros(2)), jnp.zeros(2))[0]

    np.testing.assert_allclose(first_update(-1.0), [1.0, 1.0])


def test_adam_cosine_is_adam_times_the_documented_schedule():
    """u_t = −η·s((t+1)/T)·(Adam's direction), s = warmup·cosine of `schedule`, checked by hand."""
    import math

    hp = {"learning_rate": 0.1, "warmup": 0.2, "final": 0.1}
    grads = grad_sequence()
    steps = STEPS
    opt = BASELINES["adam_cosine"].make(hp)
    adam = optax.scale_by_adam()
    p = params0()
    state, adam_state = opt.init(p), adam.init(p)
    for t in range(steps):
        g = jax.tree.map(lambda x: x[t], grads)
        u, state = opt.update(g, state, p, num_steps=steps)
        d, adam_state = adam.update(g, adam_state, p)
        f = (t + 1) / steps
        s = min(1.0, f / 0.2) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * f)))
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(d)):
            np.testing.assert_allclose(np.asarray(a), -0.1 * s * np.asarray(b), rtol=1e-5, atol=1e-9)
        p = optax.apply_updates(p, u)
    with pytest.raises(ValueError, match="num_steps=T"):
        opt.update(g, state, p)
