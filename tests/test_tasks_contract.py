"""The contract every registered task family must meet (one suite over the `TASKS` registry)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.tasks import SPLITS, TaskConfig, sample_group, task_axes
from lopt.tasks.registry import TASKS, get_family
from lopt.validate import ConfigError, UnknownNameError

NAMES = sorted(TASKS)


def _small_task(family):
    """The family's smallest configuration, with dynamic values from a fixed key."""
    static = family.static_extremes()[0]
    return family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(1), static)))


def _adam_losses(task, lrs, steps, key):
    """Mean training loss over 8 fixed batches before and after ``steps`` of Adam, for each
    learning rate in ``lrs`` (vmapped in one compiled program)."""

    @jax.jit
    def run(task, key, lr):
        opt = optax.adam(lr)
        k_init, k_steps, k_eval = jax.random.split(key, 3)
        params = task.init(k_init)

        def step(carry, k):
            params, state = carry
            k_b, k_l = jax.random.split(k)
            grads = jax.grad(task.loss)(params, k_l, task.batch(k_b, "train"))
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        def mean_loss(params):
            def one(k):
                k_b, k_l = jax.random.split(k)
                return task.loss(params, k_l, task.batch(k_b, "train"))

            return jnp.mean(jax.vmap(one)(jax.random.split(k_eval, 8)))

        before = mean_loss(params)
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_steps, steps))
        return before, mean_loss(params)

    return jax.vmap(run, in_axes=(None, None, 0))(task, key, jnp.asarray(lrs, jnp.float32))


@pytest.mark.parametrize("name", NAMES)
def test_finite_loss_and_metrics_at_init(name, key):
    family = get_family(name)
    task = _small_task(family)
    params = task.init(key)
    batch = task.batch(key, "train")
    metrics = jax.jit(lambda t, p, b: t.metrics(p, key, b))(task, params, batch)
    assert "loss" in metrics
    for value in metrics.values():
        assert np.isfinite(float(value))
    np.testing.assert_allclose(metrics["loss"], task.loss(params, key, batch), rtol=1e-5)
    if "accuracy" in metrics:
        assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    for split in SPLITS:
        assert np.isfinite(float(task.loss(params, key, task.batch(key, split))))


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_under_adam(name):
    family = get_family(name)
    task = _small_task(family)
    before, after = _adam_losses(task, (1e-3, 1e-2, 1e-1), 300, jax.random.key(2))
    before, best = float(before[0]), float(np.nanmin(np.where(np.isfinite(after), after, np.nan)))
    # the best of three learning rates lowers the loss by at least 5% of its initial magnitude
    assert best < before - 0.05 * abs(before), f"{task.name}: {before} -> {after}"


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_task_and_batches(name):
    family = get_family(name)
    a, b = family.sample(jax.random.key(5)), family.sample(jax.random.key(5))
    assert a.static == b.static
    jax.tree.map(np.testing.assert_array_equal, a.dynamic, b.dynamic)
    ta, tb = family.task(a), family.task(b)
    k = jax.random.key(6)
    jax.tree.map(np.testing.assert_array_equal, ta.init(k), tb.init(k))
    jax.tree.map(np.testing.assert_array_equal, ta.batch(k, "train"), tb.batch(k, "train"))


@pytest.mark.parametrize("name", NAMES)
def test_sampling_vmaps_over_configs(name):
    family = get_family(name)
    static = family.static_extremes()[0]
    keys = jax.random.split(jax.random.key(3), 4)
    batched = jax.vmap(lambda k: family.sample_dynamic(k, static))(keys)
    for i in range(4):
        single = family.sample_dynamic(keys[i], static)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x[i], y, rtol=1e-6, atol=1e-6), batched, single)
    # a vmapped group trains like the tasks one by one
    group = sample_group(family, jax.random.key(3), static, 4)
    init_key = jax.random.key(4)
    params = jax.vmap(lambda t: t.init(init_key), in_axes=(task_axes(group),))(group)
    losses = jax.vmap(
        lambda t, p: t.loss(p, init_key, t.batch(init_key, "test")), in_axes=(task_axes(group), 0)
    )(group, params)
    for i in range(4):
        task_i = family.task(TaskConfig(static, jax.tree.map(lambda x: x[i], group.dynamic)))
        p_i = task_i.init(init_key)
        np.testing.assert_allclose(
            losses[i], task_i.loss(p_i, init_key, task_i.batch(init_key, "test")), rtol=2e-5
        )


@pytest.mark.parametrize("name", NAMES)
def test_static_extremes_bound_sampled_sizes(name):
    family = get_family(name)
    small, large = family.static_extremes()
    n_small, n_large = (
        _small_task(family).num_params(),
        family.task(TaskConfig(large, family.sample_dynamic(jax.random.key(0), large))).num_params(),
    )
    assert n_small <= n_large
    for s in range(6):
        n = family.task(family.sample(jax.random.key(s))).num_params()
        assert n_small <= n <= n_large


def test_unknown_family_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        get_family("resnet")
    for name in NAMES:
        assert name in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_static_names_field(name):
    family = get_family(name)
    static = family.static_extremes()[0]
    bad = {}
    for f in dataclasses.fields(static):
        value = getattr(static, f.name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            bad[f.name] = -1
        elif isinstance(value, str):
            bad[f.name] = "no_such_choice"
    assert bad, "every static config has an integer size or a named choice"
    for field, value in bad.items():
        with pytest.raises(ConfigError, match=field):
            dataclasses.replace(static, **{field: value})
