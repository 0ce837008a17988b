"""The short-horizon study's online tuner (`lopt.studies.short_horizon`) on the NQM, exactly."""

import jax
import jax.numpy as jnp
import numpy as np

from lopt.studies.short_horizon import nqm_online
from lopt.tasks.nqm import curvatures, expected_losses


def _nqm(dim=30):
    h = curvatures(dim, jnp.float32(1.0))
    return h, jax.random.normal(jax.random.key(0), (dim,))


def test_full_horizon_is_the_best_constant_rate():
    h, x0 = _nqm()
    grid = jnp.logspace(-4, 0, 40)
    lrs, losses = nqm_online(h, x0, 4.0, 300, 300, grid)
    finals = np.asarray(jax.vmap(lambda lr: expected_losses(h, x0, jnp.full((300,), lr), 0.0, 4.0)[-1])(grid))
    np.testing.assert_allclose(float(lrs[0]), float(grid[int(np.argmin(finals))]), rtol=1e-6)
    assert np.all(np.asarray(lrs) == lrs[0])
    np.testing.assert_allclose(float(losses[-1]), float(finals.min()), rtol=1e-5)


def test_one_step_horizon_chooses_smaller_rates_and_ends_worse():
    h, x0 = _nqm()
    grid = jnp.logspace(-5, np.log10(1.9), 80)
    greedy, g_loss = nqm_online(h, x0, 1.0, 1, 2000, grid)
    full, f_loss = nqm_online(h, x0, 1.0, 2000, 2000, grid)
    late = float(np.exp(np.mean(np.log(np.asarray(greedy[1000:])))))
    assert late < float(full[0]) / 3  # the short-horizon bias
    assert float(g_loss[-1]) > float(f_loss[-1])
