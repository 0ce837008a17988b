"""Learned optimizers: registry, theta files, invariances, live loss features, vmap/grad over theta, pytrees.

Invariances that hold, and are tested here:
* ``mlp``: the update is unchanged when one tensor's whole gradient history is multiplied by c > 0
  (every feature is normalized by its second moment over the tensor), and when a parameter tensor
  is multiplied by c > 0 (its feature is normalized too). ``hierarchical`` is not gradient-scale
  invariant, by design: its LSTM sees log-norms and its clipping is absolute.
* ``mlp`` and ``hierarchical``: permuting the entries of a tensor permutes its update; reordering
  the tensors of the tree (the LSTM message is a mean over tensors) reorders the updates.
* ``adam_lr`` and ``sgdm`` assign learning-rate slots by leaf position, so they are not
  tree-order equivariant (documented in `lopt.optimizers.learned.hyper`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_close

from lopt.optimizers.learned import (
    LEARNED,
    MLPOptimizer,
    ThetaMismatchError,
    get_learned,
    load_theta,
    save_theta,
)
from lopt.validate import UnknownNameError

NAMES = list(LEARNED)


def params_tree():
    k1, k2 = jax.random.split(jax.random.key(3))
    return {"w": jax.random.normal(k1, (6, 5)), "b": 0.1 * jax.random.normal(k2, (5,))}


def loss_fn(params):
    return sum(jnp.sum(jnp.sin(p) + 0.5 * p**2) for p in jax.tree.leaves(params))


def run(opt, params, steps, grad_fn=None, losses=None, valid=None):
    """Updates of ``steps`` steps applying them; grads from ``grad_fn(t, params)`` (default: of loss_fn)."""
    state = opt.init(params)
    update = jax.jit(opt.update)
    out = []
    for t in range(steps):
        g = jax.grad(loss_fn)(params) if grad_fn is None else grad_fn(t, params)
        kw = {}
        if losses is not None:
            kw["loss"] = losses[t]
        if valid is not None:
            kw["valid_loss"] = valid[t]
        u, state = update(g, state, params, **kw)
        out.append(u)
        params = optax.apply_updates(params, u)
    return out


def test_registry_constructs_without_arguments(key):
    for name in NAMES:
        learned = get_learned(name)()
        theta = learned.init(key)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(theta))
        assert learned.state_floats_per_param() >= 1
    with pytest.raises(UnknownNameError, match="valid learned optimizer names are: adam_lr, hierarchical"):
        get_learned("velo")


@pytest.mark.parametrize("name", NAMES)
def test_a_jitted_step_can_donate_the_state(name, key):
    """No two state leaves share a buffer (XLA refuses to donate one twice), and the donated step
    gives the same update as the plain one."""
    learned = LEARNED[name]()
    tx = learned.transform(learned.init(key), num_steps=100)
    params = params_tree()
    state = tx.init(params)
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    assert len({id(x) for x in leaves}) == len(leaves), f"{name}: state leaves share buffers"
    grads = jax.grad(loss_fn)(params)
    want, _ = jax.jit(tx.update)(grads, state, params, loss=jnp.float32(1.0))
    donated = jax.jit(tx.update, donate_argnums=(1,))
    got, _ = donated(grads, tx.init(params), params, loss=jnp.float32(1.0))
    assert_trees_close(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_state_floats_per_param(name, key):
    """The state is state_floats_per_param() floats per parameter plus O(#tensors) extras."""
    learned = LEARNED[name]()
    params = {"w": jnp.zeros((100, 50)), "b": jnp.zeros((50,))}
    state = learned.transform(learned.init(key), num_steps=100).init(params)
    floats = sum(x.size for x in jax.tree.leaves(state))
    n = 100 * 50 + 50
    extra = floats - learned.state_floats_per_param() * n
    assert 0 <= extra <= 200, f"{name}: {floats} state floats for {n} params"


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_mlp_invariant_to_gradient_and_param_scale_per_tensor(scale, key):
    learned = MLPOptimizer()
    opt = learned.transform(learned.init(key))
    params = params_tree()
    grads = [jax.tree.map(lambda p, t=t: jnp.cos(p + t), params) for t in range(4)]
    base = run(opt, params, 4, lambda t, p: grads[t])
    scaled = run(opt, params, 4, lambda t, p: {"w": grads[t]["w"] * scale, "b": grads[t]["b"]})
    assert_trees_close(base, scaled, rtol=1e-4, atol=1e-8)
    # a parameter tensor scaled by c (its gradients fixed): the same update, step after step
    state_a, state_b = opt.init(params), opt.init({"w": params["w"] * scale, "b": params["b"]})
    for t in range(3):
        ua, state_a = opt.update(grads[t], state_a, params)
        ub, state_b = opt.update(grads[t], state_b, {"w": params["w"] * scale, "b": params["b"]})
        assert_trees_close(ua, ub, rtol=1e-4, atol=1e-8)


def test_hierarchical_sees_gradient_scale(key):
    """Not invariant, by design: the LSTM reads log gradient norms."""
    learned = LEARNED["hierarchical"]()
    theta = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(key, x.shape), learned.init(key))
    opt = learned.transform(theta)
    params = params_tree()
    base = run(opt, params, 3, lambda t, p: jax.tree.map(jnp.cos, p))
    scaled = run(opt, params, 3, lambda t, p: jax.tree.map(lambda x: 1e-3 * jnp.cos(x), p))
    assert not np.allclose(np.asarray(base[-1]["w"]), np.asarray(scaled[-1]["w"]), rtol=1e-3)


