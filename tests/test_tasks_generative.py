"""The generative task families: VAE (negative ELBO) and RealNVP flows (negative log-likelihood).

Numbers are checked against float64 numpy hand computations, closed forms and
`jnp.linalg.slogdet(jax.jacobian(...))`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.tasks import flow as flow_mod
from lopt.tasks import vae as vae_mod
from lopt.tasks.base import Task, sample_group, task_axes
from lopt.tasks.flow import Flow, FlowStatic
from lopt.tasks.vae import VAE, VAEStatic
from lopt.validate import ConfigError


def _bare_task(family, static, init_scale=1.0):
    """A task without data: enough for init / loss on hand-made batches."""
    return Task({"init_scale": jnp.float32(init_scale)}, None, family, static)


_init = jax.jit(lambda task, key: task.init(key))


def _rows(a):
    """The rows of a 2-D array as a set of tuples of Python floats."""
    return {tuple(r) for r in np.asarray(a, np.float64).tolist()}


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --- VAE ------------------------------------------------------------------------------------------
def test_gaussian_kl_matches_closed_form_float64():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(4, 5))
    logvar = rng.normal(size=(4, 5))
    # KL(N(μ, Σ) ‖ N(0, I)) = ½ (tr Σ + μᵀμ - k - log det Σ), Σ = diag(exp(logvar)).
    expected = 0.5 * (np.exp(logvar).sum(1) + (mean**2).sum(1) - 5 - logvar.sum(1))
    got = vae_mod.gaussian_kl(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    # Zero exactly at the prior.
    zeros = jnp.zeros((2, 3), jnp.float32)
    np.testing.assert_array_equal(np.asarray(vae_mod.gaussian_kl(zeros, zeros)), np.zeros(2))


def test_bernoulli_nll_matches_float64_cross_entropy():
    rng = np.random.default_rng(1)
    logits, x = rng.normal(size=(3, 7)) * 4, rng.uniform(size=(3, 7))
    p = 1 / (1 + np.exp(-logits))
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1)
    got = vae_mod.bernoulli_nll(jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


@pytest.mark.parametrize("activation,depth", [("tanh", 2)])
def test_negative_elbo_matches_hand_computation(activation, depth):
    family = VAE()
    static = VAEStatic("digits", 8, hidden=5, depth=depth, latent=3, activation=activation, batch_size=4)
    task = _bare_task(family, static, init_scale=1.5)
    params = _init(task, jax.random.key(1))
    x = jax.random.uniform(jax.random.key(2), (4, 64), jnp.float32)
    key = jax.random.key(3)

    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0)}[activation]

    def mlp(layers, h):
        for i, p in enumerate(layers):
            h = h @ p["w"] + p["b"]
            h = act(h) if i < len(layers) - 1 else h
        return h

    p64, x64 = _np(params), np.asarray(x, np.float64)
    enc = mlp(p64["encoder"], x64)
    mean, logvar = enc[:, :3], enc[:, 3:]
    eps = np.asarray(jax.random.normal(key, (4, 3), jnp.float32), np.float64)  # the documented draw
    z = mean + np.exp(0.5 * logvar) * eps
    logits = mlp(p64["decoder"], z)
    recon = (np.log1p(np.exp(logits)) - x64 * logits).sum(1)
    kl = 0.5 * (mean**2 + np.exp(logvar) - logvar - 1).sum(1)

    metrics = jax.jit(task.metrics)(params, key, {"x": x})
    np.testing.assert_allclose(float(metrics["loss"]), np.mean(recon + kl), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["reconstruction"]), np.mean(recon), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), np.mean(kl), rtol=1e-5)
    # The key drives the sample: same key, same loss; another key, another loss.
    loss = jax.jit(task.loss)
    assert float(loss(params, key, {"x": x})) == float(metrics["loss"])
    assert float(loss(params, jax.random.key(4), {"x": x})) != float(metrics["loss"])


def _vae_count(s):
    d, h, l = s.dim, s.hidden, s.latent
    hidden_stack = (s.depth - 1) * (h * h + h)
    return (d * h + h) + hidden_stack + (h * 2 * l + 2 * l) + (l * h + h) + hidden_stack + (h * d + d)


def test_vae_param_counts_by_formula():
    family = VAE()
    small, big = family.static_extremes()
    assert small == VAEStatic("mnist", 14, 32, 1, 2, "relu", 32)
    assert big == VAEStatic("mnist", 28, 128, 2, 32, "relu", 32)
    by_hand = (196 * 32 + 32) + (32 * 4 + 4) + (2 * 32 + 32) + (32 * 196 + 196)  # enc, enc out, dec, dec out
    assert _bare_task(family, small).num_params() == _vae_count(small) == by_hand
    assert _bare_task(family, big).num_params() == _vae_count(big) == 247_120
    for i in range(5):
        s = family.sample_static(jax.random.key(i))
        assert _vae_count(small) <= _bare_task(family, s).num_params() == _vae_count(s) <= _vae_count(big)
        assert 2 <= s.latent <= 32 and s.image_size in (14, 28)


def test_vae_digits_batches_are_grey_levels_of_data_rows():
    family = VAE(datasets=("digits",))
    static = VAEStatic("digits", 8, 16, 1, 4, "relu", 32)
    task = family.task(family.sample(jax.random.key(0))._replace(static=static))
    batch = jax.jit(lambda t, k: t.batch(k, "train"))(task, jax.random.key(5))
    x = np.asarray(batch["x"])
    assert x.shape == (32, 64) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(np.round(x * 255), x * 255, atol=1e-4)  # grey levels / 255
    assert _rows(np.round(x * 255)) <= _rows(np.asarray(task.data["train"]["x"]).reshape(-1, 64))
    again = task.batch(jax.random.key(5), "train")
    np.testing.assert_array_equal(np.asarray(again["x"]), x)


def test_vae_config_errors_name_the_field_and_range():
    with pytest.raises(ConfigError, match=r"VAEStatic.image_size=10 .*\[8, 14, 28\]"):
        VAEStatic("mnist", 10, 32, 1, 2, "relu", 32)
    with pytest.raises(ConfigError, match=r"VAEStatic.image_size=14 .*digits.*8"):
        VAEStatic("digits", 14, 32, 1, 2, "relu", 32)
    with pytest.raises(ConfigError, match=r"VAEStatic.latent=0 .*\[1, 256\]"):
        VAEStatic("mnist", 14, 32, 1, 0, "relu", 32)
    with pytest.raises(ConfigError, match=r"VAE.latent=\(0, 4\).*1 <= a <= b <= 256"):
        VAE(latent=(0, 4))
    with pytest.raises(ConfigError, match=r"VAE.datasets contains 'cifar'"):
        VAE(datasets=("cifar",))
    with pytest.raises(ConfigError, match=r"VAE.depths=7 .*\[1, 4\]"):
        VAE(depths=(1, 7))


# --- flow -----------------------------------------------------------------------------------------
_log_prob = jax.jit(flow_mod.log_prob, static_argnums=2)


def _random_flow(static, key, init_scale=1.0, out_std=0.3):
    """Flow params with random (not the init's zero) coupling output layers."""
    key_init, key_out = jax.random.split(key)
    params = _init(_bare_task(Flow(), static, init_scale), key_init)
    for p, k in zip(params, jax.random.split(key_out, len(params))):
        k_w, k_b = jax.random.split(k)
        last = p["net"][-1]
        fan_in = last["w"].shape[0]
        last["w"] = jax.random.normal(k_w, last["w"].shape) * (out_std / math.sqrt(fan_in))
        last["b"] = jax.random.normal(k_b, last["b"].shape) * out_std
    return params


@pytest.mark.parametrize("static", [FlowStatic("eight_gaussians", 4, 8, 8), FlowStatic("digits", 2, 8, 8)])
def test_flow_starts_as_identity_standard_normal_nll(static):
    task = _bare_task(Flow(), static, init_scale=2.0)
    params = _init(task, jax.random.key(0))
    x = np.random.default_rng(0).uniform(-2, 2, size=(6, static.dim))
    nll = (0.5 * (x**2).sum(1) + 0.5 * static.dim * math.log(2 * math.pi)).mean()
    per = static.dim if static.dataset == "digits" else 1
    loss = jax.jit(task.loss)(params, jax.random.key(1), {"x": jnp.asarray(x, jnp.float32)})
    np.testing.assert_allclose(float(loss), nll / per, rtol=1e-6)


def _flow_count(s):
    dc = dt = s.dim // 2
    h = s.hidden
    return s.layers * ((dc * h + h) + (h * h + h) + (h * 2 * dt + 2 * dt) + dt)


def test_flow_param_counts_by_formula():
    family = Flow()
    small, big = family.static_extremes()
    assert small == FlowStatic("moons", 2, 16, 32) and big == FlowStatic("digits", 8, 128, 32)
    assert _bare_task(family, small).num_params() == _flow_count(small) == 2 * (16 * 16 + 5 * 16 + 3)
    assert _bare_task(family, big).num_params() == _flow_count(big) == 8 * (128 * 128 + 98 * 128 + 96)


def test_flow_partitions_alternate_checkerboard():
    parts = flow_mod.partitions(FlowStatic("digits", 3, 8, 8))
    (c0, t0), (c1, t1), (c2, t2) = parts
    rows, cols = np.divmod(c0, 8)
    assert len(c0) == len(t0) == 32 and np.all((rows + cols) % 2 == 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([c0, t0])), np.arange(64))
    np.testing.assert_array_equal(c1, t0)
    np.testing.assert_array_equal(t1, c0)
    np.testing.assert_array_equal(c2, c0)
    assert [tuple(map(list, p)) for p in flow_mod.partitions(FlowStatic("moons", 2, 8, 8))] == [
        ([0], [1]),
        ([1], [0]),
    ]


