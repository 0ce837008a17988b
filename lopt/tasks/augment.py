r"""Task augmentation by reparametrization: the same loss, seen through rescaled weights.

`Reparametrized(base, global_range=a, tensor_range=b)` wraps a task family. Each sampled task
draws a global log-scale ln c ~ U(−a ln 10, a ln 10) and, per parameter tensor k, ln c_k ~ U(−b ln
10, b ln 10); with s_k = c·c_k the optimizer trains w' where the base task's weights are w = s ⊙ w':

.. math::
    w'_0 = w_0 / s, \qquad L'(w') = L(s \odot w'), \qquad \nabla L'(w') = s \odot \nabla L(w)

so the loss curve of any optimizer that is invariant to per-tensor rescaling is unchanged, and an
optimizer that is not (every learned optimizer with an absolute step size) must find each
tensor's scale from what it observes, as on tasks it has never seen. Celo and VeLO meta-train
on such reparametrizations; here they are a `TaskFamily` like any other, so the unroller, the
estimators and the checkpoints need no change. The static structure (what picks the compiled
program) is the base family's; the scales are dynamic values, drawn per task by a pure function of
the key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from lopt.tasks.base import PyTree, Task, TaskConfig, TaskFamily
from lopt.validate import check_range


@dataclasses.dataclass(frozen=True)
class Reparametrized(TaskFamily):
    """``base`` with every task's weights rescaled, globally and per tensor (log10 half-widths)."""

    base: TaskFamily
    global_range: float = 1.0  # a: the global scale c is 10^U(−a, a)
    tensor_range: float = 1.0  # b: each tensor's scale c_k is 10^U(−b, b)

    def __post_init__(self):
        check_range("global_range", self.global_range, 0.0, 10.0)
        check_range("tensor_range", self.tensor_range, 0.0, 10.0)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name

    def describe(self, static: Any) -> str:
        return f"{self.base.describe(static)}, reparam 10^±{self.global_range:g}·10^±{self.tensor_range:g}"

    def sample_static(self, key: jax.Array) -> Any:
        return self.base.sample_static(key)

    def static_extremes(self) -> tuple[Any, Any]:
        return self.base.static_extremes()

    def _num_tensors(self, static: Any, dynamic: PyTree) -> int:
        inner = Task(dynamic=dynamic, data=None, family=self.base, static=static)
        return len(jax.tree.leaves(jax.eval_shape(lambda k: self.base.init(k, inner), jax.random.key(0))))

    def sample_dynamic(self, key: jax.Array, static: Any) -> PyTree:
        k_base, k_global, k_tensor = jax.random.split(key, 3)
        base = self.base.sample_dynamic(k_base, static)
        n = self._num_tensors(static, base)
        ln10 = math.log(10.0)
        g = jax.random.uniform(k_global, (), jnp.float32, -self.global_range, self.global_range) * ln10
        t = jax.random.uniform(k_tensor, (n,), jnp.float32, -self.tensor_range, self.tensor_range) * ln10
        return {"base": base, "log_scale": g + t}

    def task(self, cfg: TaskConfig) -> Task:
        return Task(dynamic=cfg.dynamic, data=self.base.load_data(cfg.static), family=self, static=cfg.static)

    def load_data(self, static: Any) -> PyTree:
        return self.base.load_data(static)

    def _inner(self, task: Task) -> Task:
        return Task(dynamic=task.dynamic["base"], data=task.data, family=self.base, static=task.static)

    def _scaled(self, params: PyTree, task: Task, sign: float) -> PyTree:
        leaves, treedef = jax.tree.flatten(params)
        scales = jnp.exp(sign * task.dynamic["log_scale"])
        return jax.tree.unflatten(treedef, [(x * scales[i]).astype(x.dtype) for i, x in enumerate(leaves)])

    def init(self, key: jax.Array, task: Task) -> PyTree:
        """w'_0 = w_0 / s."""
        return self._scaled(self.base.init(key, self._inner(task)), task, -1.0)

    def batch(self, key: jax.Array, split: str, task: Task) -> PyTree:
        return self.base.batch(key, split, self._inner(task))

    def loss(self, params: PyTree, key: jax.Array, batch: PyTree, task: Task) -> jax.Array:
        """L'(w') = L(s ⊙ w')."""
        return self.base.loss(self._scaled(params, task, 1.0), key, batch, self._inner(task))

    def metrics(self, params: PyTree, key: jax.Array, batch: PyTree, task: Task) -> dict[str, jax.Array]:
        return self.base.metrics(self._scaled(params, task, 1.0), key, batch, self._inner(task))


def unwrap(family: TaskFamily) -> TaskFamily:
    """The base family of a `Reparametrized` one (itself otherwise)."""
    return family.base if isinstance(family, Reparametrized) else family
