"""`hierarchical` in torch: Metz et al. 2020's per-tensor LSTM feeding the per-parameter MLP.

The step of `lopt.optimizers.learned.hierarchical`, numbered as there: (1) dynamic gradient
clipping against a running gradient RMS, (2) accumulators and features, (3) the per-tensor LSTM
over the tensors' statistics, the loss features and the message, (4) the message for the next
step, (5) the per-parameter MLP with the LSTM's output in its first bias, (6) the learned log step.
Each param holds its own LSTM (h, c) rows; the group holds the message, the clip and loss statistics.
"""

from __future__ import annotations

import math

import torch

from lopt.optimizers.learned.hierarchical import (
    CLIP_DECAY,
    CLIP_MULT,
    TRAIN_DECAY,
    VALID_DECAY,
    HierarchicalConfig,
    shape_features,
)
from lopt.torch import features as F
from lopt.torch.mlp import (
    accumulate,
    apply_mlp,
    compiled_accumulate,
    compiled_apply,
    feature_buffer,
    flat_views,
    use_compiled,
)
from lopt.torch.rule import Rule


def lstm_cell(theta: dict, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """A standard LSTM cell over a batch of tensors: x (T, I), h and c (T, H)."""
    gates = x @ theta["wx"] + h @ theta["wh"] + theta["b"][None, :]  # (T, 4H)
    i, f, g, o = torch.chunk(gates, 4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def stat_triple(mean: torch.Tensor, mean_sq: torch.Tensor) -> list:
    """Clipped log|mean|, sign(mean), clipped log var."""
    var = torch.clamp(mean_sq - mean * mean, min=0.0)
    return [F.clip_log_abs(mean), torch.sign(mean), F.clip_log_abs(var)]


def loss_features(gs: dict, loss, valid_loss) -> None:
    """Updates the group state's train_stats, valid_stats and loss_feats with this step's losses."""
    device = gs["train_stats"].device
    loss, has_loss = F.fresh(loss, device)
    valid, has_valid = F.fresh(valid_loss, device)
    t_mean, t_var, t_count = gs["train_stats"].unbind()
    if has_loss:
        t_mean, t_var = F.ema_update(t_mean, t_var, loss, TRAIN_DECAY)
        t_count = t_count + 1.0
    cor_mean, cor_var = F.debias(t_mean, TRAIN_DECAY, t_count), F.debias(t_var, TRAIN_DECAY, t_count)
    v_mean, v_count = gs["valid_stats"].unbind()
    if has_valid:
        v_mean = VALID_DECAY * v_mean + (1.0 - VALID_DECAY) * valid
        v_count = v_count + 1.0
    train_feat, valid_feat = gs["loss_feats"].unbind()
    if has_loss:
        train_feat = F.zscore(loss, cor_mean, cor_var)
    if has_valid and bool(t_count > 0):
        valid_feat = F.zscore(F.debias(v_mean, VALID_DECAY, v_count), cor_mean, cor_var)
    gs["train_stats"] = torch.stack([t_mean, t_var, t_count])
    gs["valid_stats"] = torch.stack([v_mean, v_count])
    gs["loss_feats"] = torch.stack([train_feat, valid_feat])


class HierarchicalRule(Rule):
    """The `hierarchical` architecture's step over one param group."""

    config_class = HierarchicalConfig

    def init_param(self, p: torch.Tensor, index: int) -> dict:
        spec, n, hl = self.config.spec, p.numel(), self.config.lstm_hidden
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
        state["lstm_h"] = torch.zeros(hl, dtype=torch.float32, device=p.device)
        state["lstm_c"] = torch.zeros(hl, dtype=torch.float32, device=p.device)
        return state

    def init_group(self, device: torch.device) -> dict:
        return init_group_state(self.theta_on(device), device)

    def step(self, params, grads, states, group_state, loss=None, valid_loss=None, num_steps=None) -> None:
        del num_steps  # not horizon-aware
        cfg, gs, device = self.config, group_state, params[0].device
        theta = self.theta_on(device)
        loss_features(gs, loss, valid_loss)
        count = int(gs["count"])
        clip = clip_threshold(gs, count, device)  # 1. dynamic clipping against the running gradient RMS
        eager = [p for p in params if not use_compiled(self, p.numel())]
        buf = feature_buffer(cfg.spec, eager) if eager else None
        per_tensor, lstm_x, mean_sq = [], [], []
        for p, g, st in zip(params, grads, states):  # 2. accumulators and features
            stats, z, mean_g2 = self._tensor_stats(p, g, st, clip, buf)
            per_tensor.append(stats)
            lstm_x.append(z)
            mean_sq.append(mean_g2)
        # 3. the per-tensor LSTM; 4. the message for the next step; 5. the LSTM's inputs to the MLP
        h, c, to_mlp = lstm_step(theta, lstm_x, [gs["loss_feats"]], gs, states)
        log_step = None
        if cfg.log_step_mult > 0:  # 6. per tensor: c_lr·(λ + w·h_k + b)
            log_step = cfg.log_step_mult * theta["log_step"] + cfg.log_step_mult * (
                (h @ theta["to_step"]["w"])[:, 0] + theta["to_step"]["b"][0]
            )
        emb = F.step_embedding(count, device)
        log_tensors = torch.full((1,), math.log(max(len(per_tensor), 1)), dtype=torch.float32, device=device)
        for i, stats in enumerate(per_tensor):
            tensor_inputs = torch.cat(
                [
                    emb,
                    torch.stack([stats[1], torch.tensor(stats[2], dtype=torch.float32, device=device)]),
                    log_tensors,
                ]
            )
            self._apply(
                theta, stats, tensor_inputs, clip, buf, to_mlp[i], None if log_step is None else log_step[i]
            )
        finish_step(gs, states, h, c, mean_sq)

    def _tensor_stats(self, p, g, st, clip, buf) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        """One tensor's accumulators and feature scales (2.), its LSTM input z_k (3.), mean clip(g)²."""
        cfg, spec, k = self.config, self.config.spec, len(self.config.mom_decays)
        moms, rmss = self.accumulators(st)
        n = max(p.numel(), 1)
        p_flat, g_flat = flat_views(p, g)
        if use_compiled(self, p_flat.numel()):
            second, sums = compiled_accumulate(cfg, g_flat, p_flat, moms, rmss, clip=clip, stats=True)
        else:
            second, sums = accumulate(spec, g_flat, p_flat, moms, rmss, buf, clip=clip, stats=True)
        assert sums is not None  # stats=True: the sums are returned
        # second (F,): mean g², θ², m_i², 1/w_j, m_i²/w_j; sums: Σ m (all i), Σ w (all j), Σ w², Σ θ
        mean_g2 = second[0]
        mean_m = sums[0] / (n * k)
        mean_m2 = second[2 : 2 + k].sum() / k
        mean_v = sums[1] / (n * len(rmss))
        mean_v2 = sums[2] / (n * len(rmss))
        norm_p = F.clip_log_abs(torch.sqrt(second[1] * n))
        z = [
            *stat_triple(mean_m, mean_m2),
            *stat_triple(mean_v, mean_v2),
            *stat_triple(sums[3] / n, second[1]),
            F.clip_log_abs(torch.sqrt(mean_g2 * n)),
            norm_p,
        ]
        shape = torch.from_numpy(shape_features(tuple(p.shape))).to(p.device)
        stats = (F.scales(second), norm_p, math.log(n), p_flat, g_flat, moms, rmss)
        return stats, torch.cat([torch.stack(z), shape]), mean_g2

    def _apply(self, theta, stats, tensor_inputs, clip, buf, extra_bias, log_step) -> None:
        """5-6. the per-parameter MLP's update of one tensor, applied in place."""
        cfg = self.config
        scale, _, _, p_flat, g_flat, moms, rmss = stats
        if use_compiled(self, p_flat.numel()):
            compiled_apply(
                cfg,
                theta["mlp"],
                theta["skip"],
                scale,
                tensor_inputs,
                g_flat,
                p_flat,
                moms,
                rmss,
                clip=clip,
                extra_bias=extra_bias,
                log_step=log_step,
            )
        else:
            apply_mlp(
                theta["mlp"],
                theta["skip"],
                scale,
                tensor_inputs,
                cfg.step_mult,
                cfg.exp_mult,
                g_flat,
                p_flat,
                moms,
                rmss,
                buf,
                clip=clip,
                extra_bias=extra_bias,
                log_step=log_step,
            )


def init_group_state(theta: dict, device: torch.device) -> dict:
    """A param group's state: the step count, the message, the clip and loss statistics."""
    zeros = lambda *shape: torch.zeros(shape, dtype=torch.float32, device=device)  # noqa: E731
    return {
        "count": torch.zeros((), dtype=torch.int64, device=device),
        "message": theta["message0"].clone(),
        "clip_ema": torch.tensor(1.0 - CLIP_DECAY, dtype=torch.float32, device=device),
        "train_stats": zeros(3),
        "valid_stats": zeros(2),
        "loss_feats": zeros(2),
    }


def clip_threshold(gs: dict, count: int, device) -> torch.Tensor:
    """10·ĉ: the bias-corrected running gradient RMS of the group times ``CLIP_MULT``."""
    t_clip = torch.tensor(float(count + 1), dtype=torch.float32, device=device)
    return (
        gs["clip_ema"]
        / (1.0 - torch.pow(torch.tensor(CLIP_DECAY, dtype=torch.float32, device=device), t_clip))
        * CLIP_MULT
    )


def lstm_step(theta: dict, rows: list, shared: list, gs: dict, states: list):
    """(h, c, the MLP's per-tensor bias) after one LSTM step over the tensors' ``rows`` and the
    ``shared`` vectors (the message last); the group's message becomes the next one."""
    num_tensors = len(rows)
    x = torch.cat(
        [
            torch.stack(rows),  # (T, S)
            *[v[None, :].expand(num_tensors, v.shape[0]) for v in (*shared, gs["message"])],
        ],
        dim=1,
    )  # (T, lstm_inputs)
    h_prev = torch.stack([st["lstm_h"] for st in states])  # (T, Hl)
    c_prev = torch.stack([st["lstm_c"] for st in states])
    h, c = lstm_cell(theta["lstm"], x, h_prev, c_prev)
    gs["message"] = torch.mean(
        h @ theta["to_message"]["w"] + theta["to_message"]["b"][None, :], dim=0
    )  # (M,)
    to_mlp = h @ theta["to_mlp"]["w"] + theta["to_mlp"]["b"][None, :]  # (T, H0)
    return h, c, to_mlp


def finish_step(gs: dict, states: list, h: torch.Tensor, c: torch.Tensor, mean_sq: list) -> None:
    """Each tensor's new LSTM state, the group's running gradient RMS and step count."""
    for i, st in enumerate(states):
        st["lstm_h"].copy_(h[i])
        st["lstm_c"].copy_(c[i])
    avg_sq = sum(mean_sq) / max(len(mean_sq), 1)
    gs["clip_ema"] = gs["clip_ema"] * CLIP_DECAY + torch.sqrt(1e-8 + avg_sq) * (1.0 - CLIP_DECAY)
    gs["count"] += 1