@pytest.mark.parametrize("static", [FlowStatic("moons", 4, 8, 8), FlowStatic("digits", 3, 8, 8)])
def test_flow_logdet_matches_slogdet_of_jacobian_float64(static):
    params = _random_flow(static, jax.random.key(0), init_scale=2.0)
    x = np.random.default_rng(0).uniform(-1.5, 1.5, size=(3, static.dim))

    @jax.jit
    def logdet_and_jacobian(p, x):
        _, logdet = flow_mod.forward(p, x, static)  # (3,)
        jac = jax.vmap(jax.jacfwd(lambda v: flow_mod.forward(p, v[None, :], static)[0][0]))(x)  # (3, D, D)
        return logdet, jac

    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        logdet, jac = logdet_and_jacobian(p64, jnp.asarray(x, jnp.float64))
        sign, ref = jnp.linalg.slogdet(jac)
        np.testing.assert_array_equal(np.asarray(sign), 1.0)  # coupling layers keep orientation
        np.testing.assert_allclose(np.asarray(logdet), np.asarray(ref), rtol=1e-10, atol=1e-10)
        assert np.all(np.abs(np.asarray(ref)) > 0.1)  # a non-trivial volume change


@pytest.mark.parametrize("static", [FlowStatic("circles", 4, 16, 8), FlowStatic("digits", 2, 16, 8)])
def test_flow_is_invertible(static):
    params = _random_flow(static, jax.random.key(1), init_scale=2.0)
    x = jax.random.normal(jax.random.key(2), (16, static.dim), jnp.float32)

    @jax.jit
    def round_trips(p, x):
        z, _ = flow_mod.forward(p, x, static)
        samples = flow_mod.sample(p, jax.random.key(3), 16, static)  # f⁻¹(ε)
        return z, flow_mod.inverse(p, z, static), flow_mod.forward(p, samples, static)[0]

    z, x_back, eps_back = round_trips(params, x)
    assert float(jnp.max(jnp.abs(z - x))) > 0.1  # not the identity
    np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=2e-5)
    eps = jax.random.normal(jax.random.key(3), (16, static.dim), jnp.float32)
    np.testing.assert_allclose(np.asarray(eps_back), np.asarray(eps), atol=2e-5)


