"""A pytree as named host tensors and back, as checkpoints store it (`lopt.checkpoint`).

Each leaf is named by its tree path (`jax.tree_util.keystr`, e.g. ``.theta['w']``; ``<root>`` for
a state that is one array); a typed PRNG key is stored as its `jax.random.key_data` with its
implementation's name beside it. On the way back, each leaf takes the template's type: a jax
array (weak type kept), a numpy array or scalar, or a Python scalar -- bits unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lopt import serialization

_ROOT = "<root>"  # tensor name of a state that is a single array (keystr gives "")


def leaf_name(path: tuple) -> str:
    return jax.tree_util.keystr(path) or _ROOT


def is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(state: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by leaf name in tree order, key implementation by leaf name)."""
    named = jax.tree_util.tree_flatten_with_path(state)[0]
    names = [leaf_name(path) for path, _ in named]
    keys = {name: str(jax.random.key_impl(x)) for name, (_, x) in zip(names, named) if is_key(x)}
    leaves = [jax.random.key_data(x) if name in keys else x for name, (_, x) in zip(names, named)]
    tensors = {}
    for name, x in zip(names, jax.device_get(leaves)):
        array = np.asarray(x)
        array = array if array.flags.c_contiguous else array.copy(order="C")
        if array.dtype not in serialization.CODES:
            raise ValueError(
                f"state leaf {name} has dtype {array.dtype}, which a checkpoint cannot store; "
                f"supported: {sorted(str(d) for d in serialization.CODES)} and typed PRNG keys."
            )
        tensors[name] = array
    return tensors, keys


def template_spec(leaf: Any) -> tuple[tuple[int, ...], str]:
    if isinstance(leaf, jax.ShapeDtypeStruct | jax.Array | np.ndarray | np.generic):
        return tuple(leaf.shape), str(leaf.dtype)
    array = np.asarray(leaf)
    return array.shape, str(array.dtype)


def weakly_typed(array: np.ndarray) -> jax.Array:
    """``array`` as a weakly typed jax array (as made from Python scalars), bits unchanged.

    A weak leaf restored as a strong one would promote differently (``weak f32 * bf16`` is bf16,
    ``f32 * bf16`` is f32) and break exact resumption; lax.full_like keeps a weak template's type.
    """
    zero = {"f": 0.0, "i": 0, "u": 0, "c": 0j, "b": False}[array.dtype.kind]
    weak = jax.vmap(lambda v: lax.full_like(jnp.asarray(zero), v))(jnp.asarray(array).reshape(-1))
    return weak.reshape(array.shape) if weak.dtype == array.dtype else jnp.asarray(array)


def restore_leaf(leaf: Any, array: np.ndarray, key_impl: str | None) -> Any:
    if key_impl is not None:
        return jax.random.wrap_key_data(array, impl=key_impl)
    if isinstance(leaf, jax.ShapeDtypeStruct | jax.Array):
        return weakly_typed(array) if getattr(leaf, "weak_type", False) else jnp.asarray(array)
    if isinstance(leaf, np.ndarray):
        return array
    if isinstance(leaf, np.generic):
        return array[()]
    return type(leaf)(array.item())  # Python bool / int / float / complex
