r"""`hierarchical_v2` in torch: the horizon-aware hierarchical optimizer of
`lopt.optimizers.learned.hierarchical_v2`, with a normalized, gradient-odd direction.

Per step and tensor, as there (float32): clipping and accumulators (v from 0); odd features
x = [g, m_i, m_i·rsqrt(v_j + ε_j)] with ε_j = 1e-12·mean(v_j) + 1e-30, normalized by their RMS;
even features e_j = sqrt(v_j / mean v_j); the per-tensor LSTM with the fraction features
[f, cos πf, s(f)], f = (t + 1)/T; the odd direction

.. math::
    d = \mathrm{MLP}(x, e, c_k) - \mathrm{MLP}(-x, e, c_k) + w_\text{skip}\cdot\hat x, \qquad
    u_k = -\,\eta\, s(f)\, e^{\ln r \tanh(w\cdot h_k + b)}\; d / \mathrm{RMS}(d)

with η = η₀ exp(c_lr λ). The odd part of the first layer is one matmul (with the skip as an
extra column), the even part another; the two signs share both.
"""

from __future__ import annotations

import math

import torch

from lopt.optimizers.learned.hierarchical import shape_features
from lopt.optimizers.learned.hierarchical_v2 import EPS_ABS, EPS_DIR, EPS_REL, HierarchicalV2Config
from lopt.torch import features as F
from lopt.torch import kernels as K
from lopt.torch.hierarchical import clip_threshold, finish_step, init_group_state, loss_features, lstm_step
from lopt.torch.mlp import flat_views, hidden_layers, use_compiled
from lopt.torch.rule import Rule


def fraction(count: int, num_steps: int, device) -> torch.Tensor:
    """f = (t + 1)/T clipped to [0, 1]."""
    t = torch.tensor(float(count) + 1.0, dtype=torch.float32, device=device)
    return torch.clamp(t / max(float(num_steps), 1.0), 0.0, 1.0)


def schedule_shape(f: torch.Tensor, warmup: float, final: float) -> torch.Tensor:
    """s(f): linear warmup over ``warmup`` of training, cosine decay to ``final`` at f = 1."""
    warm = torch.clamp(f / warmup, max=1.0) if warmup > 0 else torch.ones_like(f)
    return warm * (final + (1.0 - final) * 0.5 * (1.0 + torch.cos(math.pi * f)))


def direction(mlp: dict, skip, odd, scale, even, bias) -> torch.Tensor:
    """(N,) d = f(x) − f(−x) + w_skip·x̂; ``odd`` (F_odd, N), ``even`` (F_even, N), ``bias`` (H0,)."""
    n_odd, n_even = odd.shape[0], even.shape[0]
    w0 = mlp["l0"]["w"]
    h0 = w0.shape[1]
    pre = (torch.cat([w0[:n_odd], skip[:, None]], dim=1) * scale[:, None]).T @ odd  # (H0 + 1, N)
    a = pre[:h0]
    c = torch.addmm(bias[:, None], w0[n_odd : n_odd + n_even].T, even)  # (H0, N)
    sides = []
    for side in (c + a, c - a):
        h = torch.relu_(side)
        i = 1
        while f"l{i}" in mlp:
            h = torch.relu_(torch.addmm(mlp[f"l{i}"]["b"][:, None], mlp[f"l{i}"]["w"].T, h))
            i += 1
        sides.append((mlp["out"]["w"].T @ h)[0])  # (N,), no output bias
    return (sides[0] - sides[1]).add_(pre[h0])