@pytest.mark.parametrize("name", ["mlp", "hierarchical"])
def test_permutation_equivariance(name, key):
    learned = LEARNED[name]()
    opt = learned.transform(learned.init(key))
    params = params_tree()
    perm = jax.random.permutation(jax.random.key(5), 30)
    permute = lambda tree: {"w": tree["w"].reshape(-1)[perm].reshape(6, 5), "b": tree["b"]}  # noqa: E731
    losses = jnp.asarray([3.0, 2.0, 1.0])
    base = run(opt, params, 3, losses=losses)
    moved = run(opt, permute(params), 3, losses=losses)
    assert_trees_close([permute(u) for u in base], moved, rtol=1e-5, atol=1e-9)
    # reordering the tensors of the tree (dict keys sort differently) reorders the updates
    renamed = run(
        opt,
        {"a": params["w"], "z": params["b"]},
        3,
        lambda t, p: {"a": jnp.cos(p["a"]), "z": jnp.cos(p["z"])},
        losses,
    )
    ref = run(opt, params, 3, lambda t, p: {"w": jnp.cos(p["w"]), "b": jnp.cos(p["b"])}, losses)
    assert_trees_close([{"w": u["a"], "b": u["z"]} for u in renamed], ref, rtol=1e-5, atol=1e-9)


def test_loss_features_are_live(key):
    """Different loss or valid_loss histories change the later updates; no valid_loss holds the last value."""
    learned = LEARNED["hierarchical"]()
    theta = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(key, x.shape), learned.init(key))
    opt = learned.transform(theta)
    params = params_tree()
    nan = jnp.float32(jnp.nan)
    losses = [jnp.float32(x) for x in (3.0, 2.0, 1.5, 1.2, 1.0, 0.9)]
    valid = [jnp.float32(2.0), nan, nan, jnp.float32(1.8), nan, nan]
    base = run(opt, params, 6, losses=losses, valid=valid)
    other_loss = run(opt, params, 6, losses=[jnp.float32(9.0), *losses[1:]], valid=valid)
    other_valid = run(opt, params, 6, losses=losses, valid=[valid[0], nan, nan, jnp.float32(5.0), nan, nan])
    for other in (other_loss, other_valid):
        assert not np.allclose(np.asarray(base[-1]["w"]), np.asarray(other[-1]["w"]), rtol=1e-6, atol=0)
    # NaN means "no fresh value", exactly as leaving the keyword out
    state_nan = state_none = opt.init(params)
    g = jax.grad(loss_fn)(params)
    for t in range(3):
        u1, state_nan = opt.update(g, state_nan, params, loss=losses[t], valid_loss=nan)
        u2, state_none = opt.update(g, state_none, params, loss=losses[t])
        assert_trees_close(u1, u2, rtol=0, atol=0)