def test_flow_density_integrates_to_one_on_a_grid():
    """A Riemann sum of exp(log p) over a box, for a flow that is not the identity."""
    static = FlowStatic("moons", 4, 16, 8)
    params = _random_flow(static, jax.random.key(4))
    n, half = 600, 12.0
    ticks = (np.arange(n) + 0.5) / n * 2 * half - half  # midpoints of the cells
    grid = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2).astype(np.float32)  # (n², 2)
    density = np.exp(np.asarray(_log_prob(params, jnp.asarray(grid), static), np.float64))
    total = density.sum() * (2 * half / n) ** 2
    np.testing.assert_allclose(total, 1.0, atol=5e-3)


def test_flow_loss_of_a_known_affine_flow():
    """Zero last-layer weights make every layer a constant affine map: z_t = x_t e^{a tanh b_s} + b_m."""
    static = FlowStatic("moons", 2, 8, 8)
    task = _bare_task(Flow(), static)
    params = _init(task, jax.random.key(0))
    for p, (bs, bm, a) in zip(params, [(0.3, -0.2, 1.5), (-0.7, 0.4, 0.5)]):
        p["net"][-1]["w"] = jnp.zeros_like(p["net"][-1]["w"])
        p["net"][-1]["b"] = jnp.array([bs, bm], jnp.float32)
        p["scale"] = jnp.array([a], jnp.float32)
    x = np.random.default_rng(0).normal(size=(5, 2))
    s1, s0 = 1.5 * np.tanh(0.3), 0.5 * np.tanh(-0.7)  # layer 0 moves x1, layer 1 moves x0
    z = np.stack([x[:, 0] * np.exp(s0) + 0.4, x[:, 1] * np.exp(s1) - 0.2], 1)
    nll = 0.5 * (z**2).sum(1) + math.log(2 * math.pi) - (s0 + s1)
    loss = jax.jit(task.loss)(params, jax.random.key(9), {"x": jnp.asarray(x, jnp.float32)})
    np.testing.assert_allclose(float(loss), nll.mean(), rtol=1e-5)


