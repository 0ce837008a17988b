r"""`adam_lr` and `sgdm` in torch: hand-designed rules whose learning rates (and momentum) are theta.

As `lopt.optimizers.learned.hyper`: the k-th param of a group (in group order, as the k-th leaf
of a JAX params tree) uses slot k mod S, η_k = exp(log_lr + δ_{k mod S}).

- ``adam_lr``: optax's ``scale_by_adam``: m ← (1−β1) g + β1 m, v ← (1−β2) g² + β2 v,
  u = −η_k · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε); m and v in the params' dtype.
- ``sgdm``: μ = sigmoid(momentum_logit); v ← μ v + g (float32); u = −η_k v.
"""

from __future__ import annotations

import torch

from lopt.optimizers.learned.base import tensor_slot
from lopt.optimizers.learned.hyper import AdamLRConfig, SGDMConfig
from lopt.torch.rule import Rule


def _lr(theta: dict, slot: int) -> torch.Tensor:
    """η = exp(log_lr + δ_slot)."""
    return torch.exp(theta["log_lr"] + theta["log_lr_offsets"][slot])


class AdamLRRule(Rule):
    """Adam with learned per-tensor learning rates."""

    config_class = AdamLRConfig

    def init_param(self, p: torch.Tensor, index: int) -> dict:
        zeros = lambda: torch.zeros(p.shape, dtype=p.dtype, device=p.device)  # noqa: E731
        return {"slot": tensor_slot(index, self.config.num_slots), "mu": zeros(), "nu": zeros()}

    def init_group(self, device: torch.device) -> dict:
        return {"count": torch.zeros((), dtype=torch.int64, device=device)}

    def step(self, params, grads, states, group_state, loss=None, valid_loss=None, num_steps=None) -> None:
        del loss, valid_loss, num_steps  # not used by this architecture
        cfg = self.config
        theta = self.theta_on(params[0].device)
        count = int(group_state["count"]) + 1
        f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=params[0].device)  # noqa: E731
        c1 = 1.0 - torch.pow(f32(cfg.b1), f32(count))  # 1 − β1^t, in float32 as optax
        c2 = 1.0 - torch.pow(f32(cfg.b2), f32(count))
        for p, g, st in zip(params, grads, states):  # in place, two scratch buffers: no temporaries
            mu, nu = st["mu"], st["nu"]
            mu.mul_(cfg.b1).add_(g, alpha=1.0 - cfg.b1)  # (1−β1) g + β1 m
            nu.mul_(cfg.b2).addcmul_(g, g, value=1.0 - cfg.b2)  # (1−β2) g² + β2 v
            denom = torch.div(nu, c2.to(nu.dtype)).sqrt_().add_(cfg.eps)  # √(v / (1 − β2^t)) + ε
            u = torch.div(mu, c1.to(mu.dtype)).div_(denom)  # (m / (1 − β1^t)) / denom
            if u.dtype != torch.float32:
                u = u.float()
            self.apply(p, u.mul_(-_lr(theta, st["slot"])))
        group_state["count"] += 1


class SGDMRule(Rule):
    """SGD with learned momentum and per-tensor learning rates."""

    config_class = SGDMConfig

    def init_param(self, p: torch.Tensor, index: int) -> dict:
        return {
            "slot": tensor_slot(index, self.config.num_slots),
            "velocity": torch.zeros(p.shape, dtype=torch.float32, device=p.device),
        }

    def init_group(self, device: torch.device) -> dict:
        return {"count": torch.zeros((), dtype=torch.int64, device=device)}

    def step(self, params, grads, states, group_state, loss=None, valid_loss=None, num_steps=None) -> None:
        del loss, valid_loss, num_steps  # not used by this architecture
        theta = self.theta_on(params[0].device)
        mu = torch.sigmoid(theta["momentum_logit"])
        for p, g, st in zip(params, grads, states):
            v = st["velocity"]
            v.mul_(mu).add_(g.float())  # μ v + g
            self.apply(p, -(_lr(theta, st["slot"]) * v.to(p.dtype).float()))
        group_state["count"] += 1
