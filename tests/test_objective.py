"""The meta-objective's new parts against closed forms: step weights (sum H per episode, theta-free),
the log objective, phase bins, fitness shaping, dropping diverged pairs; and the group reference."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.estimators._online import episode_diverged
from lopt.estimators.base import ZSCORE_CLIP, shape_pairs
from lopt.tasks.registry import get_family
from lopt.unroll import FINAL_FRACTION, LOG_FLOOR, Unroller, normalize_meta_loss, phase_bins, step_weight


@pytest.mark.parametrize("kind", ["uniform", "ramp", "final"])
@pytest.mark.parametrize("horizon", [1, 2, 7, 100, 1001])
def test_step_weights_sum_to_the_horizon(kind, horizon):
    s = jnp.arange(1, horizon + 1)
    w = np.asarray(step_weight(s, jnp.full_like(s, horizon), kind), np.float64)
    assert w.sum() == pytest.approx(horizon, rel=1e-5) and np.all(w >= 0)
    if kind == "ramp":  # linear in s, w(H) / w(1) = H
        np.testing.assert_allclose(w, 2 * np.arange(1, horizon + 1) / (horizon + 1), rtol=1e-6)
    if kind == "final":  # the last ceil(q H) steps only
        n = math.ceil(FINAL_FRACTION * horizon)
        assert np.count_nonzero(w) == n and np.all(w[-n:] == pytest.approx(horizon / n))


def test_log_objective_closed_form():
    loss = jnp.array([2.0, 1.0, 0.5, 1e-6, -1.0, jnp.nan, jnp.inf, 100.0])
    out = np.asarray(normalize_meta_loss(loss, jnp.float32(2.0), 0.0, 3.0, "log"))
    x = np.array([1.0, 0.5, 0.25])
    np.testing.assert_allclose(out[:3], np.log(x), rtol=1e-5, atol=1e-6)  # ε = 1e-6 in the scale
    lo, hi = math.log(LOG_FLOOR), math.log(3.0)
    np.testing.assert_allclose(out[3:], [lo, lo, hi, hi, hi], rtol=1e-5)
    ref = np.asarray(normalize_meta_loss(jnp.float32(1.5), jnp.float32(3.0), 1.0, 3.0, "log"))
    assert ref == pytest.approx(math.log(0.5 / 2.0), rel=1e-5)  # (L - L_ref) / (L0 - L_ref)


def test_phase_bins_closed_form():
    ell = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    phase = jnp.array([[0.1, 0.25], [0.26, 0.5], [0.9, 1.0]])
    mask = jnp.array([[True, True], [True, False], [True, True]])
    sums, counts = phase_bins(ell, phase, 4, mask)
    np.testing.assert_allclose(sums, [3.0, 3.0, 0.0, 11.0])
    np.testing.assert_allclose(counts, [2.0, 1.0, 0.0, 2.0])


def test_zscore_shaping_unit_rms_and_clip():
    a = jnp.array([1.0, -2.0, 0.5, 0.0, 100.0])
    b = jnp.array([0.0, 0.0, 0.5, -1.0, 0.0])
    sa, sb = shape_pairs(a, b, "zscore")
    d = np.asarray(a + b, np.float64)
    rms = np.sqrt(np.mean(d**2))
    z = d / rms
    expected = np.clip(z, -ZSCORE_CLIP, ZSCORE_CLIP)
    np.testing.assert_allclose(np.asarray(sa + sb), expected, rtol=1e-5)
    # each pair's split between its two sums is kept
    np.testing.assert_allclose(np.asarray(sa)[2], np.asarray(sb)[2], rtol=1e-6)
    same = shape_pairs(a, b, "none")
    assert same[0] is a and same[1] is b


def test_episode_diverged_holds_until_restart():
    ok = jnp.array([[1, 1], [0, 1], [1, 1], [1, 1], [1, 0]], bool)  # (K=5, P=2)
    done = jnp.array([[0, 0], [0, 0], [1, 0], [0, 0], [0, 0]], bool)
    bad, carried = episode_diverged(ok, done, jnp.array([False, True]))
    np.testing.assert_array_equal(np.asarray(bad), [[0, 1], [1, 1], [1, 1], [0, 1], [0, 1]])
    np.testing.assert_array_equal(np.asarray(carried), [False, True])


@dataclasses.dataclass(frozen=True)
class SGD:
    def init(self, key):
        return {"log_lr": jnp.float32(-2.0)}

    def transform(self, theta):
        def update(grads, state, params=None, **extra):
            return jax.tree.map(lambda g: -jnp.exp(theta["log_lr"]) * g, grads), state

        return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


@pytest.mark.parametrize("kind", ["ramp", "final"])
def test_weights_and_phases_do_not_depend_on_theta(kind, key):
    family = get_family("quadratic", dims=(4,))
    unroller = Unroller(
        SGD(), family, family.sample_static(key), horizon=(5, 30), step_weights=kind, objective="log"
    )
    outs = []
    for log_lr in (-4.0, 0.5):  # a slow and a diverging learning rate
        theta = {"log_lr": jnp.float32(log_lr)}
        state = unroller.init(theta, 6)
        _, out = jax.jit(lambda k, s, t: unroller.unroll(k, s, t, 40))(jax.random.key(3), state, theta)
        outs.append(out)
    np.testing.assert_array_equal(outs[0].weight, outs[1].weight)
    np.testing.assert_array_equal(outs[0].phase, outs[1].phase)
    assert not np.array_equal(outs[0].meta_loss, outs[1].meta_loss)
    # a whole episode's weights sum to its horizon: check every episode that fits in the window
    w, done = np.asarray(outs[0].weight), np.asarray(outs[0].done)
    phase = np.asarray(outs[0].phase)
    for p in range(w.shape[1]):
        ends = np.flatnonzero(done[:, p])
        for start, end in zip(ends[:-1] + 1, ends[1:]):
            horizon = end - start + 1
            assert phase[end, p] == pytest.approx(1.0)
            assert w[start : end + 1, p].sum() == pytest.approx(horizon, rel=1e-5)


def test_leaf_scales_closed_form():
    from lopt.estimators.base import SIGMA_RMS_FLOOR, leaf_scales

    theta = {"a": jnp.array([3.0, -4.0]), "b": jnp.zeros((3,)), "c": jnp.float32(0.5)}
    s = np.asarray(leaf_scales(theta, "rms"))
    rms_a = math.sqrt((9 + 16) / 2)
    np.testing.assert_allclose(
        s, [rms_a, rms_a, SIGMA_RMS_FLOOR, SIGMA_RMS_FLOOR, SIGMA_RMS_FLOOR, 0.5], rtol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(leaf_scales(theta)), np.ones(6))


def test_episode_diverged_matches_a_loop_by_hand():
    rng = np.random.default_rng(0)
    for k, p in [(1, 1), (11, 4), (5, 3)] * 7:  # three shapes (each compiles once), fresh draws each time
        ok, done, start = rng.random((k, p)) > 0.2, rng.random((k, p)) < 0.3, rng.random(p) < 0.5
        bad, carried = episode_diverged(jnp.asarray(ok), jnp.asarray(done), jnp.asarray(start))
        expect, flag = np.zeros((k, p), bool), start.copy()
        for t in range(k):
            flag = flag | ~ok[t]
            expect[t] = flag
            flag = np.where(done[t], False, flag)
        np.testing.assert_array_equal(np.asarray(bad), expect)
        np.testing.assert_array_equal(np.asarray(carried), flag)
