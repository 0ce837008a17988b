"""The `LearnedOptimizer` contract: ``init(key) -> theta`` and ``transform(theta) -> optax transform``.

    learned = LEARNED["mlp"]()                      # default architecture, no arguments
    theta = learned.init(jax.random.key(0))         # a dict of float32 arrays: the meta-parameters
    opt = learned.transform(theta)                  # an optax.GradientTransformationExtraArgs
    updates, state = opt.update(grads, state, params, loss=loss, valid_loss=valid_loss)

The architecture (sizes, timescales, output scales) is a frozen dataclass, ``learned.config``: the
static part, which picks the compiled program. ``theta`` is the dynamic part, a pytree of arrays:
``transform`` is cheap and pure, so `jax.grad`, `jax.vmap` (an ES population) and `lax.scan` all
see through it. Nothing meta-learned lives anywhere but in ``theta``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

Theta = dict[str, Any]  # a nested dict of float32 arrays


class LearnedOptimizer(abc.ABC):
    """Abstract: a factory of optax transformations parameterized by ``theta``.

    Subclasses are final, set ``name`` (the registry key), ``version`` (bumped whenever the meaning
    of theta changes, so old checkpoints fail loudly) and ``config_class`` (a frozen dataclass of
    static architecture fields, every field with a default).
    """

    name: ClassVar[str]
    version: ClassVar[int]
    config_class: ClassVar[type]
    needs_num_steps: ClassVar[bool] = False  # True: transform(theta, num_steps=T) / update(..., num_steps=T)

    def __init__(self, config: Any = None, **overrides: Any):
        """``config`` (default: ``config_class()``) with ``overrides`` replacing fields by name."""
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{self.name}: config must be a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = dataclasses.replace(config, **overrides)

    @abc.abstractmethod
    def init(self, key: jax.Array) -> Theta:
        """The initial meta-parameters (a nested dict of float32 arrays)."""

    @abc.abstractmethod
    def transform(self, theta: Theta, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        """The optimizer that ``theta`` defines; cheap, pure and traceable in ``theta``.

        ``num_steps`` is the length T of the training run: a horizon-aware architecture
        (``needs_num_steps``) schedules its step over it and raises without it (or without
        ``update(..., num_steps=T)``); the others ignore it.
        """

    @abc.abstractmethod
    def state_floats_per_param(self) -> int:
        """Floats of optimizer state per parameter (float32), not counting O(#tensors) terms."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config == other.config  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.config))


def as_f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x).astype(jnp.float32)


def tensor_slot(index: int, num_slots: int) -> int:
    """Which per-tensor slot of theta the ``index``-th leaf of the flattened params uses."""
    return index % num_slots
