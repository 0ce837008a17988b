"""`Reparametrized`: the same loss through rescaled weights (L'(w') = L(s ⊙ w'), ∇L' = s ⊙ ∇L),
scales within their log-uniform ranges, the base's static structure, and meta-training wiring."""

import math

import jax
import numpy as np
import pytest

from lopt.config import ConfigError, MetaTrainConfig
from lopt.tasks.augment import Reparametrized, unwrap
from lopt.tasks.base import TaskConfig
from lopt.tasks.registry import get_family


def _pair(family_name="mlp", seed=0, **space):
    base = get_family(family_name, **space)
    wrapped = Reparametrized(base, global_range=1.0, tensor_range=0.5)
    static = base.sample_static(jax.random.key(seed))
    dynamic = wrapped.sample_dynamic(jax.random.key(seed + 1), static)
    task = wrapped.task(TaskConfig(static, dynamic))
    inner = base.task(TaskConfig(static, dynamic["base"]))
    return base, wrapped, task, inner


def test_loss_and_gradients_are_the_base_tasks_through_the_scales():
    _, _, task, inner = _pair()
    key = jax.random.key(5)
    w_prime, w = task.init(key), inner.init(key)
    scales = np.exp(np.asarray(task.dynamic["log_scale"]))
    leaves_p, leaves = jax.tree.leaves(w_prime), jax.tree.leaves(w)
    assert len(scales) == len(leaves) > 1
    for i, (a, b) in enumerate(zip(leaves_p, leaves)):
        np.testing.assert_allclose(
            np.asarray(a) * scales[i], np.asarray(b), rtol=1e-5, atol=1e-7
        )  # w'_0 = w_0 / s
    batch = task.batch(jax.random.key(6), "train")
    k_loss = jax.random.key(7)
    np.testing.assert_allclose(
        float(task.loss(w_prime, k_loss, batch)), float(inner.loss(w, k_loss, batch)), rtol=1e-5
    )
    g_prime = jax.tree.leaves(jax.grad(task.loss)(w_prime, k_loss, batch))
    g = jax.tree.leaves(jax.grad(inner.loss)(w, k_loss, batch))
    for i, (a, b) in enumerate(zip(g_prime, g)):
        np.testing.assert_allclose(np.asarray(a), scales[i] * np.asarray(b), rtol=1e-4, atol=1e-7)


def test_scales_are_log_uniform_within_the_ranges():
    base = get_family("mlp")
    static = base.sample_static(jax.random.key(0))
    wrapped = Reparametrized(base, global_range=1.0, tensor_range=0.5)
    logs = jax.vmap(lambda k: wrapped.sample_dynamic(k, static)["log_scale"])(
        jax.random.split(jax.random.key(1), 2000)
    )
    log10 = np.asarray(logs) / math.log(10)
    assert np.all(np.abs(log10) <= 1.5 + 1e-6)
    assert abs(log10.std() - math.sqrt(1 / 3 + 0.25 / 3)) < 0.03  # U(−1, 1) + U(−½, ½): var 1/3 + 1/12
    same_task = log10[:, 0] - log10[:, 1]  # the global part cancels between two tensors of a task
    assert abs(same_task.std() - math.sqrt(2 * 0.25 / 3)) < 0.02
    assert wrapped.sample_static(jax.random.key(3)) == base.sample_static(jax.random.key(3))
    assert unwrap(wrapped) is base and unwrap(base) is base
    with pytest.raises(ConfigError, match="tensor_range"):
        Reparametrized(base, tensor_range=-1.0)


def test_meta_training_wraps_the_groups_and_keeps_the_base_reference():
    from lopt.meta_train.trainer import MetaTrainer

    cfg = MetaTrainConfig(
        family="quadratic",
        space='{"dims": [4]}',
        num_groups=1,
        num_particles=2,
        truncation_length=5,
        horizon=(20, 50),
        validate_every=0,
        loss_reference="zero",
        reparam=(1.0, 0.5),
    )
    trainer = MetaTrainer.from_config(cfg)
    assert all(isinstance(est.family, Reparametrized) for est in trainer.estimators)
    assert "reparam" in trainer.describe()[0]
    state = trainer.init(jax.random.key(0))
    state, metrics = trainer.step(state, trainer.data(), trainer.hparams)
    assert np.isfinite(float(metrics["meta_loss"]))
    with pytest.raises(ConfigError, match="reparam"):
        MetaTrainConfig(reparam=(-1.0, 0.0))
