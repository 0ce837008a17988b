"""Variational autoencoders with MLP encoder and decoder on small image datasets.

A flattened image x ∈ [0, 1]^D (grey levels / 255) is encoded to a diagonal Gaussian posterior
and decoded to Bernoulli logits:

    q(z|x) = N(μ(x), diag σ²(x)),   p(z) = N(0, I),   p(x|z) = Π_i Bernoulli(x_i; sigmoid(l_i(z))).

The loss is the negative ELBO in nats per example, averaged over the batch, with one
reparameterized sample z = μ + σ ⊙ ε, ε ~ N(0, I) drawn from the ``key`` given to `loss`
(same key, same loss):

    -ELBO(x) = Σ_i [softplus(l_i) - x_i l_i]  +  ½ Σ_j (μ_j² + σ_j² - log σ_j² - 1).

The first term is the binary cross-entropy with logits against the grey levels (the usual
practice for MNIST VAEs; for non-binary x it is a cross-entropy, not a normalized likelihood);
the second is KL(q(z|x) ‖ p(z)) in closed form. The encoder outputs (μ, log σ²).

References: Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; the MLP-VAE task family
of TaskSet (Metz et al. 2020, ``task_set/tasks/mlp_vae.py``) and learned_optimization's
``tasks/parametric/image_mlp_vae.py``.
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

DATASETS = ("mnist", "fashion_mnist", "digits")
IMAGE_SIZES = (8, 14, 28)
VAE_ACTIVATIONS = ("relu", "tanh", "elu", "swish")


@dataclasses.dataclass(frozen=True)
class VAEStatic:
    """Structure of one VAE task."""

    dataset: str  # one of DATASETS
    image_size: int  # side of the (resized) square image; digits is always 8
    hidden: int  # width of every hidden layer of the encoder and of the decoder
    depth: int  # number of hidden layers in the encoder and in the decoder
    latent: int  # latent dimension
    activation: str  # hidden activation, one of VAE_ACTIVATIONS
    batch_size: int  # examples per batch

    def __post_init__(self):
        check_choice("VAEStatic.dataset", self.dataset, DATASETS)
        check_choice("VAEStatic.image_size", self.image_size, IMAGE_SIZES)
        if self.dataset == "digits" and self.image_size != 8:
            raise ConfigError(
                f"VAEStatic.image_size={self.image_size!r} is not valid for digits: it must be 8."
            )
        check_range("VAEStatic.hidden", self.hidden, 1, 4096)
        check_range("VAEStatic.depth", self.depth, 1, 4)
        check_range("VAEStatic.latent", self.latent, 1, 256)
        check_choice("VAEStatic.activation", self.activation, VAE_ACTIVATIONS)
        check_range("VAEStatic.batch_size", self.batch_size, 1, 8192)

    @property
    def dim(self) -> int:
        """Number of pixels D."""
        return self.image_size**2


@dataclasses.dataclass(frozen=True)
class VAE(TaskFamily):
    """MLP VAEs on images: dataset, image size, width, depth, latent size, activation and batch size."""

    name = "vae"

    datasets: tuple[str, ...] = ("mnist",)  # choices of dataset (digits is always 8x8)
    image_sizes: tuple[int, ...] = (14, 28)  # choices of image side for mnist / fashion_mnist
    hiddens: tuple[int, ...] = (32, 64, 128)  # choices of hidden width
    depths: tuple[int, ...] = (1, 2)  # choices of hidden layers per network
    latent: tuple[int, int] = (2, 32)  # latent dimension ~ log-uniform integer in [a, b]
    activations: tuple[str, ...] = ("relu", "tanh", "elu")  # choices of hidden activation
    batch_sizes: tuple[int, ...] = (32, 64, 128)  # choices of batch size
    init_scale: tuple[float, float] = (0.5, 2.0)  # init-scale multiplier ~ log-uniform in [a, b]

    def __post_init__(self):
        check_subset("VAE.datasets", self.datasets, DATASETS)
        check_subset("VAE.image_sizes", self.image_sizes, IMAGE_SIZES)
        for name, values, hi in (
            ("hiddens", self.hiddens, 4096),
            ("depths", self.depths, 4),
            ("batch_sizes", self.batch_sizes, 8192),
        ):
            if not values:
                raise ConfigError(f"VAE.{name} is empty: give at least one value in [1, {hi}].")
            for v in values:
                check_range(f"VAE.{name}", v, 1, hi)
        check_interval("VAE.latent", self.latent, 1, 256)
        check_subset("VAE.activations", self.activations, VAE_ACTIVATIONS)
        check_interval("VAE.init_scale", self.init_scale, 1e-3, 1e3)

    # --- sampling ------------------------------------------------------------------------------
    def sample_static(self, key):
        rng = host_rng(key)
        dataset = str(rng.choice(self.datasets))
        lo, hi = self.latent
        latent = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        return VAEStatic(
            dataset=dataset,
            image_size=8 if dataset == "digits" else int(rng.choice(self.image_sizes)),
            hidden=int(rng.choice(self.hiddens)),
            depth=int(rng.choice(self.depths)),
            latent=min(max(latent, lo), hi),
            activation=str(rng.choice(self.activations)),
            batch_size=int(rng.choice(self.batch_sizes)),
        )

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        non_digits = [d for d in self.datasets if d != "digits"]
        small_data = "digits" if "digits" in self.datasets else non_digits[0]
        small_size = 8 if small_data == "digits" else min(self.image_sizes)
        big_data = non_digits[0] if non_digits else "digits"
        big_size = max(self.image_sizes) if non_digits else 8
        rest = dict(activation=self.activations[0], batch_size=min(self.batch_sizes))
        small = VAEStatic(small_data, small_size, min(self.hiddens), min(self.depths), self.latent[0], **rest)
        big = VAEStatic(big_data, big_size, max(self.hiddens), max(self.depths), self.latent[1], **rest)
        return small, big

    def describe(self, static):
        s = static
        widths = "-".join([str(s.hidden)] * s.depth)
        return (
            f"{s.dataset} {s.image_size}x{s.image_size}, enc {widths}, z{s.latent}, "
            f"dec {widths} {s.activation}, bs{s.batch_size}"
        )

    # --- building ------------------------------------------------------------------------------
    def load_data(self, static):
        size = None if static.dataset == "digits" else static.image_size
        return lopt.data.device_arrays(static.dataset, image_size=size)

    def init(self, key, task: Task):
        s = task.static
        scale = task.dynamic["init_scale"]
        key_enc, key_dec = jax.random.split(key)
        hidden = [s.hidden] * s.depth
        return {
            "encoder": _nn.mlp_init(key_enc, (s.dim, *hidden, 2 * s.latent), scale),
            "decoder": _nn.mlp_init(key_dec, (s.latent, *hidden, s.dim), scale),
        }

    def batch(self, key, split, task: Task):
        x = _nn.sample_rows(key, {"x": task.data[split]["x"]}, task.static.batch_size)["x"]  # (B, H, W)
        x = x.reshape(x.shape[0], -1).astype(jnp.float32) / 255.0  # (B, D) in [0, 1]
        return {"x": x}

    def loss(self, params, key, batch, task: Task):
        return self.metrics(params, key, batch, task)["loss"]

    def metrics(self, params, key, batch, task: Task):
        recon, kl = neg_elbo_terms(params, key, batch["x"], task.static.activation)  # (B,), (B,)
        return {"loss": jnp.mean(recon + kl), "reconstruction": jnp.mean(recon), "kl": jnp.mean(kl)}


# --- the model ------------------------------------------------------------------------------------
def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row, ½ Σ_j (μ_j² + σ_j² - log σ_j² - 1); (B, L) -> (B,)."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - logvar - 1.0, axis=-1)


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Binary cross-entropy with logits per row: Σ_i softplus(l_i) - x_i l_i; (B, D) -> (B,)."""
    return jnp.sum(jax.nn.softplus(logits) - x * logits, axis=-1)