class HierarchicalV2Rule(Rule):
    """The `hierarchical_v2` architecture's step over one param group (needs ``num_steps``)."""

    config_class = HierarchicalV2Config

    def init_param(self, p: torch.Tensor, index: int) -> dict:
        cfg, n = self.config, p.numel()
        zeros = lambda *s: torch.zeros(s, dtype=torch.float32, device=p.device)  # noqa: E731
        state = {f"mom{i}": zeros(n) for i in range(len(cfg.mom_decays))}
        state.update({f"rms{j}": zeros(n) for j in range(len(cfg.rms_decays))})
        state["lstm_h"], state["lstm_c"] = zeros(cfg.lstm_hidden), zeros(cfg.lstm_hidden)
        return state

    def init_group(self, device: torch.device) -> dict:
        return init_group_state(self.theta_on(device), device)

    def accumulators(self, state: dict) -> tuple[list, list]:
        cfg = self.config
        return [state[f"mom{i}"] for i in range(len(cfg.mom_decays))], [
            state[f"rms{j}"] for j in range(len(cfg.rms_decays))
        ]

    def _accumulate(self, g, p, moms, rmss, clip) -> torch.Tensor:
        """Pass 1: accumulators in place; (6 + R,): Σ g², Σ m (all i), Σ m² (all i), Σ v² (all j), Σ θ, Σ θ², Σ v_j."""
        cfg = self.config
        sums = torch.zeros(6 + len(rmss), dtype=torch.float32, device=g.device)
        for s, e in F.chunks(g.numel(), F.CHUNK):
            gc, pc = torch.clamp(g[s:e].float(), -clip, clip), p[s:e].float()
            mc, vc = [m[s:e] for m in moms], [v[s:e] for v in rmss]
            for b, m in zip(cfg.mom_decays, mc):
                m.add_(gc - m, alpha=1.0 - b)  # m + (1−β)(g − m)
            for c, v in zip(cfg.rms_decays, vc):
                v.mul_(c).add_(((1.0 - c) * gc) * gc)  # c v + (1−c) g g
            sums += torch.stack(
                [
                    torch.dot(gc, gc),
                    sum(m.sum() for m in mc),
                    sum(torch.dot(m, m) for m in mc),
                    sum(torch.dot(v, v) for v in vc),
                    pc.sum(),
                    torch.dot(pc, pc),
                    *[v.sum() for v in vc],
                ]
            )
        return sums

    def _odd(self, g, moms, rmss, clip, eps) -> torch.Tensor:
        """(F_odd, B): one chunk's odd features g, m_i, m_i·rsqrt(v_j + ε_j)."""
        k, r = len(moms), len(rmss)
        odd = torch.empty((1 + k + k * r, g.numel()), dtype=torch.float32, device=g.device)
        torch.clamp(g.float(), -clip, clip, out=odd[0])
        for i, m in enumerate(moms):
            odd[1 + i].copy_(m)
        rs = [torch.rsqrt(v + ej) for v, ej in zip(rmss, eps)]
        for i, m in enumerate(moms):
            for j, rj in enumerate(rs):
                torch.mul(m, rj, out=odd[1 + k + i * r + j])
        return odd

    def _odd_second_moments(self, g, moms, rmss, clip, eps, n) -> torch.Tensor:
        """Pass 2: (F_odd,) mean over the tensor of each odd feature squared."""
        total = None
        for s, e in F.chunks(g.numel(), F.CHUNK):
            sq = F.sum_squares(self._odd(g[s:e], [m[s:e] for m in moms], [v[s:e] for v in rmss], clip, eps))
            total = sq if total is None else total + sq
        return total / n

    def step(self, params, grads, states, group_state, loss=None, valid_loss=None, num_steps=None) -> None:
        if num_steps is None:
            raise ValueError("hierarchical_v2 needs the total number of training steps T: pass num_steps=T.")
        cfg, gs, device = self.config, group_state, params[0].device
        theta = self.theta_on(device)
        loss_features(gs, loss, valid_loss)
        count = int(gs["count"])
        f = fraction(count, num_steps, device)
        s_f = schedule_shape(f, cfg.warmup, cfg.final)
        frac = torch.stack([f, torch.cos(math.pi * f), s_f])  # (3,)
        clip = clip_threshold(gs, count, device)
        per_tensor, lstm_x, mean_sq = [], [], []
        for p, g, st in zip(params, grads, states):
            stats, z, mean_g2 = self._tensor_stats(p, g, st, clip)
            per_tensor.append(stats)
            lstm_x.append(z)
            mean_sq.append(mean_g2)
        h, c, to_mlp = lstm_step(theta, lstm_x, [frac, gs["loss_feats"]], gs, states)  # (T, Hl), (T, H0)
        factor = torch.exp(
            math.log(cfg.tensor_range)
            * torch.tanh((h @ theta["to_step"]["w"])[:, 0] + theta["to_step"]["b"][0])
        )
        eta = cfg.peak * torch.exp(cfg.log_step_mult * theta["log_step"]) * s_f
        w0 = theta["mlp"]["l0"]["w"]
        n_in = len(cfg.odd_names()) + len(cfg.even_names())  # rows after these: the per-tensor inputs
        log_tensors = math.log(max(len(per_tensor), 1))
        for i, stats in enumerate(per_tensor):
            tensor_in = torch.cat(
                [frac, torch.tensor([stats[3], log_tensors], dtype=torch.float32, device=device)]
            )
            bias = theta["mlp"]["l0"]["b"] + tensor_in @ w0[n_in:] + to_mlp[i]
            self._apply(theta, stats, clip, bias, -(eta * factor[i]))
        finish_step(gs, states, h, c, mean_sq)

    def _tensor_stats(self, p, g, st, clip) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        """Passes 1-2 over one tensor (accumulators, sums, the odd features' second moments): its
        per-tensor values, its LSTM input z_k and mean clip(g)²."""
        cfg, k = self.config, len(self.config.mom_decays)
        moms, rmss = self.accumulators(st)
        n, r = max(p.numel(), 1), len(rmss)
        p_flat, g_flat = flat_views(p, g)
        compiled = use_compiled(self, p_flat.numel())
        kernels = K.v2_kernels(tuple(cfg.mom_decays), tuple(cfg.rms_decays)) if compiled else None
        entries = [g_flat, p_flat, *moms, *rmss]
        # pass 1: accumulators; Σ v_j, and the sums behind the LSTM's statistics
        if kernels is not None:
            sums = kernels[0](entries, g_flat, p_flat, moms, rmss, clip)
        else:
            sums = self._accumulate(g_flat, p_flat, moms, rmss, clip)
        mean_g2, sum_m, sum_m2, sum_v2, sum_p, sum_p2 = sums[:6].unbind()
        mean_g2 = mean_g2 / n
        mean_v = [sv / n for sv in sums[6:].unbind()]
        eps = [EPS_REL * mv + EPS_ABS for mv in mean_v]
        # pass 2: the odd features' second moments
        if kernels is not None:
            second = kernels[1](entries, g_flat, moms, rmss, clip, torch.stack(eps)) / n
        else:
            second = self._odd_second_moments(g_flat, moms, rmss, clip, eps, n)
        mean_m, mean_m2 = sum_m / (n * k), sum_m2 / (n * k)
        mv = sum(mean_v) / len(mean_v)
        mean_v2 = sum_v2 / (n * r)
        p2, mean_p = sum_p2 / n, sum_p / n
        z = [
            F.clip_log_abs(mean_m),
            F.clip_log_abs(torch.clamp(mean_m2 - mean_m * mean_m, min=0.0)),
            F.clip_log_abs(mv),
            F.clip_log_abs(torch.clamp(mean_v2 - mv * mv, min=0.0)),
            F.clip_log_abs(mean_p),
            torch.sign(mean_p),
            F.clip_log_abs(torch.clamp(p2 - mean_p * mean_p, min=0.0)),
            F.clip_log_abs(torch.sqrt(mean_g2 * n)),
            F.clip_log_abs(torch.sqrt(p2 * n)),
        ]
        shape = torch.from_numpy(shape_features(tuple(p.shape))).to(p.device)
        stats = (F.scales(second), mean_v, eps, math.log(n), p_flat, g_flat, moms, rmss)
        return stats, torch.cat([torch.stack(z), shape]), mean_g2

    def _apply(self, theta, stats, clip, bias, step) -> None:
        """Pass 3 over one tensor: the direction d chunk by chunk, then p += step · d / RMS(d)
        (``step`` = −η s(f) times the tensor's factor)."""
        cfg = self.config
        scale, mean_v, eps, _, p_flat, g_flat, moms, rmss = stats
        w0 = theta["mlp"]["l0"]["w"]
        d = torch.empty_like(g_flat, dtype=torch.float32)  # (N,)
        if use_compiled(self, p_flat.numel()):
            n_odd = scale.shape[0]
            first_w_t = (
                torch.cat([w0[:n_odd], theta["skip"][:, None]], dim=1) * scale[:, None]
            ).T.contiguous()
            sum_d2 = K.v2_kernels(tuple(cfg.mom_decays), tuple(cfg.rms_decays))[2](
                [g_flat, *moms, *rmss, d],
                g_flat,
                moms,
                rmss,
                clip,
                torch.stack(eps),
                1.0 / (torch.stack(mean_v) + EPS_ABS),
                first_w_t,
                w0[n_odd : n_odd + len(rmss)],
                bias,
                hidden_layers(theta["mlp"]),
                theta["mlp"]["out"]["w"],
                d,
            )
        else:
            sum_d2 = torch.zeros((), dtype=torch.float32, device=p_flat.device)
            for s, e in F.chunks(g_flat.numel(), F.CHUNK):
                odd = self._odd(g_flat[s:e], [m[s:e] for m in moms], [v[s:e] for v in rmss], clip, eps)
                even = torch.stack(
                    [torch.sqrt(v[s:e] * (1.0 / (mv + EPS_ABS))) for v, mv in zip(rmss, mean_v)]
                )  # (R, B)
                d[s:e] = direction(theta["mlp"], theta["skip"], odd, scale, even, bias)
                sum_d2 += torch.dot(d[s:e], d[s:e])
        coef = step * torch.rsqrt(sum_d2 / max(d.numel(), 1) + EPS_DIR)  # −η s(f) factor / RMS(d)
        p_flat.add_(d.mul_(coef).to(p_flat.dtype))
