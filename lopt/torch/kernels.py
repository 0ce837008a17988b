r"""Compiled per-tensor kernels of the learned optimizers (``LearnedOptimizer(..., compile=True)``).

Eager torch runs one kernel per op, each reading and writing memory: a step of ``mlp-small-v1``
is ~40 elementwise passes and two small matmuls per chunk. Here each pass over a tensor is one
function compiled by `torch.compile` (inductor: on CPU a C++ loop over the entries, vectorized,
FMA-contracted, the features never materialized):

- ``accumulate``: the accumulators updated in place and the sums of the features' squares
  (and of the per-tensor statistics) in one call;
- ``apply``: the features again, the per-parameter MLP written out as scalar-weight
  multiply-adds (its weights are inputs, so one compiled kernel serves every tensor and step),
  and θ += u in place;
- for ``hierarchical_v2``: ``odd_moments`` (second moments of the odd features) and
  ``direction`` (the odd direction d into a buffer, with Σ d²).

The same equations as the eager functions of `lopt.torch.mlp` / `lopt.torch.hierarchical_v2`,
term for term; only the rounding differs (sums in another order, a·b + c as one FMA), well
inside the JAX-equivalence tolerance (tests parametrize over compiled and eager).

Shapes: the entry dimension is dynamic, in two size classes (2..4096 entries, and more: inductor
sums long reductions with a cascade from 4097 on), so a model's tensors of every size share two
compilations per kernel; tensors of fewer than 2 entries run eagerly. Each configuration (say the
constants of one architecture config) gets its own copy of the kernel's code object, hence its
own `torch.compile` cache and recompile budget. A failed compilation (no C++ compiler, an
unsupported device) warns once and falls back to the eager functions.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

from lopt.torch import features as F

ARCHITECTURES = ("mlp", "hierarchical", "hierarchical_v2")  # those with compiled kernels (the others: eager)
SMALL = 4096  # the upper end of the small size class (inductor's cascade sums start at 4097)
MIN_ENTRIES = 2  # smaller tensors run eagerly (dynamo specializes sizes 0 and 1)
# a·b + c as one FMA: the compiled mlp-small-v1 step 19% faster (BENCHMARKS.md)
OPTIONS: dict[str, Any] = {"cpp.enable_floating_point_contract_flag": "fast"}


def _dot(terms: list) -> torch.Tensor:
    """t0 + t1 + ... left to right (no leading 0.0)."""
    return functools.reduce(lambda a, b: a + b, terms)


def _features(g, p, moms, rmss) -> list:
    """The un-normalized features, as `features.param_features`: g, θ, m_i, rsqrt(w_j), m_i·rsqrt(w_j)."""
    rs = [torch.rsqrt(w) for w in rmss]
    return [g, p, *moms, *rs, *[m * r for m in moms for r in rs]]


def _mlp_tail(h: list, layers: list, w_out: torch.Tensor, b_out: torch.Tensor | None) -> list:
    """The MLP after its first layer: relu(Σ_i h_i W[i, j] + b_j) per hidden layer, then the outputs."""
    for w, b in layers:
        h = [torch.relu(_dot([h[i] * w[i, j] for i in range(len(h))]) + b[j]) for j in range(w.shape[1])]
    outs = [_dot([h[i] * w_out[i, o] for i in range(len(h))]) for o in range(w_out.shape[1])]
    return outs if b_out is None else [o + b_out[j] for j, o in enumerate(outs)]


def make_mlp_kernels(
    mom_decays: tuple, rms_decays: tuple, num_layers: int, step_mult: float, exp_mult: float
):
    """(accumulate, apply) of the `mlp` / `hierarchical` per-parameter step, uncompiled."""

    def accumulate(g, p, moms, rmss, clip, stats: bool):
        g = g.float()
        if clip is not None:
            g = torch.clamp(g, -clip, clip)
        p = p.float()
        new_m = [m + (1.0 - b) * (g - m) for b, m in zip(mom_decays, moms)]
        new_w = [c * w + (((1.0 - c) * g) * g + (1.0 - c) * F.EPS_V) for c, w in zip(rms_decays, rmss)]
        for m, nm in zip(moms, new_m):
            m.copy_(nm)
        for w, nw in zip(rmss, new_w):
            w.copy_(nw)
        out = [torch.sum(x * x) for x in _features(g, p, new_m, new_w)]
        if stats:  # Σ of all momenta, Σ of all w, Σ w², Σ θ
            out += [
                _dot([m.sum() for m in new_m]),
                _dot([w.sum() for w in new_w]),
                _dot([(w * w).sum() for w in new_w]),
                p.sum(),
            ]
        return torch.stack(out)

    def apply(g, p, moms, rmss, clip, first_w_t, first_b, layers, w_out, b_out, log_step):
        """θ += −d·exp(s c_exp + λ)·c_step; ``first_w_t`` (H0 + 1, F) = (ŝ W0 | ŝ skip)ᵀ."""
        gf = g.float()
        if clip is not None:
            gf = torch.clamp(gf, -clip, clip)
        x = _features(gf, p.float(), moms, rmss)
        h0 = first_b.shape[0]
        pre = [_dot([x[f] * first_w_t[j, f] for f in range(len(x))]) for j in range(h0 + 1)]
        h = [torch.relu(pre[j] + first_b[j]) for j in range(h0)]
        d, s = _mlp_tail(h, layers, w_out, b_out)
        d = d + pre[h0]
        s = s * exp_mult
        if log_step is not None:
            s = s + log_step
        u = (d * torch.exp(s)) * (-step_mult)
        p.add_(u.to(p.dtype))

    assert num_layers >= 0
    return accumulate, apply


def make_v2_kernels(mom_decays: tuple, rms_decays: tuple):
    """(accumulate, odd_moments, direction) of the `hierarchical_v2` per-parameter step, uncompiled."""

    def accumulate(g, p, moms, rmss, clip):
        """(6 + R,): Σ g², Σ m (all i), Σ m² (all i), Σ v² (all j), Σ θ, Σ θ², Σ v_j."""
        g = torch.clamp(g.float(), -clip, clip)
        p = p.float()
        new_m = [m + (1.0 - b) * (g - m) for b, m in zip(mom_decays, moms)]
        new_v = [c * v + ((1.0 - c) * g) * g for c, v in zip(rms_decays, rmss)]
        for m, nm in zip(moms, new_m):
            m.copy_(nm)
        for v, nv in zip(rmss, new_v):
            v.copy_(nv)
        return torch.stack(
            [
                torch.sum(g * g),
                _dot([m.sum() for m in new_m]),
                _dot([(m * m).sum() for m in new_m]),
                _dot([(v * v).sum() for v in new_v]),
                p.sum(),
                torch.sum(p * p),
                *[v.sum() for v in new_v],
            ]
        )

    def odd(g, moms, rmss, clip, eps):
        rs = [torch.rsqrt(v + eps[j]) for j, v in enumerate(rmss)]
        return [torch.clamp(g.float(), -clip, clip), *moms, *[m * r for m in moms for r in rs]]

    def odd_moments(g, moms, rmss, clip, eps):
        """(F_odd,) Σ over the tensor of each odd feature squared; ``eps`` (R,)."""
        return torch.stack([torch.sum(x * x) for x in odd(g, moms, rmss, clip, eps)])

    def direction(g, moms, rmss, clip, eps, inv_mean_v, first_w_t, w_even, bias, layers, w_out, d):
        """``d`` ← f(x) − f(−x) + w_skip·x̂ in place; returns Σ d². ``first_w_t`` (H0 + 1, F_odd) the
        scaled odd rows and the skip, ``w_even`` (R, H0), ``inv_mean_v`` (R,) 1/(mean v_j + ε)."""
        x = odd(g, moms, rmss, clip, eps)
        even = [torch.sqrt(v * inv_mean_v[j]) for j, v in enumerate(rmss)]
        h0 = bias.shape[0]
        pre = [_dot([x[f] * first_w_t[j, f] for f in range(len(x))]) for j in range(h0 + 1)]
        c = [_dot([even[r] * w_even[r, j] for r in range(len(even))]) + bias[j] for j in range(h0)]
        plus = _mlp_tail([torch.relu(c[j] + pre[j]) for j in range(h0)], layers, w_out, None)[0]
        minus = _mlp_tail([torch.relu(c[j] - pre[j]) for j in range(h0)], layers, w_out, None)[0]
        out = (plus - minus) + pre[h0]
        d.copy_(out)
        return torch.sum(out * out)

    return accumulate, odd_moments, direction


def _own_code(fn: Callable) -> Callable:
    """``fn`` with a code object of its own: `torch.compile` caches (and counts recompiles) per code object."""
    clone = types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    clone.__qualname__ = fn.__qualname__
    return clone


class Compiled:
    """A kernel compiled with a dynamic entry dimension in two size classes, falling back to ``eager``.

    Called as ``kernel(entries, *args)``: ``args`` are the function's, ``entries`` the flat tensors
    among them that have one entry per parameter entry (marked dynamic before the call).
    """

    disabled_reason: str | None = None  # set (for every kernel) after a failed compilation

    def __init__(self, fn: Callable, eager: Callable):
        self.fn = torch.compile(_own_code(fn), dynamic=None, fullgraph=True, options=OPTIONS)
        self.eager = eager

    @staticmethod
    def usable(n: int) -> bool:
        return n >= MIN_ENTRIES and Compiled.disabled_reason is None

    def __call__(self, entries: list, *args):
        lo, hi = (MIN_ENTRIES, SMALL) if entries[0].numel() <= SMALL else (SMALL + 1, 1 << 40)
        for t in entries:
            torch._dynamo.mark_dynamic(t, 0, min=lo, max=hi)
        try:
            return self.fn(*args)
        except Exception as err:  # a failed compilation: nothing ran yet, the eager path takes over
            if Compiled.disabled_reason is None:
                Compiled.disabled_reason = (
                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                )
                warnings.warn(
                    "lopt.torch: torch.compile of the learned optimizer's kernels failed "
                    f"({Compiled.disabled_reason}); running the eager torch ops instead (same results, "
                    "several times slower). Pass compile=False to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return self.eager(*args)


@functools.cache
def mlp_kernels(mom_decays: tuple, rms_decays: tuple, num_layers: int, step_mult: float, exp_mult: float):
    """The compiled (accumulate, apply) of one `mlp`/`hierarchical` configuration (cached)."""
    acc, app = make_mlp_kernels(mom_decays, rms_decays, num_layers, step_mult, exp_mult)
    return Compiled(acc, acc), Compiled(app, app)


@functools.cache
def v2_kernels(mom_decays: tuple, rms_decays: tuple):
    """The compiled (accumulate, odd_moments, direction) of one `hierarchical_v2` configuration (cached)."""
    return tuple(Compiled(k, k) for k in make_v2_kernels(mom_decays, rms_decays))