def inner_loss(learned, theta, steps=4):
    """Loss after ``steps`` inner steps from fixed params: what an outer gradient differentiates."""
    opt = learned.transform(theta, num_steps=steps)
    params = params_tree()

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p, loss=loss, valid_loss=loss)
        return (optax.apply_updates(p, u), s), loss

    (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return loss_fn(p)


@pytest.mark.parametrize("name", NAMES)
def test_grad_and_vmap_over_theta(name, key):
    learned = LEARNED[name]()
    theta = learned.init(key)
    grad = jax.jit(jax.grad(lambda th: inner_loss(learned, th)))(theta)
    leaves = jax.tree.leaves(grad)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in leaves), f"{name}: zero meta-gradient"
    # vmap over a population of 4 thetas equals 4 separate runs
    keys = jax.random.split(jax.random.key(9), 4)
    population = [jax.tree.map(lambda x, k=k: x + 0.1 * jax.random.normal(k, x.shape), theta) for k in keys]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *population)
    batched = jax.jit(jax.vmap(lambda th: inner_loss(learned, th)))(stacked)
    one = jax.jit(lambda th: inner_loss(learned, th))
    single = jnp.stack([one(th) for th in population])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(single), rtol=1e-5)


class Linear(NamedTuple):  # a NamedTuple layer, as some libraries use
    w: jax.Array
    b: jax.Array | None


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Model:  # an Equinox-style module: a registered dataclass; filtered-out leaves are None
    layers: list
    scale: jax.Array
    frozen: jax.Array | None


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_any_pytree_and_dtype(name, dtype, key):
    params = Model(
        layers=[
            Linear(jnp.ones((4, 3), dtype), None),
            Linear(jnp.full((3, 2), 0.5, dtype), jnp.zeros((2,), dtype)),
        ],
        scale=jnp.ones((), dtype),
        frozen=None,
    )
    learned = LEARNED[name]()
    opt = learned.transform(learned.init(key), num_steps=100)
    state = opt.init(params)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * jnp.asarray(0.1, p.dtype), params)
    updates, state = jax.jit(lambda g, s, p: opt.update(g, s, p, loss=jnp.float32(1.0)))(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert all(u.dtype == dtype and bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_save_load_roundtrip_and_mismatches(tmp_path, key):
    learned = LEARNED["hierarchical"]()
    theta = learned.init(key)
    path = tmp_path / "theta.safetensors"
    save_theta(path, learned, theta)
    rebuilt, loaded = load_theta(path)
    assert rebuilt == learned
    assert_trees_close(loaded, theta, rtol=0, atol=0)
    _, loaded = load_theta(path, learned)
    assert_trees_close(loaded, theta, rtol=0, atol=0)
    with pytest.raises(
        ThetaMismatchError,
        match="theta of the 'hierarchical' learned optimizer; it cannot be loaded into 'mlp'",
    ):
        load_theta(path, LEARNED["mlp"]())
    with pytest.raises(ThetaMismatchError, match="differs from the requested"):
        load_theta(path, LEARNED["hierarchical"](hidden=(8,)))
    # a file saved by another version of the same architecture
    mlp = MLPOptimizer()
    save_theta(tmp_path / "mlp.safetensors", mlp, mlp.init(key))

    class MLPv2(MLPOptimizer):
        version = 2

    with pytest.raises(
        ThetaMismatchError, match="saved by 'mlp' version 1, but this lopt's 'mlp' is version 2"
    ):
        load_theta(tmp_path / "mlp.safetensors", MLPv2())
    # not a lopt file, and a theta that does not fit its architecture
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ThetaMismatchError, match="not a lopt theta file"):
        load_theta(tmp_path / "other.safetensors")
    with pytest.raises(ThetaMismatchError, match="wrong arrays"):
        save_theta(tmp_path / "bad.safetensors", mlp, {"skip": jnp.zeros(3)})
