"""MLP autoencoders on small images (digits, MNIST, Fashion-MNIST).

code = E(x), x̂ = sigmoid(D(code)), with x the flattened image in [0, 1] (D pixels), E an MLP
D → h_1 → ... → h_k → z (sampled activation between layers, a linear bottleneck of width z) and
D its mirror z → h_k → ... → h_1 → D (activation between layers, sigmoid on the output). The loss
is the mean squared reconstruction error, mean over pixels and batch:

    L = 1/(B D) Σ_b Σ_i (x_bi - x̂_bi)²,   in [0, 1].

Weights are LeCun-normal times a dynamic init scale s ~ LogUniform(0.5, 2), biases zero.

Sampled: dataset, image side (8 / 14 / 28 for mnist and fashion_mnist; digits is 8x8), encoder
depth and width (all encoder layers alike), bottleneck width, activation and batch size.
Configurations above ``max_params`` parameters or ``max_macs`` forward multiply-adds per batch
are resampled.

References: the MLP-autoencoder tasks of TaskSet (Metz et al. 2020, "Using a thousand
optimization tasks to learn hyperparameter search strategies") and of learned_optimization
(``tasks/fixed/image_mlp_ae.py``: sigmoid outputs, mean squared error over pixels).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp

from lopt.tasks import _images, _nn
from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import check_choice, check_interval, check_range, check_subset

DATASETS = _images.IMAGE_DATASETS
ACTIVATIONS = ("relu", "tanh", "gelu", "elu", "swish")


@dataclasses.dataclass(frozen=True)
class MLPAutoencoderStatic:
    """Structure of one MLP autoencoder."""

    dataset: str  # one of DATASETS
    image_size: int  # side of the (square) image
    hidden: tuple[int, ...]  # encoder hidden widths (the decoder mirrors them)
    bottleneck: int  # width of the code
    activation: str  # one of ACTIVATIONS
    batch_size: int  # examples per batch

    def __post_init__(self):
        _images.check_static_data("MLPAutoencoderStatic", self.dataset, self.image_size, DATASETS)
        check_range("MLPAutoencoderStatic.depth", len(self.hidden), 0, 8)
        for w in self.hidden:
            check_range("MLPAutoencoderStatic.hidden", w, 1, 4096)
        check_range("MLPAutoencoderStatic.bottleneck", self.bottleneck, 1, 4096)
        check_choice("MLPAutoencoderStatic.activation", self.activation, ACTIVATIONS)
        check_range("MLPAutoencoderStatic.batch_size", self.batch_size, 1, 4096)

    @property
    def encoder_sizes(self) -> tuple[int, ...]:
        """(D, *hidden, bottleneck); the decoder's sizes are these reversed."""
        return (self.image_size**2, *self.hidden, self.bottleneck)

    def num_params(self) -> int:
        """Encoder Σ (n_l + 1) n_{l+1} plus the mirrored decoder's Σ n_l (n_{l+1} + 1)."""
        s = self.encoder_sizes
        return sum((a + 1) * b + a * (b + 1) for a, b in zip(s[:-1], s[1:]))

    def macs(self) -> int:
        """Forward multiply-adds of one batch: B · 2 Σ_l n_l n_{l+1} (encoder and decoder)."""
        s = self.encoder_sizes
        return self.batch_size * 2 * sum(a * b for a, b in zip(s[:-1], s[1:]))