def encode(params: dict, x: jax.Array, activation: str) -> tuple[jax.Array, jax.Array]:
    """Posterior mean and log-variance, each (B, L), of images x (B, D)."""
    h = _nn.mlp_apply(params["encoder"], x, activation)  # (B, 2L)
    mean, logvar = jnp.split(h, 2, axis=-1)  # (B, L), (B, L)
    return mean, logvar


def decode(params: dict, z: jax.Array, activation: str) -> jax.Array:
    """Bernoulli logits (B, D) of latents z (B, L)."""
    return _nn.mlp_apply(params["decoder"], z, activation)


def neg_elbo_terms(
    params: dict, key: jax.Array, x: jax.Array, activation: str
) -> tuple[jax.Array, jax.Array]:
    """Per-example reconstruction NLL and KL (nats), each (B,), with one reparameterized sample.

    z = μ + exp(½ log σ²) ⊙ ε, ε = ``jax.random.normal(key, (B, L))``.
    """
    mean, logvar = encode(params, x, activation)  # (B, L)
    eps = jax.random.normal(key, mean.shape, mean.dtype)  # (B, L)
    z = mean + jnp.exp(0.5 * logvar) * eps  # (B, L)
    logits = decode(params, z, activation)  # (B, D)
    return bernoulli_nll(logits, x), gaussian_kl(mean, logvar)
