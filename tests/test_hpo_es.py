"""ES / PES / NRES of the meta-training engine on hyperparameters (`lopt.hpo.es`), against the
noisy quadratic model's closed-form meta-objective and its finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.hpo import HParamSpace
from lopt.hpo.es import FixedTask, hparam_estimator
from lopt.tasks import TaskConfig
from lopt.tasks.nqm import NQM, NQMStatic, task_expected_losses
from lopt.unroll import NORM_EPS
from lopt.validate import ConfigError

H = 24  # episode length


def _setup():
    family = FixedTask(NQM(dims=(16,), batch_sizes=(16,)), seed=0)
    static = NQMStatic(16, 16)
    task = family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(9), static)))
    space = HParamSpace.build("sgd", ("learning_rate",), start={"learning_rate": 0.5})
    return family, static, task, space


def _closed_form_objective(task, u):
    """J(u): the estimators' meta-loss in expectation, mean_t E[L(x_t)] / (L_0 + ε), t = 1..H."""
    losses = task_expected_losses(task, jnp.full((H,), jnp.exp(u)))
    return jnp.mean(losses[1:]) / (losses[0] + NORM_EPS)


def test_fixed_task_pins_dynamic_values():
    family, static, _, _ = _setup()
    a = family.sample_dynamic(jax.random.key(1), static)
    b = family.sample_dynamic(jax.random.key(2), static)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("method", ["es", "pes", "nres"])
def test_es_estimators_match_the_closed_form_hypergradient(method):
    family, static, task, space = _setup()
    theta = space.init()
    u = theta["learning_rate"]
    closed = float(jax.grad(lambda u: _closed_form_objective(task, u))(u))
    d = 1e-2
    fd = float((_closed_form_objective(task, u + d) - _closed_form_objective(task, u - d)) / (2 * d))
    np.testing.assert_allclose(closed, fd, rtol=1e-3)
    truncations = 1 if method == "es" else 4
    est = hparam_estimator(
        method,
        space,
        family,
        static,
        num_particles=256,
        truncation_length=H // truncations,
        horizon=(H, H),
        stagger=False,
        meta_clip=1e3,
    )
    hp = {"sigma": jnp.float32(0.05)}
    estimate = jax.jit(est.estimate)
    grads = []
    for r in range(6):  # independent repeats: their spread is the estimate's standard error
        k_init, k_run = jax.random.split(jax.random.key(r))
        state = est.init(k_init, theta, hp)
        total = 0.0
        for k in jax.random.split(k_run, truncations):  # one episode: the mean of its truncations' estimates
            g, state, _ = estimate(k, theta, state, hp)
            total += float(g["learning_rate"]) / truncations
        grads.append(total)
    mean, se = np.mean(grads), np.std(grads, ddof=1) / np.sqrt(len(grads))
    assert abs(mean - closed) < max(4 * se, 0.05 * abs(closed)), (method, mean, closed, se)
    assert se < 0.15 * abs(closed), (method, se, closed)


def test_non_es_method_is_refused_with_the_valid_names():
    family, static, _, space = _setup()
    with pytest.raises(ConfigError, match="es, pes, nres"):
        hparam_estimator("tbptt", space, family, static)
