"""`Rule`: one learned architecture's step in torch, for one param group, with its theta.

A rule is built from the JAX side's ``(learned, theta)`` pair (`lopt.load_theta`): ``learned``
gives the static architecture (its config), ``theta`` the meta-parameters, converted once to
float32 torch tensors. Per-parameter state is a dict of flat tensors (``init_param``), per-group
state a dict of small tensors (``init_group``); ``step`` updates params and both states in place.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any

import numpy as np
import torch

from lopt.optimizers.learned.base import LearnedOptimizer


def theta_to_torch(theta: Any) -> Any:
    """A nested dict of arrays (JAX, numpy or torch) as float32 CPU torch tensors."""
    if isinstance(theta, dict):
        return {k: theta_to_torch(v) for k, v in theta.items()}
    if isinstance(theta, torch.Tensor):
        return theta.detach().to("cpu", torch.float32).clone()
    return torch.from_numpy(np.array(theta, dtype=np.float32))


def _to(theta: Any, device: torch.device) -> Any:
    return {k: _to(v, device) for k, v in theta.items()} if isinstance(theta, dict) else theta.to(device)


def architecture_id(learned: LearnedOptimizer) -> str:
    """ "name vVERSION {config}": what a saved optimizer state was computed by."""
    return (
        f"{learned.name} v{learned.version} {json.dumps(dataclasses.asdict(learned.config), sort_keys=True)}"
    )


class Rule(abc.ABC):
    """Abstract: a learned architecture's update over one param group (subclasses are final)."""

    config_class: type

    def __init__(self, learned: LearnedOptimizer, theta: Any, compile: bool = False):
        if not isinstance(learned.config, self.config_class):
            raise TypeError(f"{type(self).__name__} runs {self.config_class.__name__}, got {learned!r}")
        self.learned = learned
        self.config = learned.config
        self.theta = theta_to_torch(theta)
        self.compile = compile  # run the per-tensor passes as compiled kernels (`lopt.torch.kernels`)
        self._on_device: dict[torch.device, Any] = {torch.device("cpu"): self.theta}

    @property
    def architecture(self) -> str:
        return architecture_id(self.learned)

    def theta_on(self, device: torch.device) -> Any:
        """Theta on ``device`` (copied once per device)."""
        if device not in self._on_device:
            self._on_device[device] = _to(self.theta, device)
        return self._on_device[device]

    @abc.abstractmethod
    def init_param(self, p: torch.Tensor, index: int) -> dict[str, Any]:
        """The initial state of the ``index``-th parameter of its group."""

    @abc.abstractmethod
    def init_group(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The initial state shared by the group (step count, and per-group statistics)."""

    @abc.abstractmethod
    def step(
        self,
        params: list,
        grads: list,
        states: list,
        group_state: dict,
        loss=None,
        valid_loss=None,
        num_steps: int | None = None,
    ) -> None:
        """One step over the group's params that have gradients, in place (``num_steps``: the run's
        length T, read by the horizon-aware architectures only)."""

    def accumulators(self, state: dict) -> tuple[list, list]:
        spec = self.config.spec
        return (
            [state[f"mom{i}"] for i in range(len(spec.mom_decays))],
            [state[f"rms{j}"] for j in range(len(spec.rms_decays))],
        )

    @staticmethod
    def apply(p: torch.Tensor, u: torch.Tensor) -> None:
        """θ ← θ + u, u cast to θ's dtype first (as `optax.apply_updates` of an update in θ's dtype)."""
        p.add_(u.view(p.shape).to(p.dtype))
