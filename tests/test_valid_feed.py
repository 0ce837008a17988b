"""The inner-valid loss reaches a learned optimizer in evaluation (`lopt.evaluate.train_one`) as in
meta-training (`lopt.unroll.Unroller`): finite at steps 0, E, 2E, ... only, the loss of that step's
params on an ``inner_valid`` batch, NaN at every other step; and the baselines, which ignore it,
keep the same curves whatever the cadence.

Every ``update`` call of the hierarchical learned optimizer is recorded through a thin wrapper (a
host callback of the step, the ``valid_loss`` and ``loss`` it received, its params and its
validation-loss feature after the update).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.evaluate import eval_metrics, evaluate, train_one
from lopt.optimizers.learned import get_learned
from lopt.tasks import get_family
from lopt.tasks.base import Task
from lopt.unroll import Unroller

STEPS, VALID_EVERY = 60, 10
CALLS: dict[str, list] = {}  # tag -> one (step, valid_loss, loss, x, valid feature) per update call


@dataclasses.dataclass(frozen=True, eq=False)
class Recording:
    """A learned optimizer whose ``update`` reports what it received to ``CALLS[tag]``."""

    learned: Any
    tag: str

    def init(self, key):
        return self.learned.init(key)

    def transform(self, theta) -> optax.GradientTransformationExtraArgs:
        inner = optax.with_extra_args_support(self.learned.transform(theta))
        tag = self.tag

        def record(step, valid, loss, x, feat):
            CALLS[tag].append((int(step), float(valid), float(loss), np.array(x), float(feat)))

        def init_fn(params):
            return inner.init(params), jnp.zeros([], jnp.int32)

        def update_fn(grads, state, params=None, *, loss=None, valid_loss=None, **extra):
            inner_state, step = state
            updates, inner_state = inner.update(
                grads, inner_state, params, loss=loss, valid_loss=valid_loss, **extra
            )
            feat = inner_state.loss_feats[1]  # the hierarchical optimizer's validation-loss feature
            jax.debug.callback(record, step, valid_loss, loss, params["x"], feat)
            return updates, (inner_state, step + 1)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def calls(tag: str) -> dict[str, np.ndarray]:
    """The recorded calls of ``tag``, in step order (one episode)."""
    jax.effects_barrier()
    rows = sorted(CALLS.pop(tag), key=lambda r: r[0])
    steps = np.array([r[0] for r in rows])
    np.testing.assert_array_equal(steps, np.arange(len(rows)))  # one call per step, one episode
    return {
        "valid": np.array([r[1] for r in rows], np.float32),
        "loss": np.array([r[2] for r in rows], np.float32),
        "x": np.stack([r[3] for r in rows]),
        "feat": np.array([r[4] for r in rows], np.float32),
    }


def family(noise: float):
    return get_family("quadratic", dims=(6,), noise=(noise, noise), log10_condition=(1.0, 1.0))


def unroller_calls(fam, theta, tag: str, num_steps: int = STEPS, valid_every: int = VALID_EVERY):
    """One unstaggered particle of meta-training for one truncation of ``num_steps`` steps (within
    its first episode); returns its calls and its task."""
    static = fam.sample(jax.random.key(0)).static
    unroller = Unroller(
        Recording(get_learned("hierarchical")(), tag),
        fam,
        static,
        horizon=(100, 100),
        valid_every=valid_every,
        stagger=False,
    )
    CALLS[tag] = []
    state = unroller.init(theta, num_particles=1)
    state, out = jax.jit(lambda k, s: unroller.unroll(k, s, theta, num_steps))(jax.random.key(1), state)
    assert not np.any(np.asarray(out.done))  # one episode throughout
    dynamic = jax.tree.map(lambda a: a[0], state.task)
    return calls(tag), Task(dynamic=dynamic, data=None, family=fam, static=static)


def eval_calls(task, theta, tag: str, *, num_steps=STEPS, eval_every=20, valid_every=VALID_EVERY):
    """`train_one` (jitted) with the recording optimizer; returns its calls and train losses."""
    CALLS[tag] = []
    opt = Recording(get_learned("hierarchical")(), tag).transform(theta)
    run = jax.jit(lambda k: train_one(k, task, opt, num_steps, eval_every, valid_every=valid_every))
    _, losses, _, _ = run(jax.random.key(2))
    return calls(tag), np.asarray(losses)


def inner_valid_loss(task, x) -> float:
    """The inner-valid loss of params ``{"x": x}`` (the quadratic's valid splits are noiseless)."""
    k = jax.random.key(9)
    return float(task.loss({"x": jnp.asarray(x)}, k, task.batch(k, "inner_valid")))


def finite_steps(valid: np.ndarray) -> list[int]:
    return [int(t) for t in np.flatnonzero(np.isfinite(valid))]


@pytest.fixture(scope="module")
def theta():
    return get_learned("hierarchical")().init(jax.random.key(0))


def test_same_feed_and_features_as_meta_training_on_the_same_curve(theta):
    """Noiseless quadratic: both paths follow the same loss curve, so the feed and the optimizer's
    validation-loss feature must agree step by step."""
    meta, task = unroller_calls(family(0.0), theta, "meta-det")
    ev, losses = eval_calls(task, theta, "eval-det")
    expected = list(range(0, STEPS, VALID_EVERY))
    assert finite_steps(meta["valid"]) == finite_steps(ev["valid"]) == expected
    np.testing.assert_allclose(ev["x"], meta["x"], rtol=1e-5, atol=1e-6)  # the same curve
    np.testing.assert_allclose(losses, meta["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev["valid"][expected], meta["valid"][expected], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev["feat"], meta["feat"], rtol=1e-4, atol=1e-4)
    assert np.ptp(meta["feat"]) > 0.1  # the feature moves: the comparison is not vacuous


def test_meta_training_feeds_the_inner_valid_loss_of_that_steps_params(theta):
    """The reference pattern, noisy training: finite exactly at j ≡ 0 (mod E), equal to the
    inner-valid loss of the params w_j that update j receives."""
    meta, task = unroller_calls(family(0.5), theta, "meta-noisy")
    assert finite_steps(meta["valid"]) == list(range(0, STEPS, VALID_EVERY))
    for t in finite_steps(meta["valid"]):
        np.testing.assert_allclose(meta["valid"][t], inner_valid_loss(task, meta["x"][t]), rtol=1e-6)


@pytest.mark.parametrize(
    "num_steps, eval_every, valid_every",
    [(60, 20, 10), (50, 25, 10), (60, 60, 7), (12, 4, 1), (20, 10, 1000)],
)
def test_evaluation_feeds_the_inner_valid_loss_of_that_steps_params(
    theta, num_steps, eval_every, valid_every
):
    """Noisy training, any ``eval_every``: finite exactly at t ≡ 0 (mod ``valid_every``), t counted
    from the start across evaluation chunks, equal to the inner-valid loss of w_t."""
    task = family(0.5).task(family(0.5).sample(jax.random.key(3)))
    ev, _ = eval_calls(
        task, theta, "eval-noisy", num_steps=num_steps, eval_every=eval_every, valid_every=valid_every
    )
    assert finite_steps(ev["valid"]) == list(range(0, num_steps, valid_every))
    for t in finite_steps(ev["valid"]):
        np.testing.assert_allclose(ev["valid"][t], inner_valid_loss(task, ev["x"][t]), rtol=1e-6)


def test_valid_every_must_be_positive(theta):
    task = family(0.0).task(family(0.0).sample(jax.random.key(0)))
    with pytest.raises(ValueError, match="valid_every"):
        train_one(jax.random.key(0), task, optax.adam(1e-2), 10, 5, valid_every=0)


def test_baseline_curves_do_not_depend_on_the_feed():
    """Adam ignores ``valid_loss``: its curves are bitwise the same for any ``valid_every``, and
    they match a hand-written loop of Adam steps on evaluate's key schedule."""
    fam = get_family("quadratic", dims=(6,), noise=(0.5, 0.5))
    task = fam.task(fam.sample(jax.random.key(4)))
    opt = optax.adam(3e-2)
    num_steps, every = 24, 8
    runs = [
        evaluate(
            jax.random.key(5), task, opt, num_steps=num_steps, num_seeds=2, eval_every=every, valid_every=v
        )
        for v in (1, 10, 1000)
    ]
    for other in runs[1:]:
        for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(other)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # the reference: key → (init, train, eval); train → a key per chunk → (steps, eval) → a key per
    # step → (batch, loss); the evaluation of each chunk on its eval key, the first on ``eval``
    @jax.jit
    def adam_step(params, state, k):
        k_batch, k_loss = jax.random.split(k)
        loss, grads = jax.value_and_grad(task.loss)(params, k_loss, task.batch(k_batch, "train"))
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    def test_loss(k, params):
        return float(eval_metrics(jax.random.split(k, 3)[2], task, params, "test", 4)["loss"])

    for s, seed_key in enumerate(jax.random.split(jax.random.key(5), 2)):
        key_init, key_train, key_eval = jax.random.split(seed_key, 3)
        params = task.init(key_init)
        state, losses, tests = opt.init(params), [], [test_loss(key_eval, params)]
        for k_chunk in jax.random.split(key_train, num_steps // every):
            k_steps, k_eval = jax.random.split(k_chunk)
            for k in jax.random.split(k_steps, every):
                params, state, loss = adam_step(params, state, k)
                losses.append(float(loss))
            tests.append(test_loss(k_eval, params))
        np.testing.assert_allclose(runs[1].train_loss[s], losses, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(runs[1].eval["test"]["loss"][s], tests, rtol=1e-5, atol=1e-6)
