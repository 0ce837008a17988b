"""Shipped pretrained optimizers: every registry entry has its weights and model card, loads as
an optax transformation equal to its architecture's transform of the shipped theta, trains a
held-out task with no hyperparameter, and refuses a learning rate with a message that says why."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.optimizers.learned import load_theta
from lopt.validate import UnknownNameError


@pytest.mark.parametrize("name", list(lopt.PRETRAINED))
def test_entry_has_weights_and_card(name):
    entry = lopt.PRETRAINED[name]
    assert os.path.getsize(entry.weights_path) > 0
    card = lopt.model_card(name)
    learned, theta = lopt.load_pretrained(name)
    assert card.startswith(f"# {name}") and learned.name in card
    assert "lopt meta-train" in card  # the command that produced the weights
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(theta))


@pytest.mark.parametrize("name", list(lopt.PRETRAINED))
def test_pretrained_is_the_transform_of_its_theta(name, key):
    learned, theta = load_theta(lopt.PRETRAINED[name].weights_path)
    params = {"w": jax.random.normal(key, (5, 3)), "b": jnp.zeros((3,))}
    grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p) + p, params)
    told = {"num_steps": 100} if learned.needs_num_steps else {}  # horizon-aware: the run's length T
    a, b = lopt.pretrained(name, **told), optax.with_extra_args_support(learned.transform(theta, **told))
    ua, _ = a.update(grads, a.init(params), params, loss=jnp.float32(2.0))
    ub, _ = b.update(grads, b.init(params), params, loss=jnp.float32(2.0))
    jax.tree.map(np.testing.assert_array_equal, ua, ub)


def test_trains_a_held_out_task_without_hyperparameters():
    family = lopt.get_family("logistic_regression", datasets=("iris",))
    task = family.task(family.sample(jax.random.key(0)))
    curves = lopt.evaluate(
        jax.random.key(1),
        task,
        lopt.pretrained("mlp-small-v1"),
        num_steps=300,
        num_seeds=2,
        eval_every=100,
        eval_splits=("test",),
    )
    test = np.asarray(curves.eval["test"]["loss"])  # (S, 4)
    assert np.all(test[:, -1] < 0.8 * test[:, 0]), test


def test_a_learning_rate_is_refused_with_the_reason():
    with pytest.raises(
        TypeError, match=r"takes no learning rate.*step sizes are part of its meta-trained weights"
    ):
        lopt.pretrained("mlp-small-v1", learning_rate=1e-3)
    with pytest.raises(TypeError, match="takes no learning rate"):
        lopt.pretrained("mlp-small-v1", 1e-3)
    with pytest.raises(TypeError, match=r"takes no arguments \(clip\)"):
        lopt.pretrained("mlp-small-v1", clip=1.0)


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(UnknownNameError, match="valid pretrained optimizer names are: .*mlp-small-v1"):
        lopt.pretrained("velo")
    with pytest.raises(UnknownNameError, match="mlp-small-v1"):
        lopt.load_pretrained("velo")


def test_a_horizon_aware_one_needs_the_run_length():
    """hierarchical-small-v2 schedules its step over T: without num_steps it says what to pass; with
    it, its first update equals its architecture's transform told the same T."""
    with pytest.raises(
        TypeError,
        match=r"horizon-aware: pass the length of the training run, "
        r"lopt.pretrained\('hierarchical-small-v2', num_steps=T\)",
    ):
        lopt.pretrained("hierarchical-small-v2")
    with pytest.raises(TypeError, match="takes no learning rate"):
        lopt.pretrained("hierarchical-small-v2", learning_rate=1e-3, num_steps=100)
    with pytest.raises(ValueError, match="num_steps"):
        lopt.pretrained("hierarchical-small-v2", num_steps=0)
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
    grads = {"w": jnp.cos(params["w"])}
    short, long = (lopt.pretrained("hierarchical-small-v2", num_steps=t) for t in (10, 10_000))
    us, _ = short.update(grads, short.init(params), params)
    ul, _ = long.update(grads, long.init(params), params)
    # step 1 of 10 is past the 5% warmup (full peak); step 1 of 10,000 is early in it: a smaller step
    assert float(jnp.sqrt(jnp.mean(ul["w"] ** 2))) < 0.1 * float(jnp.sqrt(jnp.mean(us["w"] ** 2)))
