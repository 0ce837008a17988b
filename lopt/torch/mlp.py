r"""`mlp` in torch: the per-parameter MLP learned optimizer of `lopt.optimizers.learned.mlp`.

Per tensor, from its stacked features x (F, N) and their scales ŝ (F,):

.. math::
    h_1 &= \mathrm{relu}\big((\hat s \odot W_0[{:}F])^\top x + b_0 + W_0[F{:}]^\top e\big), \quad
    h_{l+1} = \mathrm{relu}(W_l^\top h_l + b_l) \\
    (d', s) &= W_\text{out}^\top h + b_\text{out}, \qquad d = d' + (\hat s \odot w_\text{skip})^\top x \\
    u &= -\,d \cdot \exp(s\,c_\text{exp} + \lambda)\cdot c_\text{step}

with e the features constant over the tensor (the step embedding, for `hierarchical` also the
LSTM's inputs), folded into the first bias exactly as on the JAX side. The skip is one more
column of the first matmul, so a tensor costs one (H0+1, F) x (F, N) product and small ones after.
"""

from __future__ import annotations

import torch

from lopt.optimizers.learned.mlp import MLPConfig
from lopt.torch import features as F
from lopt.torch.rule import Rule


def tensor_update(
    mlp: dict,
    skip: torch.Tensor,
    x: torch.Tensor,
    scale: torch.Tensor,
    tensor_inputs: torch.Tensor,
    step_mult: float,
    exp_mult: float,
    extra_bias: torch.Tensor | None = None,
    log_step: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N,) float32 update of one tensor (the torch twin of `learned.mlp.tensor_update`).

    ``x`` (F, N) un-normalized features, ``scale`` (F,) their ŝ, ``tensor_inputs`` (T,) the
    per-tensor inputs feeding rows F: of the first layer, ``extra_bias`` (H0,), ``log_step`` ().
    """
    f = x.shape[0]
    w0, b0 = mlp["l0"]["w"], mlp["l0"]["b"]  # (F + T, H0), (H0,)
    first_b = b0 + tensor_inputs @ w0[f:]  # (H0,)
    if extra_bias is not None:
        first_b = first_b + extra_bias
    first_w = torch.cat([w0[:f], skip[:, None]], dim=1) * scale[:, None]  # (F, H0 + 1): ŝ W0 | ŝ skip
    pre = first_w.T @ x  # (H0 + 1, N)
    h0 = w0.shape[1]
    h = torch.relu_(pre[:h0].add_(first_b[:, None]))  # (H0, N)
    i = 1
    while f"l{i}" in mlp:
        h = torch.relu_(torch.addmm(mlp[f"l{i}"]["b"][:, None], mlp[f"l{i}"]["w"].T, h))  # (Hi, N)
        i += 1
    out = torch.addmm(mlp["out"]["b"][:, None], mlp["out"]["w"].T, h)  # (2, N): direction', magnitude
    direction = out[0].add_(pre[h0])  # d = d' + skip·x̂
    log_mag = out[1].mul_(exp_mult)
    if log_step is not None:
        log_mag.add_(log_step)
    return direction.mul_(log_mag.exp_()).mul_(-step_mult)  # −d·exp(s c_exp + λ)·c_step


class MLPRule(Rule):
    """The `mlp` architecture's step over one param group."""

    config_class = MLPConfig

    def init_param(self, p: torch.Tensor, index: int) -> dict:
        spec = self.config.spec
        n = p.numel()
        state = {f"mom{i}": torch.zeros(n, dtype=torch.float32, device=p.device) for i in range(len(spec.mom_decays))}
        state.update({f"rms{j}": torch.full((n,), F.EPS_V, dtype=torch.float32, device=p.device) for j in range(len(spec.rms_decays))})
        return state

    def init_group(self, device: torch.device) -> dict:
        return {"count": torch.zeros((), dtype=torch.int64, device=device)}

    def step(self, params, grads, states, group_state, loss=None, valid_loss=None, num_steps=None) -> None:
        del loss, valid_loss, num_steps  # this architecture does not use them
        cfg, spec = self.config, self.config.spec
        theta = self.theta_on(params[0].device)
        count = int(group_state["count"])
        emb = F.step_embedding(count, params[0].device)  # (11,)
        log_step = cfg.log_step_mult * theta["log_step"] if cfg.log_step_mult > 0 else None
        for p, g, st in zip(params, grads, states):
            moms, rmss = self.accumulators(st)
            g32, p32 = g.reshape(-1).float(), p.detach().reshape(-1).float()
            F.update_accumulators(spec, g32, moms, rmss)
            x = F.param_features(g32, p32, moms, rmss)  # (F, N)
            scale = F.scales(F.second_moments(x))
            u = tensor_update(theta["mlp"], theta["skip"], x, scale, emb, cfg.step_mult, cfg.exp_mult, log_step=log_step)
            self.apply(p, u)
        group_state["count"] += 1
