r"""`mlp` in torch: the per-parameter MLP learned optimizer of `lopt.optimizers.learned.mlp`.

Per tensor, from its stacked features x (F, N) and their scales ŝ (F,):

.. math::
    h_1 &= \mathrm{relu}\big((\hat s \odot W_0[{:}F])^\top x + b_0 + W_0[F{:}]^\top e\big), \quad
    h_{l+1} = \mathrm{relu}(W_l^\top h_l + b_l) \\
    (d', s) &= W_\text{out}^\top h + b_\text{out}, \qquad d = d' + (\hat s \odot w_\text{skip})^\top x \\
    u &= -\,d \cdot \exp(s\,c_\text{exp} + \lambda)\cdot c_\text{step}

with e the features constant over the tensor (the step embedding, for `hierarchical` also the
LSTM's inputs), folded into the first bias exactly as on the JAX side. The skip is one more
column of the first matmul. A tensor is processed in two passes over chunks (`features`):
`accumulate` (state update, sums of squares) and `apply_mlp` (features again, the MLP, θ += u).
"""

from __future__ import annotations

import torch

from lopt.optimizers.learned.mlp import MLPConfig
from lopt.torch import features as F
from lopt.torch import kernels as K
from lopt.torch.rule import Rule


def _clipped(g: torch.Tensor, clip: torch.Tensor | None) -> torch.Tensor:
    g = g.float()
    return g if clip is None else torch.clamp(g, -clip, clip)


def accumulate(spec: F.FeatureSpec, g, p, moms, rmss, buf, clip=None, stats: bool = False):
    """Pass 1 over one flat tensor: accumulators updated in place; returns (mean x_f² (F,), sums).

    ``sums`` (with ``stats``) is (4,): Σ of all momenta, Σ of all second moments w, Σ w², Σ θ.
    ``clip``: gradients are clipped to ±clip first (`hierarchical`).
    """
    n, k = g.numel(), len(moms)
    sumsq = torch.zeros(spec.count, dtype=torch.float32, device=g.device)
    sums = torch.zeros(4, dtype=torch.float32, device=g.device)
    for s, e in F.chunks(n, F.CHUNK):
        gc, pc = _clipped(g[s:e], clip), p[s:e].float()
        mc, wc = [m[s:e] for m in moms], [w[s:e] for w in rmss]
        F.update_accumulators(spec, gc, mc, wc)
        x = F.param_features(gc, pc, mc, wc, buf[:, : e - s])  # (F, B)
        sumsq += F.sum_squares(x)
        if stats:
            sums += torch.stack(
                [x[2 : 2 + k].sum(), sum(w.sum() for w in wc), sum(torch.dot(w, w) for w in wc), x[1].sum()]
            )
    return sumsq / max(n, 1), sums


def mlp_chunk(
    x: torch.Tensor,
    first_w_t: torch.Tensor,
    first_b: torch.Tensor,
    mlp: dict,
    step_mult: float,
    exp_mult: float,
    log_step: torch.Tensor | None,
) -> torch.Tensor:
    """(B,) update of one chunk: ``x`` (F, B) features, ``first_w_t`` (H0 + 1, F) = (ŝ W0 | ŝ skip)ᵀ."""
    h0 = first_b.shape[0]
    pre = first_w_t @ x  # (H0 + 1, B)
    h = torch.relu_(pre[:h0].add_(first_b[:, None]))  # (H0, B)
    i = 1
    while f"l{i}" in mlp:
        h = torch.relu_(torch.addmm(mlp[f"l{i}"]["b"][:, None], mlp[f"l{i}"]["w"].T, h))  # (Hi, B)
        i += 1
    out = torch.addmm(mlp["out"]["b"][:, None], mlp["out"]["w"].T, h)  # (2, B): direction', magnitude
    direction = out[0].add_(pre[h0])  # d = d' + skip·x̂
    log_mag = out[1].mul_(exp_mult)
    if log_step is not None:
        log_mag.add_(log_step)
    return direction.mul_(log_mag.exp_()).mul_(-step_mult)  # −d·exp(s c_exp + λ)·c_step


def apply_mlp(
    mlp: dict,
    skip,
    scale,
    tensor_inputs,
    step_mult: float,
    exp_mult: float,
    g,
    p,
    moms,
    rmss,
    buf,
    clip=None,
    extra_bias=None,
    log_step=None,
) -> None:
    """Pass 2 over one flat tensor ``p`` (updated in place): the torch twin of `learned.mlp.tensor_update`.

    ``scale`` (F,) ŝ from pass 1, ``tensor_inputs`` (T,) the per-tensor inputs feeding rows F: of
    the first layer, ``extra_bias`` (H0,), ``log_step`` () added inside the exp.
    """
    first_w_t, first_b = first_layer(mlp, skip, scale, tensor_inputs, extra_bias)
    for s, e in F.chunks(g.numel(), F.CHUNK):
        pc = p[s:e]
        x = F.param_features(
            _clipped(g[s:e], clip),
            pc.float(),
            [m[s:e] for m in moms],
            [w[s:e] for w in rmss],
            buf[:, : e - s],
        )
        u = mlp_chunk(x, first_w_t, first_b, mlp, step_mult, exp_mult, log_step)
        pc.add_(u.to(pc.dtype))


