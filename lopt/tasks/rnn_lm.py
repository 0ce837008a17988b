"""Character-level recurrent language models (LSTM or GRU) on the King James Bible.

A task embeds characters, runs a recurrent cell over a window of T characters with `lax.scan`
(the state starts at zero in every window) and predicts each next character with a dense
read-out. The loss is the mean next-character cross-entropy in nats; `metrics` also reports the
next-character top-1 accuracy. A batch is B random windows of T + 1 consecutive characters cut
from the split's token stream inside jit: inputs are the first T, targets the last T.

Cells (``x`` the input, ``h`` the hidden state, σ the logistic sigmoid, ⊙ elementwise):

- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), gates in the
  order i, f, g, o: ``[i f g o] = x W_x + h W_h + b``; ``c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)``;
  ``h' = σ(o) ⊙ tanh(c')``. The forget-gate bias starts at 1 (Jozefowicz et al. 2015).
- GRU (Cho et al. 2014, reset before the recurrent product), columns in the order r, z, n:
  ``r = σ(x W_xr + h W_hr + b_r)``; ``z = σ(x W_xz + h W_hz + b_z)``;
  ``n = tanh(x W_xn + (r ⊙ h) W_hn + b_n)``; ``h' = (1 - z) ⊙ n + z ⊙ h``.

References: the character RNN language-model family of TaskSet (Metz et al. 2020, "Using a
thousand optimization tasks to learn hyperparameter search strategies"); Karpathy's char-rnn.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import lopt.data
from lopt.tasks import _nn
from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import ConfigError, check_choice, check_interval, check_range, check_subset

VOCAB_SIZES = {"kjv": 63}  # distinct characters of each text dataset (lopt.data's ``vocab``)
CELLS = ("lstm", "gru")
_GATES = {"lstm": 4, "gru": 3}  # blocks of H columns in W_x, W_h and b


# --- text batches and the next-character loss (shared with transformer_lm) ------------------
def char_windows(key: jax.Array, stream: jax.Array, batch_size: int, seq_len: int) -> dict:
    """``batch_size`` random windows of ``seq_len + 1`` consecutive tokens of ``stream`` (N,).

    Returns ``{"x": (B, T) int32 inputs, "y": (B, T) int32 targets}`` with ``y[:, t] = x[:, t+1]``
    inside the window: target = input shifted by one. Starts are uniform in [0, N - T - 1], so
    every window lies inside the stream.
    """
    n = stream.shape[0]
    starts = jax.random.randint(key, (batch_size,), 0, n - seq_len)  # (B,) start + T + 1 <= N
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(stream, (s,), (seq_len + 1,)))(starts)
    windows = windows.astype(jnp.int32)  # (B, T+1)
    return {"x": windows[:, :-1], "y": windows[:, 1:]}


def next_char_metrics(logits: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """Mean cross-entropy (nats) and top-1 accuracy of ``logits`` (B, T, V) on ``targets`` (B, T)."""
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    labels = targets.reshape(-1)  # (B*T,)
    return {"loss": _nn.softmax_cross_entropy(flat, labels), "accuracy": _nn.accuracy(flat, labels)}


def text_data(dataset: str) -> dict:
    """The device-resident token streams of ``dataset``, per split (cached by `lopt.data`)."""
    return lopt.data.device_arrays(dataset)


def check_sizes(field: str, values: tuple[int, ...], lo: int, hi: int) -> None:
    """Raise `ConfigError` unless ``values`` is a non-empty tuple of integers in [lo, hi]."""
    if not values:
        raise ConfigError(f"{field} is empty: give at least one integer in [{lo}, {hi}].")
    for v in values:
        check_range(field, v, lo, hi)


def check_windows(prefix: str, seq_lens: tuple[int, ...], batch_sizes: tuple[int, ...], max_tokens: int):
    """Validate the window lengths, batch sizes and the token cap of a text family's space."""
    check_sizes(f"{prefix}.seq_lens", seq_lens, 1, 1024)
    check_sizes(f"{prefix}.batch_sizes", batch_sizes, 1, 4096)
    check_range(f"{prefix}.max_tokens", max_tokens, 1, 1 << 22)
    need = max(seq_lens) * min(batch_sizes)
    if need > max_tokens:
        raise ConfigError(
            f"{prefix}.max_tokens={max_tokens!r} is too small: the longest window {max(seq_lens)} times the "
            f"smallest batch size {min(batch_sizes)} is {need} tokens; raise it to at least {need}."
        )


