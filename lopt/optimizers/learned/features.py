r"""Features shared by the per-parameter learned optimizers, written for XLA's CPU fusion.

Per parameter (one tensor at a time, computed in float32 whatever the params' dtype):

.. math::
    m^{(i)}_t &= \beta_i m^{(i)}_{t-1} + (1-\beta_i) g_t, \qquad
    v^{(j)}_t = \gamma_j v^{(j)}_{t-1} + (1-\gamma_j) g_t^2 \\
    x &= \big[\,g,\ \theta,\ m^{(i)},\ \mathrm{rsqrt}(v^{(j)}+\epsilon_v),\
        m^{(i)}\mathrm{rsqrt}(v^{(j)}+\epsilon_v)\,\big]
        \quad\text{(every } i, \text{ every } j, \text{ every pair } (i, j)) \\
    \hat x_f &= x_f \,/\, \sqrt{\operatorname{mean}_{\text{tensor}}(x_f^2) + \epsilon_n}

Each feature is normalized by its second moment across its tensor (Metz et al. 2020), so the
features -- and hence the update -- are unchanged when a tensor's whole gradient history is
rescaled by c > 0 (g, m scale by c, rsqrt(v) by 1/c, m·rsqrt(v) not at all), up to the tiny
epsilons. No accumulator is bias-corrected: the normalization divides any common factor out.

Speed (see benchmarks/step_cost.py): the features are never stacked into an [N, F] array. The
per-tensor scale ŝ_f = 1/√(mean x_f² + ε) is folded into the first layer's weights
(W'_{f,j} = ŝ_f W_{f,j}), features constant across a tensor (the step embedding, the LSTM's
output) are folded into its bias, and the tiny per-parameter MLP is written out as scalar-weight
multiply-adds, which XLA fuses into one loop over the parameters that reads g, θ and the
accumulators once. The F second moments are F fused reductions over the same inputs.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

EPS_V = 1e-24  # ε_v in rsqrt(v + ε_v): far below (1−γ)g² for any |g| > 1e-9; (1−γ)ε_v stays a normal float
EPS_NORM = 1e-30  # ε_n of the per-tensor normalization: a zero feature stays 0, any other is normalized

# Timescales of the step-count embedding tanh(t / τ): saturating features that extrapolate to
# steps beyond meta-training (a sinusoid would wrap around), spanning 1 .. 1e5 steps.
STEP_TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Which per-parameter features exist: the static part of the feature construction."""

    mom_decays: tuple[float, ...]  # β_i of the momenta m^(i)
    rms_decays: tuple[float, ...]  # γ_j of the second moments v^(j)

    def names(self) -> list[str]:
        """One name per per-parameter feature, in the order of `param_features`."""
        return (
            ["g", "param"]
            + [f"m{b}" for b in self.mom_decays]
            + [f"rsqrt_v{c}" for c in self.rms_decays]
            + [f"m{b}*rsqrt_v{c}" for b in self.mom_decays for c in self.rms_decays]
        )

    @property
    def count(self) -> int:
        return len(self.names())

    @property
    def state_floats(self) -> int:
        return len(self.mom_decays) + len(self.rms_decays)

    def nominal_index(self) -> int:
        """The feature m·rsqrt(v) closest to Adam's (β1 0.9, the slowest γ): the initial direction."""
        i = int(np.argmin([abs(math.log1p(-b) - math.log1p(-0.9)) for b in self.mom_decays]))
        return self.names().index(f"m{self.mom_decays[i]}*rsqrt_v{self.rms_decays[-1]}")


