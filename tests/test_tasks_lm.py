"""Character language models (`rnn_lm`, `transformer_lm`) against float64 numpy references.

Most tests use tiny random parameters and a synthetic token stream; the KJV tests skip when the
dataset is not fetched (and fail under ``$LOPT_REQUIRE_DATA``).
"""

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks.base import Task, TaskConfig
from lopt.tasks.rnn_lm import (
    RNNLM,
    VOCAB_SIZES,
    RNNLMStatic,
    cell_step,
    char_windows,
    next_char_metrics,
    rnn_logits,
    sample_window,
)
from lopt.tasks.transformer_lm import (
    TransformerLM,
    TransformerLMStatic,
    causal_self_attention,
    transformer_logits,
)
from lopt.validate import ConfigError

pytestmark = pytest.mark.strict_promotion

V = VOCAB_SIZES["kjv"]


# --- float64 numpy references ---------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def np_lstm_step(p, h, c, x):
    """Standard LSTM equations, gates i, f, g, o."""
    n = h.shape[-1]
    z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
    i, f, g, o = (z[..., k * n : (k + 1) * n] for k in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def np_gru_step(p, h, x):
    """Cho et al. (2014) GRU, reset applied before the recurrent product; columns r, z, n."""
    n = h.shape[-1]
    wx, wh, b = p["w_x"], p["w_h"], p["b"]
    r = _sigmoid(x @ wx[:, :n] + h @ wh[:, :n] + b[:n])
    z = _sigmoid(x @ wx[:, n : 2 * n] + h @ wh[:, n : 2 * n] + b[n : 2 * n])
    cand = np.tanh(x @ wx[:, 2 * n :] + (r * h) @ wh[:, 2 * n :] + b[2 * n :])
    return (1.0 - z) * cand + z * h


def np_attention(p, x, num_heads):
    """Causal multi-head self-attention with explicit loops over heads, queries and keys."""
    t_len, d = x.shape
    dh = d // num_heads
    qkv = x @ p["qkv"]["w"] + p["qkv"]["b"]
    q, k, v = qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]
    out = np.zeros((t_len, d))
    for h in range(num_heads):
        cols = slice(h * dh, (h + 1) * dh)
        for t in range(t_len):
            scores = np.array([q[t, cols] @ k[s, cols] / math.sqrt(dh) for s in range(t + 1)])
            w = np.exp(scores - scores.max())
            w /= w.sum()
            out[t, cols] = sum(w[s] * v[s, cols] for s in range(t + 1))
    return out @ p["proj"]["w"] + p["proj"]["b"]


