r"""The per-parameter features of `lopt.optimizers.learned.features`, in torch ops (float32).

The same equations as the JAX module, term for term (see its docstring for the derivations):

.. math::
    m^{(i)} &\leftarrow m^{(i)} + (1-\beta_i)(g - m^{(i)}), \qquad
    w^{(j)} \leftarrow \gamma_j w^{(j)} + \big((1-\gamma_j) g^2 + (1-\gamma_j)\epsilon_v\big) \\
    x &= \big[g,\ \theta,\ m^{(i)},\ \mathrm{rsqrt}(w^{(j)}),\ m^{(i)}\mathrm{rsqrt}(w^{(j)})\big],
    \qquad \hat s_f = 1/\sqrt{\operatorname{mean}(x_f^2) + \epsilon_n}

where w = v + ε_v is what the state holds. Unlike the JAX side, which XLA fuses into one loop,
eager torch runs one kernel per op and every op reads and writes memory, so a tensor is processed
in chunks of `CHUNK` entries that stay in cache: a first pass updates the accumulators and sums
the squares of the features (their per-tensor second moments), a second pass recomputes the
features of each chunk, stacked into one (F, B) buffer, and runs the MLP on it as matmuls.
"""

from __future__ import annotations

import torch

from lopt.optimizers.learned.features import EPS_NORM, EPS_V, STEP_TIMESCALES, FeatureSpec

__all__ = ["EPS_NORM", "EPS_V", "FeatureSpec"]

CHUNK = 1 << 16  # entries per chunk: a (F, CHUNK) float32 buffer of a few MB stays in cache


def update_accumulators(spec: FeatureSpec, g: torch.Tensor, moms: list, rmss: list) -> None:
    """In place: m^(i) += (1−β_i)(g − m^(i)); w^(j) = γ_j w^(j) + ((1−γ_j) g² + (1−γ_j) ε_v). g: flat float32."""
    for b, m in zip(spec.mom_decays, moms):
        m.add_(g - m, alpha=1.0 - b)  # m + (1−β)(g − m), the JAX form
    for c, w in zip(spec.rms_decays, rmss):
        fresh = ((1.0 - c) * g) * g + (1.0 - c) * EPS_V  # ((1−γ) g)·g + (1−γ) ε_v, the JAX form
        w.mul_(c).add_(fresh)


def param_features(
    g: torch.Tensor, p: torch.Tensor, moms: list, rmss: list, out: torch.Tensor
) -> torch.Tensor:
    """``out`` (F, B) filled with one chunk's un-normalized features, in `FeatureSpec.names` order.

    Feature-major, so each feature is one contiguous row written by one kernel.
    """
    k, r = len(moms), len(rmss)
    out[0].copy_(g)
    out[1].copy_(p)
    for i, m in enumerate(moms):
        out[2 + i].copy_(m)
    for j, w in enumerate(rmss):
        torch.rsqrt(w, out=out[2 + k + j])
    for i in range(k):  # m^(i)·rsqrt(w^(j)) for every j
        for j in range(r):
            torch.mul(out[2 + i], out[2 + k + j], out=out[2 + k + r + i * r + j])
    return out


def sum_squares(x: torch.Tensor) -> torch.Tensor:
    """(F,) Σ over the chunk of x_f², from features (F, B)."""
    return torch.linalg.vecdot(x, x, dim=1)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[(start, stop)] covering range(n) in blocks of ``size``."""
    return [(s, min(s + size, n)) for s in range(0, n, size)] or [(0, 0)]


def scales(second_moment: torch.Tensor) -> torch.Tensor:
    """ŝ_f = 1 / √(mean x_f² + ε_n)."""
    return torch.rsqrt(second_moment + EPS_NORM)


def step_embedding(count: int, device: torch.device) -> torch.Tensor:
    """(len(STEP_TIMESCALES),) float32: tanh(t / τ) of the step count t."""
    t = torch.tensor(float(count), dtype=torch.float32, device=device)
    return torch.tanh(t / torch.tensor(STEP_TIMESCALES, dtype=torch.float32, device=device))


def clip_log_abs(x: torch.Tensor) -> torch.Tensor:
    """log(|x| + 1e-8) clipped to [-5, 5]."""
    return torch.clamp(torch.log(torch.abs(x) + 1e-8), -5.0, 5.0)


def ema_update(mean: torch.Tensor, var: torch.Tensor, x: torch.Tensor, decay: float):
    """Running mean and variance (un-bias-corrected), as `features.ema_update`."""
    new_mean = decay * mean + (1.0 - decay) * x
    new_var = decay * var + (1.0 - decay) * torch.square(new_mean - x)
    return new_mean, new_var


def debias(x: torch.Tensor, decay: float, count: torch.Tensor) -> torch.Tensor:
    """x / (1 − decay^count), 0 while count is 0."""
    correction = 1.0 - torch.pow(torch.tensor(decay, dtype=torch.float32, device=x.device), count)
    corrected = x / torch.clamp(correction, min=1e-8)
    return torch.where(count > 0, corrected, torch.zeros_like(x))


def zscore(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """(x − mean)/√(var + 1e-8), clipped to [-5, 5]."""
    return torch.clamp((x - mean) * torch.rsqrt(var + 1e-8), -5.0, 5.0)


def fresh(x, device: torch.device) -> tuple[torch.Tensor, bool]:
    """(value, is_fresh) of an optional loss: None or a non-finite value means "no new value"."""
    if x is None:
        return torch.zeros((), dtype=torch.float32, device=device), False
    value = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    value = value.to(device).reshape(())
    ok = bool(torch.isfinite(value))
    return (value if ok else torch.zeros_like(value)), ok