def first_layer(mlp: dict, skip, scale, tensor_inputs, extra_bias=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(first_w_t (H0 + 1, F) = (ŝ W0 | ŝ skip)ᵀ, first_b (H0,)): the first layer with the per-tensor
    scales and the per-tensor inputs folded in."""
    f = scale.shape[0]
    w0, b0 = mlp["l0"]["w"], mlp["l0"]["b"]  # (F + T, H0), (H0,)
    first_b = b0 + tensor_inputs @ w0[f:]  # (H0,)
    if extra_bias is not None:
        first_b = first_b + extra_bias
    first_w_t = (torch.cat([w0[:f], skip[:, None]], dim=1) * scale[:, None]).T.contiguous()  # (H0 + 1, F)
    return first_w_t, first_b


def hidden_layers(mlp: dict) -> list:
    """[(W_l, b_l)] of the hidden layers after the first."""
    layers, i = [], 1
    while f"l{i}" in mlp:
        layers.append((mlp[f"l{i}"]["w"], mlp[f"l{i}"]["b"]))
        i += 1
    return layers


def kernels_of(cfg):
    """The compiled (accumulate, apply) of an `mlp`/`hierarchical` config."""
    return K.mlp_kernels(
        tuple(cfg.spec.mom_decays),
        tuple(cfg.spec.rms_decays),
        len(cfg.hidden) - 1,
        float(cfg.step_mult),
        float(cfg.exp_mult),
    )


def compiled_accumulate(cfg, g, p, moms, rmss, clip=None, stats: bool = False):
    """`accumulate` as one compiled kernel: (mean x_f² (F,), sums (4,) or None)."""
    acc, _ = kernels_of(cfg)
    n, f = g.numel(), cfg.spec.count
    out = acc([g, p, *moms, *rmss], g, p, moms, rmss, clip, stats)
    return out[:f] / n, (out[f:] if stats else None)


def compiled_apply(
    cfg, mlp: dict, skip, scale, tensor_inputs, g, p, moms, rmss, clip=None, extra_bias=None, log_step=None
) -> None:
    """`apply_mlp` as one compiled kernel."""
    _, app = kernels_of(cfg)
    first_w_t, first_b = first_layer(mlp, skip, scale, tensor_inputs, extra_bias)
    app(
        [g, p, *moms, *rmss],
        g,
        p,
        moms,
        rmss,
        clip,
        first_w_t,
        first_b,
        hidden_layers(mlp),
        mlp["out"]["w"],
        mlp["out"]["b"],
        log_step,
    )


def use_compiled(rule, n: int) -> bool:
    """Whether a tensor of ``n`` entries runs the compiled kernels."""
    return rule.compile and K.Compiled.usable(n)


def flat_views(p: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, g) as flat tensors; p's is a view, written in place (params are contiguous in practice)."""
    if not p.is_contiguous():
        raise ValueError(
            f"lopt learned optimizers need contiguous params; got one of shape {tuple(p.shape)} "
            "with strides {p.stride()}: call .contiguous() when creating it."
        )
    return p.detach().view(-1), g.reshape(-1)


def feature_buffer(spec: F.FeatureSpec, params: list) -> torch.Tensor:
    """(F, B) float32 scratch for the chunks, B = min(CHUNK, largest tensor)."""
    b = min(F.CHUNK, max(max(p.numel() for p in params), 1))
    return torch.empty((spec.count, b), dtype=torch.float32, device=params[0].device)


class MLPRule(Rule):
    """The `mlp` architecture's step over one param group."""

    config_class = MLPConfig

    def init_param(self, p: torch.Tensor, index: int) -> dict:
        spec = self.config.spec
        n = p.numel()
        state = {
            f"mom{i}": torch.zeros(n, dtype=torch.float32, device=p.device)
            for i in range(len(spec.mom_decays))
        }
        state.update(
            {
                f"rms{j}": torch.full((n,), F.EPS_V, dtype=torch.float32, device=p.device)
                for j in range(len(spec.rms_decays))
            }
        )
        return state

    def init_group(self, device: torch.device) -> dict:
        return {"count": torch.zeros((), dtype=torch.int64, device=device)}

    def step(self, params, grads, states, group_state, loss=None, valid_loss=None, num_steps=None) -> None:
        del loss, valid_loss, num_steps  # this architecture does not use them
        cfg, spec = self.config, self.config.spec
        theta = self.theta_on(params[0].device)
        emb = F.step_embedding(int(group_state["count"]), params[0].device)  # (11,)
        log_step = cfg.log_step_mult * theta["log_step"] if cfg.log_step_mult > 0 else None
        buf = None
        for p, g, st in zip(params, grads, states):
            moms, rmss = self.accumulators(st)
            p_flat, g_flat = flat_views(p, g)
            if use_compiled(self, p_flat.numel()):
                second, _ = compiled_accumulate(cfg, g_flat, p_flat, moms, rmss)
                compiled_apply(
                    cfg,
                    theta["mlp"],
                    theta["skip"],
                    F.scales(second),
                    emb,
                    g_flat,
                    p_flat,
                    moms,
                    rmss,
                    log_step=log_step,
                )
                continue
            buf = feature_buffer(spec, params) if buf is None else buf
            second, _ = accumulate(spec, g_flat, p_flat, moms, rmss, buf)
            apply_mlp(
                theta["mlp"],
                theta["skip"],
                F.scales(second),
                emb,
                cfg.step_mult,
                cfg.exp_mult,
                g_flat,
                p_flat,
                moms,
                rmss,
                buf,
                log_step=log_step,
            )
        group_state["count"] += 1