def update_accumulators(spec: FeatureSpec, g: jax.Array, moms: tuple, rmss: tuple) -> tuple[tuple, tuple]:
    """One leaf's new (m^(i)), (v^(j) + ε_v); g is float32.

    The state keeps w = v + ε_v, not v (it starts at ε_v): w_t = γ w_{t−1} + (1−γ)(g² + ε_v) is the
    same recursion, and every use -- rsqrt(w), 1/w, m/w -- then reads w directly, with no shared
    ``v + ε`` that XLA would materialize as a temporary.
    """
    # m + (1−β)(g − m) = β m + (1−β) g; this form stops XLA from factoring β = 0.5 into 0.5·(m + g),
    # which would add a temporary
    moms = tuple(m + (1.0 - b) * (g - m) for b, m in zip(spec.mom_decays, moms))
    # ((1−γ) g)·g, not (1−γ)(g·g): g·g would be shared with the reduction Σ g² and materialized
    rmss = tuple(c * v + ((1.0 - c) * g * g + (1.0 - c) * EPS_V) for c, v in zip(spec.rms_decays, rmss))
    return moms, rmss


def param_features(g: jax.Array, p: jax.Array, moms: tuple, rmss: tuple) -> list[jax.Array]:
    """One leaf's un-normalized per-parameter features, in `FeatureSpec.names` order (rmss hold v + ε_v)."""
    rs = [jax.lax.rsqrt(v) for v in rmss]
    return [g, p, *moms, *rs, *[m * r for m in moms for r in rs]]


def second_moments(
    g: jax.Array, p: jax.Array, moms: tuple, rmss: tuple, mean_g2: jax.Array | None = None
) -> jax.Array:
    """(F,) float32: mean over the tensor of x_f², in `FeatureSpec.names` order.

    ``mean_g2``, if given, is used as mean g² (the caller has a cheaper expression for it).

    Derivation: rsqrt(v)² = 1/v and (m·rsqrt(v))² = m²/v, so every second moment is a reduction of
    an expression of g, θ and the accumulators alone. Written this way XLA fuses each one into its
    reduction instead of materializing rsqrt(v) and m·rsqrt(v) as temporaries -- on this machine a
    fresh temporary costs more (page faults) than the arithmetic.
    """
    n = max(g.size, 1)
    # No subexpression is shared between two reductions (m·(m/v) rather than (m·m)/v), else XLA
    # computes it once into a temporary array that both read; plain sums of squares are dots.
    sums = [dot_self(g) if mean_g2 is None else mean_g2 * n, dot_self(p), *[dot_self(m) for m in moms]]
    # Σ 2^j/v_j · 2^−j (exact): a distinct numerator per j, so XLA does not share one broadcast 1.0
    sums += [jnp.sum(jnp.float32(2.0**j) / v) * jnp.float32(2.0**-j) for j, v in enumerate(rmss)]
    sums += [jnp.sum(m * (m / v)) for m in moms for v in rmss]
    return jnp.stack(sums) / n


def scales(second_moment: jax.Array) -> jax.Array:
    """ŝ_f = 1 / √(mean x_f² + ε_n): the per-tensor normalization of each feature."""
    return jax.lax.rsqrt(second_moment + EPS_NORM)


def dot_self(x: jax.Array) -> jax.Array:
    """Σ x² as a dot product: reads x once and creates no temporary."""
    x = x.reshape(-1)
    return jnp.dot(x, x, precision=jax.lax.Precision.HIGHEST)


def step_embedding(count: jax.Array) -> jax.Array:
    """(len(STEP_TIMESCALES),) float32: tanh(t / τ) of the step count t."""
    t = count.astype(jnp.float32)
    return jnp.tanh(t / jnp.asarray(STEP_TIMESCALES, jnp.float32))


def clip_log_abs(x: jax.Array) -> jax.Array:
    """log(|x| + 1e-8) clipped to [-5, 5]: a magnitude feature of any scale."""
    return jnp.clip(jnp.log(jnp.abs(x) + 1e-8), -5.0, 5.0)


# --- the per-parameter MLP, unrolled into fusable elementwise multiply-adds ---------------------


