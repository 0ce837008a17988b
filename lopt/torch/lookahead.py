r"""`Lookahead` around any `torch.optim.Optimizer` (lopt's learned ones included).

With θ the params (fast weights) and φ the slow weights (φ_0 = θ at a param's first step), each
``step`` runs the inner optimizer and, on every k-th call, syncs:

.. math::
    \phi \leftarrow \phi + \alpha(\theta' - \phi), \qquad \theta \leftarrow \phi

the update rule of `lopt.lookahead` (JAX), to which it is tested equal. The inner state is kept
across syncs. ``param_groups`` is the inner optimizer's own list, so `add_param_group` (on either)
reaches both and torch's lr schedulers see the inner learning rates. ``state_dict`` is the inner
optimizer's with a ``"lookahead"`` entry (slow weights by param index, the count, k and α): it
round-trips through `load_state_dict`, and a plain inner optimizer can load it too.

References: Zhang, Lucas, Hinton, Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back",
arXiv:1907.08610.
"""

from __future__ import annotations

from typing import Any

import torch

from lopt.validate import ConfigError, check_range


class Lookahead(torch.optim.Optimizer):
    """Lookahead(optimizer, k=5, alpha=0.5): every k steps, pull slow weights toward the fast ones by α."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Lookahead wraps a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"Lookahead k={k!r} must be an int >= 1 (it sets the sync period).")
        check_range("Lookahead alpha", float(alpha), 0.0, 1.0)
        self.optimizer, self.k, self.alpha, self.count = optimizer, k, float(alpha), 0
        self._constructing = True
        super().__init__(optimizer.param_groups, {})  # registers torch's hooks; the groups stay the inner's
        self._constructing = False
        self.param_groups = optimizer.param_groups  # the same list: groups added to either are seen by both
        self.defaults = optimizer.defaults

    def add_param_group(self, param_group: dict) -> None:
        """Add a group to the inner optimizer; its slow weights start at its first step."""
        if self._constructing:
            return  # the inner optimizer's groups, already added there
        self.optimizer.add_param_group(param_group)
        self.param_groups = self.optimizer.param_groups

    def _params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure=None, **kwargs: Any):
        """The inner optimizer's step (``kwargs`` such as ``loss=`` forwarded), then a sync every k-th call."""
        for p in self._params():
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()  # φ_0 = θ_0
        loss = self.optimizer.step(closure, **kwargs)
        self.count += 1
        if self.count % self.k == 0:
            for p in self._params():
                slow = self.state[p]["slow"]
                slow.add_(p - slow, alpha=self.alpha)  # φ + α(θ' − φ)
                p.copy_(slow)
        return loss

    def state_dict(self) -> dict:
        """The inner optimizer's state_dict plus ``"lookahead"``: slow weights by param index, count, k, α."""
        sd = self.optimizer.state_dict()
        index = {id(p): i for i, p in enumerate(self._params())}
        slow = {index[id(p)]: s["slow"] for p, s in self.state.items() if "slow" in s}
        return {**sd, "lookahead": {"slow": slow, "count": self.count, "k": self.k, "alpha": self.alpha}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the inner optimizer, the slow weights, the count, k and α."""
        inner = {k: v for k, v in state_dict.items() if k != "lookahead"}
        self.optimizer.load_state_dict(inner)
        self.param_groups = self.optimizer.param_groups  # torch's own load replaces the list
        la = state_dict.get("lookahead")
        if la is None:
            raise ValueError("this state_dict has no 'lookahead' entry: it was not saved by a Lookahead.")
        params = self._params()
        self.state.clear()
        for i, slow in la["slow"].items():
            if not 0 <= i < len(params):
                raise ValueError(
                    f"the state_dict has slow weights for param {i}; this optimizer has {len(params)}."
                )
            self.state[params[i]]["slow"] = slow.to(device=params[i].device, dtype=params[i].dtype, copy=True)
        self.count, self.k, self.alpha = int(la["count"]), int(la["k"]), float(la["alpha"])