@dataclasses.dataclass(frozen=True)
class MLPAutoencoder(TaskFamily):
    """MLP autoencoders (sigmoid output, mean squared error) on digits / mnist / fashion_mnist."""

    name = "mlp_autoencoder"

    datasets: tuple[str, ...] = DATASETS  # datasets to sample from (a subset of DATASETS)
    image_sizes: tuple[int, ...] = (8, 14, 28)  # sides for mnist / fashion_mnist (digits: 8)
    depths: tuple[int, ...] = (1, 2)  # encoder hidden layers (the decoder has as many)
    widths: tuple[int, ...] = (32, 64, 128)  # encoder / decoder hidden width
    bottlenecks: tuple[int, ...] = (2, 4, 8, 16, 32)  # code width
    activations: tuple[str, ...] = ACTIVATIONS  # hidden activations
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)  # examples per batch
    init_scale: tuple[float, float] = (0.5, 2.0)  # init-scale multiplier, log-uniform in [a, b]
    max_params: int = 200_000  # configs with more parameters are resampled
    max_macs: int = 16_000_000  # configs with more forward multiply-adds per batch are resampled

    def __post_init__(self):
        _images.check_datasets("MLPAutoencoder.datasets", self.datasets, DATASETS)
        _images.check_image_sizes("MLPAutoencoder.image_sizes", self.image_sizes)
        _images.check_values("MLPAutoencoder.depths", self.depths, 0, 8)
        _images.check_values("MLPAutoencoder.widths", self.widths, 1, 4096)
        _images.check_values("MLPAutoencoder.bottlenecks", self.bottlenecks, 1, 4096)
        check_subset("MLPAutoencoder.activations", self.activations, ACTIVATIONS)
        _images.check_values("MLPAutoencoder.batch_sizes", self.batch_sizes, 1, 4096)
        check_interval("MLPAutoencoder.init_scale", self.init_scale, 1e-3, 1e3)
        _images.within_budget("MLPAutoencoder", self._structures(), self.max_params, self.max_macs)

    def _structures(self):
        """Every structure of the space (activation fixed: it changes neither size nor cost)."""
        for ds in self.datasets:
            for size, depth, width, z, bs in itertools.product(
                _images.size_choices(ds, self.image_sizes),
                self.depths,
                self.widths,
                self.bottlenecks,
                self.batch_sizes,
            ):
                yield MLPAutoencoderStatic(ds, size, (width,) * depth, z, self.activations[0], bs)

    def sample_static(self, key):
        rng = host_rng(key)

        def draw():
            dataset = _images.pick(rng, self.datasets)
            depth, width = _images.pick(rng, self.depths), _images.pick(rng, self.widths)
            return MLPAutoencoderStatic(
                dataset=dataset,
                image_size=_images.pick(rng, _images.size_choices(dataset, self.image_sizes)),
                hidden=(width,) * depth,
                bottleneck=_images.pick(rng, self.bottlenecks),
                activation=_images.pick(rng, self.activations),
                batch_size=_images.pick(rng, self.batch_sizes),
            )

        return _images.sample_within_budget(draw, self.max_params, self.max_macs)

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        fits = _images.within_budget("MLPAutoencoder", self._structures(), self.max_params, self.max_macs)
        return _images.extremes(fits)

    def describe(self, static):
        layers = "-".join(map(str, (*static.hidden, static.bottleneck, *static.hidden[::-1])))
        data = _images.describe_data(static.dataset, static.image_size)
        return f"{data}, {layers} {static.activation}, bs{static.batch_size}"

    def load_data(self, static):
        return _images.load(static.dataset, static.image_size)

    def init(self, key, task: Task):
        key_enc, key_dec = jax.random.split(key)
        sizes, scale = task.static.encoder_sizes, task.dynamic["init_scale"]
        return {
            "encoder": _nn.mlp_init(key_enc, sizes, scale),
            "decoder": _nn.mlp_init(key_dec, sizes[::-1], scale),
        }

    def batch(self, key, split, task: Task):
        x, _ = _images.sample_xy(key, task.data[split], task.static.batch_size)
        return {"x": x.reshape(x.shape[0], -1)}  # (B, D) float32 in [0, 1]

    def reconstruct(self, params, x, task: Task) -> jax.Array:
        """Reconstructions x̂ (B, D) in (0, 1) of inputs ``x`` (B, D)."""
        act = task.static.activation
        code = _nn.mlp_apply(params["encoder"], x, act)  # (B, z), linear bottleneck
        return jax.nn.sigmoid(_nn.mlp_apply(params["decoder"], code, act))  # (B, D)

    def loss(self, params, key, batch, task: Task):
        x = batch["x"]  # (B, D)
        return jnp.mean(jnp.square(x - self.reconstruct(params, x, task)))