def np_layer_norm(p, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def np_gelu(x):  # the tanh approximation, jax.nn.gelu's default
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# --- helpers ----------------------------------------------------------------------------------
def _synthetic_data(lengths=(100, 40, 40, 50)):
    """Each split a run of consecutive uint8 ids, disjoint across splits."""
    data, start = {}, 0
    for split, n in zip(("train", "inner_valid", "outer_valid", "test"), lengths):
        data[split] = {"x": jnp.arange(start, start + n, dtype=jnp.uint8)}
        start += n
    return data


def _task(family, static, init_scale=1.0, data=None):
    dynamic = {"init_scale": jnp.float32(init_scale)}
    data = _synthetic_data() if data is None else data
    return Task(dynamic=dynamic, data=data, family=family, static=static)


def _random_params(task, seed, scale=0.5):
    """Params of ``task``'s shapes with every leaf N(0, scale²), so biases and LayerNorm gains count."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), shapes)


# --- recurrent cells --------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_step_matches_float64_equations(cell):
    e, h, g = 5, 7, {"lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(0)
    p = {
        "w_x": rng.standard_normal((e, g * h)) / 2,
        "w_h": rng.standard_normal((h, g * h)) / 2,
        "b": rng.standard_normal(g * h),
    }
    x = rng.standard_normal((3, e))  # (B, E)
    h0, c0 = rng.standard_normal((3, h)), rng.standard_normal((3, h))  # (B, H)
    f32 = lambda a: jax.tree.map(lambda v: v.astype(np.float32), a)  # noqa: E731
    step = jax.jit(jax.vmap(lambda p, s, xx: cell_step(cell, p, s, xx), in_axes=(None, 0, 0)))
    if cell == "lstm":
        (h1, c1), out = step(f32(p), f32((h0, c0)), f32(x))
        h_ref, c_ref = np_lstm_step(p, h0, c0, x)
        np.testing.assert_allclose(c1, c_ref, rtol=1e-5, atol=1e-5)
    else:
        h1, out = step(f32(p), f32(h0), f32(x))
        h_ref = np_gru_step(p, h0, x)
    np.testing.assert_allclose(h1, h_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out, h1)


def test_lstm_forget_bias_starts_at_one():
    task = _task(RNNLM(), RNNLMStatic("lstm", 3, 4, seq_len=2, batch_size=1))
    b = jax.jit(task.init)(jax.random.key(0))["cell"]["b"]
    np.testing.assert_array_equal(b, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_logits_match_unrolled_numpy(cell):
    fam, static = RNNLM(), RNNLMStatic(cell, embed=4, hidden=6, seq_len=5, batch_size=2)
    params = _random_params(_task(fam, static), seed=1)
    tokens = np.array([3, 0, 62, 17, 3])
    logits = jax.jit(rnn_logits, static_argnums=2)(params, tokens, cell)  # (T, V)
    p = _np(params)
    h, c, ref = np.zeros(6), np.zeros(6), []
    for tok in tokens:  # the state starts at zero in every window
        x = p["embed"][tok]
        if cell == "lstm":
            h, c = np_lstm_step(p["cell"], h, c, x)
        else:
            h = np_gru_step(p["cell"], h, x)
        ref.append(h @ p["out"]["w"] + p["out"]["b"])
    np.testing.assert_allclose(logits, np.stack(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell, e, h", [("lstm", 8, 16), ("gru", 8, 16), ("lstm", 32, 128), ("gru", 5, 3)])
def test_rnn_param_count_formula(cell, e, h):
    gates = {"lstm": 4, "gru": 3}[cell]
    task = _task(RNNLM(), RNNLMStatic(cell, e, h, seq_len=4, batch_size=2))
    assert task.num_params() == V * e + gates * h * (e + h + 1) + h * V + V


def test_rnn_static_extremes():
    small, large = RNNLM().static_extremes()
    assert small == RNNLMStatic("gru", 8, 16, 16, 8) and large == RNNLMStatic("lstm", 32, 128, 64, 16)
    assert _task(RNNLM(), small).num_params() == 63 * 8 + 3 * 16 * 25 + 16 * 63 + 63 == 2775
    assert _task(RNNLM(), large).num_params() == 63 * 32 + 4 * 128 * 161 + 128 * 63 + 63 == 92575


# --- transformer --------------------------------------------------------------------------------
def _transformer(num_layers=2, width=8, heads=2, seq_len=6):
    fam = TransformerLM()
    static = TransformerLMStatic(num_layers, width, heads, seq_len, batch_size=2)
    return static, _random_params(_task(fam, static), seed=3)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_matches_naive_loop(heads):
    _, params = _transformer(width=8, heads=heads)
    x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)  # (T, D)
    out = jax.jit(causal_self_attention, static_argnums=2)(params["blocks"][0]["attn"], x, heads)
    ref = np_attention(_np(params["blocks"][0]["attn"]), np.asarray(x, np.float64), heads)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_transformer_logits_match_numpy_forward():
    static, params = _transformer(num_layers=2, width=8, heads=2, seq_len=6)
    tokens = np.array([5, 1, 1, 40, 62, 0])
    logits = jax.jit(transformer_logits, static_argnums=2)(params, tokens, static.num_heads)
    p = _np(params)
    x = p["tok"][tokens] + p["pos"]
    for b in p["blocks"]:
        x = x + np_attention(b["attn"], np_layer_norm(b["ln1"], x), static.num_heads)
        hid = np_gelu(np_layer_norm(b["ln2"], x) @ b["fc"]["w"] + b["fc"]["b"])
        x = x + hid @ b["fc_out"]["w"] + b["fc_out"]["b"]
    ref = np_layer_norm(p["ln_f"], x) @ p["head"]["w"] + p["head"]["b"]
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


def test_changing_a_future_token_leaves_earlier_logits_exactly_equal():
    static, params = _transformer(num_layers=2, width=8, heads=2, seq_len=6)
    tokens = jnp.array([[5, 1, 1, 40, 62, 0], [5, 1, 1, 7, 62, 0]])  # differ at position 3 only
    f = jax.jit(jax.vmap(lambda t: transformer_logits(params, t, static.num_heads)))
    logits = np.asarray(f(tokens))  # (2, T, V)
    np.testing.assert_array_equal(logits[0, :3], logits[1, :3])
    assert np.all(np.abs(logits[0, 3:] - logits[1, 3:]).max(-1) > 1e-4)


@pytest.mark.parametrize("layers, d, t", [(1, 16, 16), (2, 64, 64), (2, 8, 6)])
def test_transformer_param_count_formula(layers, d, t):
    task = _task(TransformerLM(), TransformerLMStatic(layers, d, 2, t, batch_size=2))
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    assert per_block == 12 * d * d + 13 * d
    assert task.num_params() == V * d + t * d + layers * per_block + 2 * d + d * V + V


# --- batches, loss and metrics ------------------------------------------------------------------
@pytest.mark.parametrize(
    "family, static",
    [
        (RNNLM(), RNNLMStatic("gru", 4, 4, seq_len=7, batch_size=64)),
        (TransformerLM(), TransformerLMStatic(1, 8, 2, seq_len=7, batch_size=64)),
    ],
)
def test_batches_are_shifted_contiguous_windows_inside_the_split(family, static):
    task = _task(family, static)
    lo = {"train": 0, "inner_valid": 100, "outer_valid": 140, "test": 180}
    hi = {"train": 100, "inner_valid": 140, "outer_valid": 180, "test": 230}
    batches = jax.jit(lambda k: {s: task.batch(k, s) for s in lo})(jax.random.key(7))
    for split in lo:
        x, y = np.asarray(batches[split]["x"]), np.asarray(batches[split]["y"])
        assert x.shape == y.shape == (64, 7) and x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)  # contiguous in the stream
        np.testing.assert_array_equal(y, x + 1)  # target = input shifted by one
        assert x.min() >= lo[split] and y.max() < hi[split]  # inside this split


def test_windows_cover_every_start_and_fit_exactly():
    stream = jnp.arange(12, dtype=jnp.uint8)
    keys = jax.random.split(jax.random.key(0), 200)
    starts = np.asarray(jax.jit(jax.vmap(lambda k: char_windows(k, stream, 4, 9)["x"][:, 0]))(keys))
    assert set(starts.ravel()) == {0, 1, 2}  # N - T - 1 = 2 is the last valid start
    whole = jax.jit(lambda k: char_windows(k, stream, 3, 11))(jax.random.key(1))  # T + 1 = N: the stream
    np.testing.assert_array_equal(whole["x"], np.tile(np.arange(11), (3, 1)))


def test_next_char_metrics_match_numpy():
    rng = np.random.default_rng(0)
    logits = (3.0 * rng.standard_normal((3, 5, V))).astype(np.float32)  # (B, T, V)
    targets = rng.integers(0, V, (3, 5)).astype(np.int32)  # (B, T)
    m = jax.jit(next_char_metrics)(logits, targets)
    lg = logits.astype(np.float64)
    logp = lg - lg.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    t = np.asarray(targets)
    np.testing.assert_allclose(m["loss"], -np.take_along_axis(logp, t[..., None], -1).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], (lg.argmax(-1) == t).mean(), rtol=1e-6)


@pytest.mark.parametrize(
    "family, static",
    [
        (RNNLM(), RNNLMStatic("lstm", 4, 8, seq_len=5, batch_size=4)),
        (TransformerLM(), TransformerLMStatic(1, 8, 2, seq_len=5, batch_size=4)),
    ],
)
def test_loss_at_small_init_is_log_vocab(family, static):
    task = _task(family, static, init_scale=1e-3)

    @jax.jit
    def run(task, key):
        params, batch = task.init(key), task.batch(key, "train")
        return task.metrics(params, key, batch), task.loss(params, key, batch)

    m, loss = run(task, jax.random.key(0))
    assert abs(float(m["loss"]) - math.log(V)) < 1e-4
    assert float(loss) == float(m["loss"])


# --- sampling and validation --------------------------------------------------------------------
@pytest.mark.parametrize("family", [RNNLM(), TransformerLM()])
def test_sampling_is_deterministic_and_in_space(family):
    scales = []
    for s in range(20):
        a, b = family.sample(jax.random.key(s)), family.sample(jax.random.key(s))
        assert a.static == b.static and float(a.dynamic["init_scale"]) == float(b.dynamic["init_scale"])
        scales.append(float(a.dynamic["init_scale"]))
        assert a.static.batch_size in family.batch_sizes and a.static.seq_len in family.seq_lens
    assert min(scales) >= 0.5 and max(scales) <= 2.0 and max(scales) / min(scales) > 1.5


def test_token_cap_limits_batch_times_window():
    rng = np.random.default_rng(0)
    pairs = {sample_window(rng, (16, 32, 64), (8, 16, 32, 64), 1024) for _ in range(400)}
    assert pairs == {(16, 8), (16, 16), (16, 32), (16, 64), (32, 8), (32, 16), (32, 32), (64, 8), (64, 16)}
    small, large = TransformerLM(max_tokens=4096).static_extremes()
    assert (small.seq_len, small.batch_size, large.seq_len, large.batch_size) == (16, 8, 64, 64)
    for s in range(10):
        st = RNNLM(seq_lens=(16, 32), max_tokens=256).sample(jax.random.key(s)).static
        assert st.seq_len * st.batch_size <= 256


def test_out_of_range_values_raise_config_errors_naming_the_field():
    with pytest.raises(ConfigError, match=r"RNNLMStatic\.cell='rnn'.*'lstm', 'gru'"):
        RNNLMStatic("rnn", 8, 16, 16, 8)
    with pytest.raises(ConfigError, match=r"RNNLMStatic\.hidden=0 .*\[1, 1024\]"):
        RNNLMStatic("gru", 8, 0, 16, 8)
    with pytest.raises(ConfigError, match=r"RNNLM\.hiddens is empty"):
        RNNLM(hiddens=())
    with pytest.raises(ConfigError, match=r"RNNLM\.seq_lens=5000 .*\[1, 1024\]"):
        RNNLM(seq_lens=(16, 5000))
    with pytest.raises(ConfigError, match=r"RNNLM\.max_tokens=256 is too small.* at least 512"):
        RNNLM(max_tokens=256)
    with pytest.raises(ConfigError, match=r"RNNLM\.init_scale"):
        RNNLM(init_scale=(2.0, 1.0))
    with pytest.raises(ConfigError, match=r"TransformerLMStatic\.num_heads=3 .*divide width=16"):
        TransformerLMStatic(1, 16, 3, 16, 8)
    with pytest.raises(ConfigError, match=r"TransformerLM\.num_heads contains 4.*width 18"):
        TransformerLM(widths=(16, 18), num_heads=(1, 4))
    with pytest.raises(ConfigError, match=r"TransformerLMStatic\.num_layers=0 .*\[1, 16\]"):
        TransformerLMStatic(0, 16, 1, 16, 8)
    with pytest.raises(ConfigError, match=r"dataset='shakespeare'"):
        dataclasses.replace(RNNLMStatic("gru", 8, 16, 16, 8), dataset="shakespeare")


# --- the real KJV stream ------------------------------------------------------------------------
def _require_kjv():
    from lopt.data import DatasetMissingError, load

    try:
        return load("kjv")
    except DatasetMissingError as e:
        if os.environ.get("LOPT_REQUIRE_DATA"):
            pytest.fail(f"LOPT_REQUIRE_DATA is set but {e}")
        pytest.skip(str(e))


def test_kjv_vocab_and_batches():
    ds = _require_kjv()
    assert len(ds.vocab) == V
    fam = RNNLM()
    static = RNNLMStatic("gru", 4, 4, seq_len=16, batch_size=32)
    task = fam.task(TaskConfig(static, {"init_scale": jnp.float32(1e-3)}))
    b = task.batch(jax.random.key(0), "test")
    x, y = np.asarray(b["x"]), np.asarray(b["y"])
    assert x.min() >= 0 and max(x.max(), y.max()) < V
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    stream = ds.splits["test"]["x"]
    text = "".join(ds.vocab[i] for i in x[0])
    assert text in "".join(ds.vocab[i] for i in stream)  # a real piece of the test split
    loss = jax.jit(lambda t, k: t.loss(t.init(k), k, b))(task, jax.random.key(1))
    assert abs(float(loss) - math.log(V)) < 1e-4
