"""`lopt.evaluate` against references: a float64 numpy loop of the same SGD updates (noiseless, and
on the very same noisy batches), per-seed runs, per-setting runs, and a run that diverges."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.evaluate import evaluate, evaluate_hparams, tidy, train_one
from lopt.optimizers import get_baseline
from lopt.tasks import get_family

STEPS, EVERY = 12, 4


def quadratic(key, dim=4, noise=(0.0, 0.0)):
    family = get_family("quadratic", dims=(dim,), noise=noise, log10_condition=(0.5, 1.0))
    return family.task(family.sample(key))


def numpy_sgd(task, lr, steps, batches=None):
    """Hand-written SGD on f(x) = ½ zᵀ diag(λ) z, z = Qᵀ(x − c) + σ ξ / √λ, in float64.

    ∇f = Q diag(λ) z. Returns the loss before each update and the noiseless loss after each step."""
    d = jax.tree.map(lambda a: np.asarray(a, np.float64), task.dynamic)
    q, lam, c, sigma = d["rotation"], d["eigvals"], d["center"], float(d["noise"])
    x = d["x0"].copy()
    losses, clean = [], [0.5 * np.sum(lam * (q.T @ (x - c)) ** 2)]
    for t in range(steps):
        xi = np.zeros_like(x) if batches is None else batches[t]
        z = q.T @ (x - c) + sigma * xi / np.sqrt(lam)
        losses.append(0.5 * np.sum(lam * z**2))
        x = x - lr * (q @ (lam * z))
        clean.append(0.5 * np.sum(lam * (q.T @ (x - c)) ** 2))
    return np.array(losses), np.array(clean)


def test_sgd_matches_numpy_loop_noiseless(key):
    task = quadratic(key)
    curves = evaluate(
        jax.random.key(1), task, optax.sgd(0.05), num_steps=STEPS, num_seeds=2, eval_every=EVERY
    )
    losses, clean = numpy_sgd(task, 0.05, STEPS)
    for s in range(2):  # no noise: every seed follows the same trajectory
        np.testing.assert_allclose(curves.train_loss[s], losses, rtol=2e-5)
        for split in ("inner_valid", "outer_valid", "test"):
            np.testing.assert_allclose(curves.eval[split]["loss"][s], clean[::EVERY], rtol=2e-5)
    np.testing.assert_array_equal(curves.eval_steps, [0, 4, 8, 12])
    np.testing.assert_array_equal(curves.diverged_step, [STEPS, STEPS])


def test_sgd_matches_numpy_loop_on_the_same_noisy_batches(key):
    """The batches are re-drawn with evaluate's key schedule: key → (init, train, eval); train → one
    key per chunk of E steps → (steps, eval) → one key per step → (batch, loss)."""
    task = quadratic(key, noise=(0.5, 0.5))
    run_key = jax.random.key(7)
    curves = evaluate(run_key, task, optax.sgd(0.05), num_steps=STEPS, num_seeds=1, eval_every=EVERY)
    seed_key = jax.random.split(run_key, 1)[0]
    _, key_train, _ = jax.random.split(seed_key, 3)
    batches = []
    for k_chunk in jax.random.split(key_train, STEPS // EVERY):
        k_steps, _ = jax.random.split(k_chunk)
        for k in jax.random.split(k_steps, EVERY):
            k_batch, _ = jax.random.split(k)
            batches.append(np.asarray(task.batch(k_batch, "train")["xi"], np.float64))
    losses, clean = numpy_sgd(task, 0.05, STEPS, batches)
    assert np.std(losses - numpy_sgd(task, 0.05, STEPS)[0]) > 1e-3  # the noise matters here
    np.testing.assert_allclose(curves.train_loss[0], losses, rtol=1e-4)
    np.testing.assert_allclose(curves.eval["test"]["loss"][0], clean[::EVERY], rtol=1e-4)


def test_vmapped_seeds_equal_per_seed_runs(key):
    task = quadratic(key, noise=(0.3, 0.3))
    opt = optax.adam(0.1)
    curves = evaluate(jax.random.key(3), task, opt, num_steps=STEPS, num_seeds=3, eval_every=EVERY)
    one = jax.jit(lambda k: train_one(k, task, opt, STEPS, EVERY)[1:])
    for s, k in enumerate(jax.random.split(jax.random.key(3), 3)):
        losses, evals, diverged = one(k)
        np.testing.assert_allclose(curves.train_loss[s], losses, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            curves.eval["test"]["loss"][s], evals["test"]["loss"], rtol=1e-5, atol=1e-6
        )
        assert int(diverged) == int(curves.diverged_step[s]) == STEPS
    assert not np.allclose(curves.train_loss[0], curves.train_loss[1])  # seeds differ


def test_evaluate_hparams_equals_separate_evaluate_calls(key):
    task = quadratic(key, noise=(0.3, 0.3))
    lrs = np.array([0.01, 0.05, 0.2], np.float32)
    sgd = get_baseline("sgd")
    grid = evaluate_hparams(
        jax.random.key(5),
        task,
        {"learning_rate": jnp.asarray(lrs)},
        make=sgd.make,
        num_steps=STEPS,
        num_seeds=2,
        eval_every=EVERY,
    )
    assert grid.train_loss.shape == (3, 2, STEPS)
    for i, lr in enumerate(lrs):
        single = evaluate(
            jax.random.key(5), task, optax.sgd(float(lr)), num_steps=STEPS, num_seeds=2, eval_every=EVERY
        )
        np.testing.assert_allclose(grid.train_loss[i], single.train_loss, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            grid.eval["outer_valid"]["loss"][i], single.eval["outer_valid"]["loss"], rtol=1e-5, atol=1e-7
        )


def test_diverging_run_is_recorded_at_its_step(key):
    """1-d bowl ½(x − c)² with SGD at lr 10: x − c is multiplied by −9 every step, so the float32
    loss ½ z² first overflows at the first t with ½ (|z₀| 9^t)² > 3.4e38."""
    task = quadratic(key, dim=1)
    z0 = abs(float(task.dynamic["x0"][0] - task.dynamic["center"][0]))
    big = float(np.finfo(np.float32).max)
    t_expected = next(t for t in range(100) if 0.5 * (z0 * 9.0**t) ** 2 > big)
    margin = np.log(0.5 * (z0 * 9.0**t_expected) ** 2 / big) / np.log(81.0)
    assert 0.02 < margin < 0.98  # not a borderline case for float32 rounding
    steps = 4 * EVERY * ((t_expected + 4 * EVERY) // (4 * EVERY) + 1)
    grid = evaluate_hparams(
        jax.random.key(0),
        task,
        {"learning_rate": jnp.array([0.1, 10.0])},
        make=get_baseline("sgd").make,
        num_steps=steps,
        num_seeds=1,
        eval_every=EVERY,
    )
    np.testing.assert_array_equal(grid.diverged_step[:, 0], [steps, t_expected])
    assert np.isfinite(grid.train_loss[1, 0, :t_expected]).all()
    assert not np.isfinite(grid.train_loss[1, 0, t_expected])
    assert not np.isfinite(grid.eval["test"]["loss"][1, 0, -1])
    rows = tidy(grid, task="bowl")
    div = {(r["setting"], r["step"]): r["diverged"] for r in rows}
    assert not any(div[0, t] for t in range(steps + 1))
    assert [div[1, t] for t in range(steps + 1)] == [t >= t_expected for t in range(steps + 1)]