def dense_init(key: jax.Array, fan_in: int, fan_out: int, scale: float = 1.0) -> dict[str, jax.Array]:
    """{'w': (fan_in, fan_out) ~ N(0, scale²/fan_in), 'b': zeros}: variance-preserving init."""
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * (scale / math.sqrt(max(fan_in, 1)))
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def mlp_init(key: jax.Array, num_inputs: int, hidden: tuple[int, ...], out_scale: float) -> dict:
    """Theta of the per-parameter MLP: layers 'l0'..'l{k-1}' (ReLU) and 'out' (2 outputs)."""
    keys = jax.random.split(key, len(hidden) + 1)
    sizes = (num_inputs, *hidden)
    theta = {f"l{i}": dense_init(keys[i], sizes[i], sizes[i + 1]) for i in range(len(hidden))}
    theta["out"] = dense_init(keys[-1], sizes[-1], 2, scale=out_scale)
    return theta


def _affine(xs: list[jax.Array], w: jax.Array, b: jax.Array) -> list[jax.Array]:
    """[b_j + Σ_f x_f w_fj for each j]: scalar weights times arrays, which XLA fuses into one loop."""
    return [sum((x * w[f, j] for f, x in enumerate(xs)), b[j]) for j in range(w.shape[1])]


affine = _affine  # the public name, for the other per-parameter networks


def mlp_elementwise(
    features: list[jax.Array], first_w: jax.Array, first_b: jax.Array, mlp: dict, skip: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The per-parameter MLP over one tensor: (direction, magnitude), each of the features' shape.

    Args:
      features: F arrays (un-normalized); the per-tensor normalization is already in ``first_w``
        and ``skip``, and all per-tensor inputs in ``first_b``.
      first_w: (F, H0) effective first-layer weights ŝ_f W_fj.
      first_b: (H0,) effective first-layer bias.
      mlp: theta of the MLP (layers after the first, and 'out').
      skip: (F,) effective linear skip from the features to the direction.
    """
    h = [jax.nn.relu(a) for a in _affine(features, first_w, first_b)]
    i = 1
    while f"l{i}" in mlp:
        h = [jax.nn.relu(a) for a in _affine(h, mlp[f"l{i}"]["w"], mlp[f"l{i}"]["b"])]
        i += 1
    direction, magnitude = _affine(h, mlp["out"]["w"], mlp["out"]["b"])
    direction = direction + sum(x * skip[f] for f, x in enumerate(features))
    return direction, magnitude


def mlp_flops(num_features: int, hidden: tuple[int, ...]) -> int:
    """FLOPs per parameter of `mlp_elementwise` (a multiply-add counts 2; ReLU and exp count 1)."""
    sizes = (num_features, *hidden, 2)
    flops = sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:])) + sum(hidden)
    return flops + 2 * num_features  # the skip


# --- per-tensor statistics of losses and gradients -----------------------------------------------


def ema_update(mean: jax.Array, var: jax.Array, x: jax.Array, decay: float) -> tuple[jax.Array, jax.Array]:
    """Running mean and variance (Metz et al. 2020's loss normalizer, un-bias-corrected)."""
    new_mean = decay * mean + (1.0 - decay) * x
    new_var = decay * var + (1.0 - decay) * jnp.square(new_mean - x)
    return new_mean, new_var


def debias(x: jax.Array, decay: float, count: jax.Array) -> jax.Array:
    """x / (1 − decay^count): the bias correction of an EMA started at 0 (0 while count is 0)."""
    correction = 1.0 - jnp.power(jnp.float32(decay), count.astype(jnp.float32))
    return jnp.where(count > 0, x / jnp.maximum(correction, 1e-8), 0.0)


def zscore(x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """(x − mean)/√(var + 1e-8), clipped to [-5, 5]."""
    return jnp.clip((x - mean) * jax.lax.rsqrt(var + 1e-8), -5.0, 5.0)


def fresh(x: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(value, is_fresh) for an optional loss: None or a non-finite value means "no new value"."""
    if x is None:
        return jnp.zeros([], jnp.float32), jnp.zeros([], bool)
    x = jnp.asarray(x).astype(jnp.float32).reshape(())
    ok = jnp.isfinite(x)
    return jnp.where(ok, x, 0.0), ok
