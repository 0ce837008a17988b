"""The learned log step (``log_step_mult`` c_lr > 0) of `mlp` and `hierarchical`, and ``--arch``.

Reference: the update rule by hand. At init (λ = 0, the per-tensor head 0) the step equals the
architecture without the learned step; setting λ multiplies every step by exp(c_lr·λ); the
hierarchical head's bias b multiplies it by exp(c_lr·b), and its weights act per tensor through
the LSTM output h_k, read here from the optimizer state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

from lopt.config import MetaTrainConfig
from lopt.optimizers.learned import LEARNED, load_theta, save_theta
from lopt.pretrained import PRETRAINED
from lopt.validate import ConfigError

pytestmark = pytest.mark.strict_promotion

C_LR = 10.0


def _problem():
    k1, k2 = jax.random.split(jax.random.key(5))
    params = {"w": jax.random.normal(k1, (6, 5)), "b": 0.1 * jax.random.normal(k2, (5,))}
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    return params, grads


def _updates(learned, theta, steps=3):
    """Updates after ``steps`` steps on fixed gradients (so the accumulators are not trivial)."""
    params, grads = _problem()
    opt = learned.transform(theta)
    state = opt.init(params)
    for _ in range(steps):
        updates, new_state = opt.update(grads, state, params, loss=jnp.float32(1.0))
        state_before, state = state, new_state
    return updates, state_before


@pytest.mark.parametrize("name", ["mlp", "hierarchical"])
def test_init_matches_architecture_without_learned_step(name):
    plain, stepped = LEARNED[name](), LEARNED[name](log_step_mult=C_LR)
    key = jax.random.key(0)
    theta = stepped.init(key)
    assert float(theta["log_step"]) == 0.0
    base = {k: v for k, v in theta.items() if k not in ("log_step", "to_step")}
    assert_trees_close(
        jax.tree.map(np.asarray, base), jax.tree.map(np.asarray, plain.init(key)), rtol=0, atol=0
    )
    assert_trees_close(_updates(stepped, theta)[0], _updates(plain, plain.init(key))[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["mlp", "hierarchical"])
def test_global_log_step_scales_every_update(name):
    learned = LEARNED[name](log_step_mult=C_LR)
    theta = learned.init(jax.random.key(1))
    base, _ = _updates(learned, theta)
    scaled, _ = _updates(learned, {**theta, "log_step": jnp.float32(-0.23)})
    expected = jax.tree.map(lambda u: u * np.exp(C_LR * -0.23), base)
    assert_trees_close(scaled, expected, rtol=1e-5, atol=0)


def test_hierarchical_per_tensor_log_step_reads_the_lstm():
    learned = LEARNED["hierarchical"](log_step_mult=C_LR)
    theta = learned.init(jax.random.key(2))
    base, state = _updates(learned, theta)
    w = 0.01 * jax.random.normal(jax.random.key(3), theta["to_step"]["w"].shape)
    head = {"w": w, "b": jnp.asarray([0.05], jnp.float32)}
    moved, _ = _updates(learned, {**theta, "to_step": head})
    # h_k of the last step is the LSTM output after the previous state; recompute it by hand
    params, grads = _problem()
    opt = learned.transform(theta)
    _, new_state = opt.update(grads, state, params, loss=jnp.float32(1.0))
    log_step = C_LR * (np.asarray(new_state.lstm_h) @ np.asarray(w)[:, 0] + 0.05)  # (tensors,)
    leaves = jax.tree.leaves(base)
    expected = jax.tree.unflatten(jax.tree.structure(base), [u * np.exp(s) for u, s in zip(leaves, log_step)])
    assert len(set(np.round(log_step, 6))) == len(leaves)  # the head really acts per tensor
    assert_trees_close(moved, expected, rtol=1e-5, atol=0)


def test_file_without_the_field_loads_into_the_default_architecture():
    """A theta saved before log_step_mult existed (the shipped mlp-small-v1) loads into mlp()."""
    learned, theta = load_theta(PRETRAINED["mlp-small-v1"].weights_path, LEARNED["mlp"]())
    assert learned.config.log_step_mult == 0.0 and "log_step" not in theta


def test_save_load_with_learned_step(tmp_path):
    learned = LEARNED["hierarchical"](log_step_mult=C_LR)
    theta = {**learned.init(jax.random.key(0)), "log_step": jnp.float32(0.4)}
    save_theta(tmp_path / "t.safetensors", learned, theta)
    rebuilt, loaded = load_theta(tmp_path / "t.safetensors")
    assert rebuilt == learned and float(loaded["log_step"]) == pytest.approx(0.4)


def test_arch_flag_builds_and_validates():
    cfg = MetaTrainConfig(learned="hierarchical", arch='{"log_step_mult": 10, "hidden": [8, 8]}')
    built = cfg.build_learned()
    assert built.config.log_step_mult == 10 and built.config.hidden == (8, 8)
    with pytest.raises(ConfigError, match="valid fields: .*log_step_mult"):
        MetaTrainConfig(learned="mlp", arch='{"lstm_hidden": 8}')
    with pytest.raises(ConfigError, match="not valid JSON"):
        MetaTrainConfig(arch="{log_step_mult: 10}")