def test_flow_digits_batches_dequantize_grey_levels_and_loss_is_per_dim():
    family = Flow(datasets=("digits",))
    static = FlowStatic("digits", 2, 8, 256)
    task = family.task(family.sample(jax.random.key(0))._replace(static=static))
    x = np.asarray(jax.jit(lambda t, k: t.batch(k, "train"))(task, jax.random.key(6))["x"])
    assert x.shape == (256, 64) and x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    levels, frac = np.divmod(x.astype(np.float64) * 17, 1.0)  # y = (k + u) / 17
    data_levels = np.round(np.asarray(task.data["train"]["x"], np.float64).reshape(-1, 64) * 16 / 255)
    assert set(np.unique(data_levels)) <= set(range(17))
    assert _rows(levels) <= _rows(data_levels)  # every row is a data row
    assert abs(frac.mean() - 0.5) < 0.02 and abs(frac.var() - 1 / 12) < 0.01  # u ~ U[0, 1)
    params = _init(task, jax.random.key(1))
    nll = -np.mean(np.asarray(_log_prob(params, jnp.asarray(x), static), np.float64)) / 64
    loss = task.loss(params, jax.random.key(0), {"x": jnp.asarray(x)})
    np.testing.assert_allclose(float(loss), nll, rtol=1e-5)


def test_flow_density_batches_are_data_rows():
    family = Flow(datasets=("checkerboard",))
    static = FlowStatic("checkerboard", 2, 8, 64)
    task = family.task(family.sample(jax.random.key(0))._replace(static=static))
    x = np.asarray(task.batch(jax.random.key(7), "inner_valid")["x"])
    data = np.asarray(task.data["inner_valid"]["x"])
    assert x.shape == (64, 2) and x.dtype == np.float32
    assert _rows(x) <= _rows(data)


def test_flow_config_errors_name_the_field_and_range():
    with pytest.raises(ConfigError, match=r"FlowStatic.dataset='mnist' .*moons"):
        FlowStatic("mnist", 2, 8, 8)
    with pytest.raises(ConfigError, match=r"FlowStatic.layers=0 .*\[1, 32\]"):
        FlowStatic("moons", 0, 8, 8)
    with pytest.raises(ConfigError, match=r"Flow.hiddens=0 .*\[1, 4096\]"):
        Flow(hiddens=(0, 16))
    with pytest.raises(ConfigError, match=r"Flow.layers is empty"):
        Flow(layers=())
    with pytest.raises(ConfigError, match=r"Flow.init_scale=\(2.0, 1.0\)"):
        Flow(init_scale=(2.0, 1.0))


# --- both: vmapped groups train -------------------------------------------------------------------
@pytest.mark.parametrize(
    "family,static",
    [
        (VAE(datasets=("digits",)), VAEStatic("digits", 8, 32, 1, 4, "relu", 32)),
        (Flow(datasets=("moons",)), FlowStatic("moons", 2, 16, 64)),
    ],
)
def test_vmapped_group_loss_falls_under_adam(family, static):
    tasks = sample_group(family, jax.random.key(0), static, 2)
    scales = np.asarray(tasks.dynamic["init_scale"])
    assert scales.shape == (2,) and np.all((scales >= 0.5) & (scales <= 2.0)) and scales[0] != scales[1]
    opt = optax.adam(3e-3)

    def train(task, key):
        params = task.init(key)

        def step(carry, k):
            p, s = carry
            k_batch, k_loss = jax.random.split(k)
            loss, g = jax.value_and_grad(task.loss)(p, k_loss, task.batch(k_batch, "train"))
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        return jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 200))[1]

    losses = jax.jit(jax.vmap(train, in_axes=(task_axes(tasks), None)))(tasks, jax.random.key(1))
    first, last = np.asarray(losses[:, :20]).mean(1), np.asarray(losses[:, -20:]).mean(1)
    assert np.all(np.isfinite(losses)) and np.all(last < first - 0.2 * np.abs(first) - 0.1), (first, last)
