"""What crosses process boundaries: pytrees as host arrays (typed PRNG keys as their key data), and
the message a worker sends for each estimate."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lopt.checkpoint import _weakly_typed

PyTree = Any


@dataclasses.dataclass(frozen=True)
class _Key:
    data: np.ndarray  # jax.random.key_data
    impl: str  # jax.random.key_impl


@dataclasses.dataclass(frozen=True)
class _Weak:
    data: np.ndarray  # a weakly typed array's values (weak types promote differently: keep them)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(tree: PyTree) -> PyTree:
    """``tree`` with every leaf a numpy array (typed keys become `_Key`): picklable, device-free."""

    def leaf(x):
        if _is_key(x):
            return _Key(np.asarray(jax.random.key_data(x)), str(jax.random.key_impl(x)))
        return _Weak(np.asarray(x)) if getattr(x, "weak_type", False) else np.asarray(x)

    return jax.tree.map(leaf, tree)


def from_host(tree: PyTree) -> PyTree:
    """The inverse of `to_host`: device arrays, typed keys restored."""

    def leaf(x):
        if isinstance(x, _Key):
            return jax.random.wrap_key_data(x.data, impl=x.impl)
        return _weakly_typed(x.data) if isinstance(x, _Weak) else jax.numpy.asarray(x)

    return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, _Key | _Weak))


def nbytes(tree: PyTree) -> int:
    """Bytes of the array data of a `to_host` tree."""
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, _Key | _Weak))
    return sum(np.asarray(x.data if isinstance(x, _Key | _Weak) else x).nbytes for x in leaves)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One worker's estimates for its groups on one version of theta.

    The learner applies each (group, version, repeat) at most once; ``worker``, ``incarnation``
    (0, then +1 at each replacement) and ``seq`` (the worker's message count) name the message."""

    worker: int
    incarnation: int
    seq: int
    groups: tuple[int, ...]
    version: int  # theta version the estimates were computed on (outer steps applied to it)
    repeat: int  # n-th extra estimate on that version (asynchronous mode; 0 otherwise)
    grads: tuple  # one theta-like tree of numpy arrays per group
    metrics: tuple  # one dict of numpy arrays per group
    seconds: float  # wall time of the computation on the worker
    # CPU time of the worker's process meanwhile (all its threads): ≈ seconds on a core of its own,
    # less when other processes share the core (then the wall time measures them too)
    cpu_seconds: float = float("nan")
