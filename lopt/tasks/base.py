"""The `Task` and `TaskFamily` contracts.

A task family samples configurations; a configuration builds a task::

    cfg = family.sample(key)          # TaskConfig(static, dynamic)
    task = family.task(cfg)           # Task: a pytree of (dynamic values, device-resident data)
    params = task.init(key_init)
    batch = task.batch(key_batch, "train")     # sampled inside jit, no Python data loader
    loss = task.loss(params, key_loss, batch)  # scalar, differentiable in params
    metrics = task.metrics(params, key_loss, batch)  # {"loss": ..., "accuracy": ...}

A configuration has two parts (docs/design.md):

- ``static``: a frozen, hashable dataclass with the structure (sizes, depth, activation, dataset,
  batch size). It picks the compiled program and is sampled on the host.
- ``dynamic``: a pytree of arrays (init scale, noise levels, ...). It is sampled by a pure JAX
  function of the key, so `jax.vmap` over keys gives a batch of configurations.

`Task` is a registered pytree whose leaves are the dynamic values and the dataset arrays, so a
jitted function takes it as an argument (the data is never baked into the compiled program as a
constant) and tasks sharing static structure vmap as one group: stack them with `stack_tasks`
and map with `in_axes=task_axes(tasks)` (dynamic values mapped, data shared).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SPLITS = ("train", "inner_valid", "outer_valid", "test")

PyTree = Any


class TaskConfig(NamedTuple):
    """A sampled task configuration: hashable ``static`` structure and an array pytree ``dynamic``."""

    static: Any
    dynamic: PyTree


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Task:
    """One training problem, as a pytree: leaves are ``dynamic`` values and ``data`` arrays.

    Build it with ``family.task(cfg)``; its methods delegate to the family.
    """

    dynamic: PyTree
    data: PyTree
    family: TaskFamily = dataclasses.field(metadata=dict(static=True))
    static: Any = dataclasses.field(metadata=dict(static=True))

    @property
    def name(self) -> str:
        """A short human-readable description, e.g. ``mlp(mnist 14x14, 64-64 relu, bs128)``."""
        return f"{self.family.name}({self.family.describe(self.static)})"

    def init(self, key: jax.Array) -> PyTree:
        """Initial params for this task."""
        return self.family.init(key, self)

    def batch(self, key: jax.Array, split: str) -> PyTree:
        """A batch from ``split`` (one of `SPLITS`), sampled with ``key`` inside jit."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not valid: choose one of {list(SPLITS)}.")
        return self.family.batch(key, split, self)

    def loss(self, params: PyTree, key: jax.Array, batch: PyTree) -> jax.Array:
        """Scalar loss of ``params`` on ``batch`` (``key`` for stochastic losses, e.g. a VAE)."""
        return self.family.loss(params, key, batch, self)

    def metrics(self, params: PyTree, key: jax.Array, batch: PyTree) -> dict[str, jax.Array]:
        """``{"loss": ...}`` plus family-specific metrics (``"accuracy"`` for classifiers)."""
        return self.family.metrics(params, key, batch, self)

    def num_params(self) -> int:
        """Number of scalar parameters (computed by shape inference, no FLOPs spent)."""
        shapes = jax.eval_shape(self.init, jax.random.key(0))
        return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))


class TaskFamily(abc.ABC):
    """A parametric distribution over tasks.

    Subclasses are frozen dataclasses whose fields describe the sampling space (their
    ``__post_init__`` validates it with `lopt.validate`), so a family instance is hashable and
    two families with the same space are equal. A subclass implements `sample_static`,
    `sample_dynamic`, `init`, `batch`, `loss`, `static_extremes` and, when it has data,
    `load_data`; classifiers also override `metrics`.
    """

    name: ClassVar[str]  # registry name, e.g. "mlp"

    # --- sampling --------------------------------------------------------------------------
    def sample(self, key: jax.Array) -> TaskConfig:
        """Sample a configuration: static structure on the host, dynamic values in JAX."""
        key_static, key_dynamic = jax.random.split(key)
        static = self.sample_static(key_static)
        return TaskConfig(static, self.sample_dynamic(key_dynamic, static))

    @abc.abstractmethod
    def sample_static(self, key: jax.Array) -> Any:
        """Host-side choice of the static structure (a frozen dataclass). Use `host_rng`."""

    @abc.abstractmethod
    def sample_dynamic(self, key: jax.Array, static: Any) -> PyTree:
        """Pure JAX sampling of the dynamic values; must be vmappable over ``key``."""

    @abc.abstractmethod
    def static_extremes(self) -> tuple[Any, Any]:
        """The static configurations with the fewest and the most parameters in the space."""

    def describe(self, static: Any) -> str:
        """A short description of a static configuration for tables and logs."""
        fields = dataclasses.fields(static)
        return ", ".join(f"{f.name}={getattr(static, f.name)}" for f in fields)

    # --- building --------------------------------------------------------------------------
    def task(self, cfg: TaskConfig) -> Task:
        """Build the task for ``cfg``; loads (cached, device-resident) data when needed."""
        return Task(dynamic=cfg.dynamic, data=self.load_data(cfg.static), family=self, static=cfg.static)

    def load_data(self, static: Any) -> PyTree:
        """Device-resident arrays this task samples batches from (cached per dataset); None if none."""
        return None

    # --- the task's functions ---------------------------------------------------------------
    @abc.abstractmethod
    def init(self, key: jax.Array, task: Task) -> PyTree:
        """Initial params."""

    @abc.abstractmethod
    def batch(self, key: jax.Array, split: str, task: Task) -> PyTree:
        """A batch from ``split``."""

    @abc.abstractmethod
    def loss(self, params: PyTree, key: jax.Array, batch: PyTree, task: Task) -> jax.Array:
        """Scalar loss."""

    def metrics(self, params: PyTree, key: jax.Array, batch: PyTree, task: Task) -> dict[str, jax.Array]:
        """Metrics on a batch; the default is the loss alone."""
        return {"loss": self.loss(params, key, batch, task)}


def host_rng(key: jax.Array) -> np.random.Generator:
    """A numpy Generator seeded from a JAX key, for host-side (static) sampling."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data).astype(np.uint64).tolist())


def stack_tasks(tasks: list[Task]) -> Task:
    """Stack tasks that share family and static structure into one task with a leading axis on
    its dynamic values (the data is shared, not copied). Map over it with `task_axes`."""
    first = tasks[0]
    for t in tasks[1:]:
        if t.family != first.family or t.static != first.static:
            raise ValueError(
                "stack_tasks needs tasks with the same family and static structure; got "
                f"{first.name} and {t.name}. Group tasks by (family, static) first."
            )
    dynamic = jax.tree.map(lambda *xs: jnp.stack(xs), *[t.dynamic for t in tasks])
    return dataclasses.replace(first, dynamic=dynamic)


def task_axes(task: Task) -> Task:
    """The `jax.vmap` ``in_axes`` for a stacked task: dynamic values on axis 0, data shared."""
    return dataclasses.replace(
        task,
        dynamic=jax.tree.map(lambda _: 0, task.dynamic),
        data=jax.tree.map(lambda _: None, task.data),
    )


def sample_group(family: TaskFamily, key: jax.Array, static: Any, n: int) -> Task:
    """``n`` tasks sharing ``static`` with independently sampled dynamic values (vmapped)."""
    dynamic = jax.vmap(lambda k: family.sample_dynamic(k, static))(jax.random.split(key, n))
    return family.task(TaskConfig(static, dynamic))
