"""Tiny decoder-only transformer character language models on the King James Bible.

A task is a GPT-style decoder (Radford et al. 2019): token plus learned positional embeddings,
L pre-LayerNorm blocks ``x ← x + Attn(LN(x)); x ← x + MLP(LN(x))``, a final LayerNorm and an
untied dense read-out to the vocabulary. Attention is causal multi-head self-attention
(Vaswani et al. 2017), per head ``softmax(q kᵀ / √d_h + M) v`` with ``M[t, s] = -∞`` for s > t,
so the logits at position t depend on tokens 0..t only. The MLP is D → 4D → D with GELU. Batch,
loss (mean next-character cross-entropy in nats) and metrics are those of `lopt.tasks.rnn_lm`.

References: the transformer language-model tasks of TaskSet (Metz et al. 2020, "Using a
thousand optimization tasks to learn hyperparameter search strategies"); nanoGPT (Karpathy).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from lopt.tasks import _nn
from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.tasks.rnn_lm import (
    VOCAB_SIZES,
    char_windows,
    check_sizes,
    check_windows,
    next_char_metrics,
    sample_window,
    text_data,
    window_extremes,
)
from lopt.validate import ConfigError, check_choice, check_interval, check_range

_LN_EPS = 1e-5


# --- layers (one sequence (T, D); vmap over the batch) ---------------------------------------
def layer_norm(p: dict, x: jax.Array) -> jax.Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis of ``x`` (T, D)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)  # (T, 1)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)  # (T, 1)
    return (x - mean) * jax.lax.rsqrt(var + _LN_EPS) * p["scale"][None, :] + p["bias"][None, :]


def _linear(p: dict, x: jax.Array) -> jax.Array:
    """``x @ w + b`` for x (T, D_in) -> (T, D_out)."""
    return x @ p["w"] + p["b"][None, :]


def causal_self_attention(p: dict, x: jax.Array, num_heads: int) -> jax.Array:
    """Multi-head causal self-attention of ``x`` (T, D); ``p`` has ``qkv`` (D, 3D) and ``proj`` (D, D)."""
    t, d = x.shape
    dh = d // num_heads
    q, k, v = jnp.split(_linear(p["qkv"], x), 3, axis=-1)  # (T, D) each, heads contiguous
    q, k, v = (a.reshape(t, num_heads, dh) for a in (q, k, v))  # (T, nh, dh)
    scores = jnp.einsum("thd,shd->hts", q, k) / math.sqrt(dh)  # (nh, T, T)
    causal = jnp.tril(jnp.ones((t, t), bool))  # (T, T) key s visible from query t iff s <= t
    scores = jnp.where(causal[None], scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)  # (nh, T, T) masked entries exactly 0
    out = jnp.einsum("hts,shd->thd", weights, v).reshape(t, d)  # (T, D)
    return _linear(p["proj"], out)


def transformer_logits(params: dict, tokens: jax.Array, num_heads: int) -> jax.Array:
    """Next-character logits (T, V) of one window of ``tokens`` (T,); vmap it over a batch."""
    x = jnp.take(params["tok"], tokens, axis=0) + params["pos"]  # (T, D)
    for block in params["blocks"]:
        x = x + causal_self_attention(block["attn"], layer_norm(block["ln1"], x), num_heads)
        h = jax.nn.gelu(_linear(block["fc"], layer_norm(block["ln2"], x)))  # (T, 4D)
        x = x + _linear(block["fc_out"], h)  # (T, D)
    return _linear(params["head"], layer_norm(params["ln_f"], x))  # (T, V)


def _ln_init(d: int) -> dict:
    return {"scale": jnp.ones((d,), jnp.float32), "bias": jnp.zeros((d,), jnp.float32)}


# --- the family -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TransformerLMStatic:
    """Structure of one character-level transformer language model."""

    num_layers: int  # transformer blocks L
    width: int  # model width D (residual stream)
    num_heads: int  # attention heads (must divide D)
    seq_len: int  # characters per window T (the context length)
    batch_size: int  # windows per batch B
    dataset: str = "kjv"  # text dataset in lopt.data

    def __post_init__(self):
        check_range("TransformerLMStatic.num_layers", self.num_layers, 1, 16)
        check_range("TransformerLMStatic.width", self.width, 1, 1024)
        check_range("TransformerLMStatic.num_heads", self.num_heads, 1, self.width)
        if self.width % self.num_heads:
            raise ConfigError(
                f"TransformerLMStatic.num_heads={self.num_heads!r} is not valid: it must divide "
                f"width={self.width}."
            )
        check_range("TransformerLMStatic.seq_len", self.seq_len, 1, 1024)
        check_range("TransformerLMStatic.batch_size", self.batch_size, 1, 4096)
        check_choice("TransformerLMStatic.dataset", self.dataset, VOCAB_SIZES)


@dataclasses.dataclass(frozen=True)
class TransformerLM(TaskFamily):
    """Tiny pre-LN decoder-only transformer char-LMs: depth, width, heads, window, batch sampled."""

    name = "transformer_lm"

    num_layers: tuple[int, ...] = (1, 2)  # blocks L
    widths: tuple[int, ...] = (16, 32, 64)  # model widths D
    num_heads: tuple[int, ...] = (1, 2, 4)  # heads (each must divide every width)
    seq_lens: tuple[int, ...] = (16, 32, 64)  # context lengths T (attention cost ∝ T²)
    batch_sizes: tuple[int, ...] = (8, 16, 32, 64)  # windows per batch B
    max_tokens: int = 1024  # cap on B·T (cost ∝ B·T·D²): B is drawn among sizes with B·T <= cap
    init_scale: tuple[float, float] = (0.5, 2.0)  # weight-init multiplier, log-uniform in [a, b]
    dataset: str = "kjv"  # text dataset in lopt.data

    def __post_init__(self):
        check_sizes("TransformerLM.num_layers", self.num_layers, 1, 16)
        check_sizes("TransformerLM.widths", self.widths, 1, 1024)
        check_sizes("TransformerLM.num_heads", self.num_heads, 1, 1024)
        for h in self.num_heads:
            for d in self.widths:
                if d % h:
                    raise ConfigError(
                        f"TransformerLM.num_heads contains {h!r}, which does not divide width {d} "
                        f"in TransformerLM.widths={self.widths!r}: every head count must divide every width."
                    )
        check_windows("TransformerLM", self.seq_lens, self.batch_sizes, self.max_tokens)
        check_interval("TransformerLM.init_scale", self.init_scale, 1e-4, 100.0)
        check_choice("TransformerLM.dataset", self.dataset, VOCAB_SIZES)

    def sample_static(self, key):
        rng = host_rng(key)
        layers, width, heads = (int(rng.choice(v)) for v in (self.num_layers, self.widths, self.num_heads))
        seq_len, batch_size = sample_window(rng, self.seq_lens, self.batch_sizes, self.max_tokens)
        return TransformerLMStatic(layers, width, heads, seq_len, batch_size, self.dataset)

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        (t_lo, b_lo), (t_hi, b_hi) = window_extremes(self.seq_lens, self.batch_sizes, self.max_tokens)
        small = TransformerLMStatic(
            min(self.num_layers), min(self.widths), min(self.num_heads), t_lo, b_lo, self.dataset
        )
        large = TransformerLMStatic(
            max(self.num_layers), max(self.widths), max(self.num_heads), t_hi, b_hi, self.dataset
        )
        return small, large

    def describe(self, static):
        return (
            f"{static.dataset} L{static.num_layers} d{static.width} h{static.num_heads}, "
            f"T{static.seq_len} bs{static.batch_size}"
        )

    def load_data(self, static):
        return text_data(static.dataset)

    def init(self, key, task: Task):
        """Embeddings N(0, scale²); dense layers LeCun normal × scale, zero bias; LayerNorms (1, 0)."""
        s, scale = task.static, task.dynamic["init_scale"]
        vocab, d = VOCAB_SIZES[s.dataset], s.width
        k_tok, k_pos, k_head, k_blocks = jax.random.split(key, 4)
        blocks = []
        for k in jax.random.split(k_blocks, s.num_layers):
            k_qkv, k_proj, k_fc, k_out = jax.random.split(k, 4)
            blocks.append(
                {
                    "ln1": _ln_init(d),
                    "attn": {
                        "qkv": _nn.dense_init(k_qkv, d, 3 * d, scale),  # (D, 3D) q, k, v
                        "proj": _nn.dense_init(k_proj, d, d, scale),  # (D, D)
                    },
                    "ln2": _ln_init(d),
                    "fc": _nn.dense_init(k_fc, d, 4 * d, scale),
                    "fc_out": _nn.dense_init(k_out, 4 * d, d, scale),
                }
            )
        return {
            "tok": jax.random.normal(k_tok, (vocab, d), jnp.float32) * scale,  # (V, D)
            "pos": jax.random.normal(k_pos, (s.seq_len, d), jnp.float32) * scale,  # (T, D)
            "blocks": blocks,
            "ln_f": _ln_init(d),
            "head": _nn.dense_init(k_head, d, vocab, scale),  # (D, V)
        }

    def batch(self, key, split, task: Task):
        return char_windows(key, task.data[split]["x"], task.static.batch_size, task.static.seq_len)

    def loss(self, params, key, batch, task: Task):
        return self.metrics(params, key, batch, task)["loss"]

    def metrics(self, params, key, batch, task: Task):
        heads = task.static.num_heads
        logits = jax.vmap(lambda x: transformer_logits(params, x, heads))(batch["x"])  # (B, T, V)
        return next_char_metrics(logits, batch["y"])