def sample_window(rng, seq_lens, batch_sizes, max_tokens: int) -> tuple[int, int]:
    """(T, B): T uniform over ``seq_lens``, then B uniform over the batch sizes with B·T <= max_tokens."""
    t = int(rng.choice(seq_lens))
    return t, int(rng.choice([b for b in batch_sizes if b * t <= max_tokens]))


def window_extremes(seq_lens, batch_sizes, max_tokens: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The cheapest and the most expensive (T, B) pairs that `sample_window` can return."""
    t = max(seq_lens)
    return (min(seq_lens), min(batch_sizes)), (t, max(b for b in batch_sizes if b * t <= max_tokens))


# --- recurrent cells ------------------------------------------------------------------------
def cell_init(key: jax.Array, cell: str, input_size: int, hidden: int, scale=1.0) -> dict:
    """``W_x`` (E, G·H), ``W_h`` (H, G·H): LeCun normal × ``scale``; ``b`` (G·H,) zero (LSTM forget 1)."""
    g = _GATES[cell]
    k_x, k_h = jax.random.split(key)
    w_x = jax.random.normal(k_x, (input_size, g * hidden), jnp.float32) * (scale / math.sqrt(input_size))
    w_h = jax.random.normal(k_h, (hidden, g * hidden), jnp.float32) * (scale / math.sqrt(hidden))
    b = jnp.zeros((g * hidden,), jnp.float32)
    if cell == "lstm":
        b = b.at[hidden : 2 * hidden].set(1.0)  # forget-gate bias
    return {"w_x": w_x, "w_h": w_h, "b": b}


def cell_zero_state(cell: str, hidden: int):
    """The initial recurrent state: ``(h, c)`` for an LSTM, ``h`` for a GRU; zeros of shape (H,)."""
    h = jnp.zeros((hidden,), jnp.float32)
    return (h, h) if cell == "lstm" else h


def _cell_update(cell: str, p: dict, state, xw: jax.Array):
    """One step from a precomputed input projection ``xw = x W_x`` (G·H,); returns (state, h)."""
    if cell == "lstm":
        h, c = state
        i, f, g, o = jnp.split(xw + h @ p["w_h"] + p["b"], 4)  # (H,) each
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h
    h = state
    hidden = h.shape[0]
    xr, xz, xn = jnp.split(xw + p["b"], 3)  # (H,) each
    hr, hz = jnp.split(h @ p["w_h"][:, : 2 * hidden], 2)  # (H,) each
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + (r * h) @ p["w_h"][:, 2 * hidden :])  # (H,)
    h = (1.0 - z) * n + z * h
    return h, h


def cell_step(cell: str, p: dict, state, x: jax.Array):
    """One recurrent step on an input ``x`` (E,) (see the module docstring); returns (state, h)."""
    return _cell_update(cell, p, state, x @ p["w_x"])


def rnn_logits(params: dict, tokens: jax.Array, cell: str) -> jax.Array:
    """Next-character logits (T, V) of one window of ``tokens`` (T,); vmap it over a batch."""
    xs = jnp.take(params["embed"], tokens, axis=0)  # (T, E)
    xw = xs @ params["cell"]["w_x"]  # (T, G·H) input projections, one matmul outside the scan
    hidden = params["cell"]["w_h"].shape[0]
    step = lambda state, xw_t: _cell_update(cell, params["cell"], state, xw_t)  # noqa: E731
    _, hs = jax.lax.scan(step, cell_zero_state(cell, hidden), xw)  # (T, H)
    return hs @ params["out"]["w"] + params["out"]["b"][None, :]  # (T, V)


# --- the family -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RNNLMStatic:
    """Structure of one character-level RNN language model."""

    cell: str  # "lstm" or "gru"
    embed: int  # embedding width E
    hidden: int  # hidden-state width H
    seq_len: int  # characters per window T (the unroll length)
    batch_size: int  # windows per batch B
    dataset: str = "kjv"  # text dataset in lopt.data

    def __post_init__(self):
        check_choice("RNNLMStatic.cell", self.cell, CELLS)
        check_range("RNNLMStatic.embed", self.embed, 1, 1024)
        check_range("RNNLMStatic.hidden", self.hidden, 1, 1024)
        check_range("RNNLMStatic.seq_len", self.seq_len, 1, 1024)
        check_range("RNNLMStatic.batch_size", self.batch_size, 1, 4096)
        check_choice("RNNLMStatic.dataset", self.dataset, VOCAB_SIZES)


@dataclasses.dataclass(frozen=True)
class RNNLM(TaskFamily):
    """Character-level LSTM / GRU language models: cell, widths, window and batch are sampled."""

    name = "rnn_lm"

    cells: tuple[str, ...] = CELLS  # recurrent cells to choose from
    embeds: tuple[int, ...] = (8, 16, 32)  # embedding widths E
    hiddens: tuple[int, ...] = (16, 32, 64, 128)  # hidden widths H (cost ∝ B·T·H²)
    seq_lens: tuple[int, ...] = (16, 32, 64)  # window lengths T (sequential scan steps)
    batch_sizes: tuple[int, ...] = (8, 16, 32, 64)  # windows per batch B
    max_tokens: int = 1024  # cap on B·T (cost ∝ B·T·H²): B is drawn among sizes with B·T <= cap
    init_scale: tuple[float, float] = (0.5, 2.0)  # weight-init multiplier, log-uniform in [a, b]
    dataset: str = "kjv"  # text dataset in lopt.data

    def __post_init__(self):
        check_subset("RNNLM.cells", self.cells, CELLS)
        check_sizes("RNNLM.embeds", self.embeds, 1, 1024)
        check_sizes("RNNLM.hiddens", self.hiddens, 1, 1024)
        check_windows("RNNLM", self.seq_lens, self.batch_sizes, self.max_tokens)
        check_interval("RNNLM.init_scale", self.init_scale, 1e-4, 100.0)
        check_choice("RNNLM.dataset", self.dataset, VOCAB_SIZES)

    def sample_static(self, key):
        rng = host_rng(key)
        cell = str(rng.choice(self.cells))
        embed, hidden = int(rng.choice(self.embeds)), int(rng.choice(self.hiddens))
        seq_len, batch_size = sample_window(rng, self.seq_lens, self.batch_sizes, self.max_tokens)
        return RNNLMStatic(cell, embed, hidden, seq_len, batch_size, self.dataset)

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        (t_lo, b_lo), (t_hi, b_hi) = window_extremes(self.seq_lens, self.batch_sizes, self.max_tokens)
        cells = sorted(self.cells, key=lambda c: _GATES[c])  # fewest gates (GRU) first
        small = RNNLMStatic(cells[0], min(self.embeds), min(self.hiddens), t_lo, b_lo, self.dataset)
        large = RNNLMStatic(cells[-1], max(self.embeds), max(self.hiddens), t_hi, b_hi, self.dataset)
        return small, large

    def describe(self, static):
        s = static
        return f"{s.dataset} {s.cell} e{s.embed} h{s.hidden}, T{s.seq_len} bs{s.batch_size}"

    def load_data(self, static):
        return text_data(static.dataset)

    def init(self, key, task: Task):
        s, scale = task.static, task.dynamic["init_scale"]
        vocab = VOCAB_SIZES[s.dataset]
        k_embed, k_cell, k_out = jax.random.split(key, 3)
        return {
            "embed": jax.random.normal(k_embed, (vocab, s.embed), jnp.float32) * scale,  # (V, E)
            "cell": cell_init(k_cell, s.cell, s.embed, s.hidden, scale),
            "out": _nn.dense_init(k_out, s.hidden, vocab, scale),  # (H, V)
        }

    def batch(self, key, split, task: Task):
        return char_windows(key, task.data[split]["x"], task.static.batch_size, task.static.seq_len)

    def loss(self, params, key, batch, task: Task):
        return self.metrics(params, key, batch, task)["loss"]

    def metrics(self, params, key, batch, task: Task):
        logits = jax.vmap(lambda x: rnn_logits(params, x, task.static.cell))(batch["x"])  # (B, T, V)
        return next_char_metrics(logits, batch["y"])
