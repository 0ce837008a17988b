"""Small CNN classifiers on images (digits 8x8, MNIST and Fashion-MNIST at 14x14 or 28x28).

Each of the 2-3 (by default) conv layers is a 3x3 'SAME' convolution with the sampled number of channels, the
sampled activation σ, and a 2x downsampling: either the convolution's stride 2, or a 2x2 max pool
(stride 2, 'SAME') after σ. Then a global average pool over space and a dense head to 10 logits:

    h_0 = x (B, H, W, 1) in [0, 1];  h_l = down(σ(conv_l(h_{l-1})));
    logits = mean_{i,j} h_L[:, i, j, :] W + b.

Weights are LeCun-normal times a dynamic init scale s ~ LogUniform(0.5, 2), biases zero; the loss
is the mean softmax cross-entropy, metrics add the accuracy. Each layer's channels are sampled
independently. Configurations above ``max_params`` parameters or ``max_macs`` forward
multiply-adds per batch are resampled (this keeps tasks at a few hundred Adam steps per second
on 2 CPU cores; it mostly removes 28x28 max-pool nets with many channels and large batches).

References: the conv-net task families of TaskSet (Metz et al. 2020, "Using a thousand
optimization tasks to learn hyperparameter search strategies") and of learned_optimization
(``tasks/fixed/conv.py``: 3x3 conv stacks, global average pooling, a linear head).
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
DOWNSAMPLES = ("stride", "pool")
KERNEL = (3, 3)


@dataclasses.dataclass(frozen=True)
class CNNStatic:
    """Structure of one CNN classifier."""

    dataset: str  # one of DATASETS
    image_size: int  # side of the (square) image
    channels: tuple[int, ...]  # output channels of each conv layer
    downsample: str  # "stride" (stride-2 convs) or "pool" (2x2 max pool after each conv)
    activation: str  # one of ACTIVATIONS
    batch_size: int  # examples per batch

    def __post_init__(self):
        _images.check_static_data("CNNStatic", self.dataset, self.image_size, DATASETS)
        check_range("CNNStatic.depth", len(self.channels), 1, 4)
        for c in self.channels:
            check_range("CNNStatic.channels", c, 1, 1024)
        check_choice("CNNStatic.downsample", self.downsample, DOWNSAMPLES)
        check_choice("CNNStatic.activation", self.activation, ACTIVATIONS)
        check_range("CNNStatic.batch_size", self.batch_size, 1, 4096)

    def macs(self) -> int:
        """Forward multiply-adds of one batch: B (Σ_l H_l² · 9 c_{l-1} c_l + 10 c_L), with H_l the
        side of conv l's output (⌈H_{l-1}/2⌉ for a strided conv, H_{l-1} before a pool)."""
        total, side, c = 0, self.image_size, (1, *self.channels)
        for a, b in zip(c[:-1], c[1:]):
            out = side if self.downsample == "pool" else -(-side // 2)
            total += out * out * KERNEL[0] * KERNEL[1] * a * b
            side = -(-side // 2)
        return self.batch_size * (total + c[-1] * _images.NUM_CLASSES)

    def num_params(self) -> int:
        """Σ_l (9 c_{l-1} + 1) c_l with c_0 = 1, plus the head's (c_L + 1) · 10."""
        c = (1, *self.channels)
        conv = sum((KERNEL[0] * KERNEL[1] * a + 1) * b for a, b in zip(c[:-1], c[1:]))
        return conv + (c[-1] + 1) * _images.NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class CNN(TaskFamily):
    """Small CNN classifiers on digits / mnist / fashion_mnist."""

    name = "cnn"

    datasets: tuple[str, ...] = DATASETS  # datasets to sample from (a subset of DATASETS)
    image_sizes: tuple[int, ...] = (14, 28)  # sides for mnist / fashion_mnist (digits: 8)
    depths: tuple[int, ...] = (2, 3)  # number of conv layers (1 learns little in 300 steps)
    channels: tuple[int, ...] = (4, 8, 16, 32)  # per-layer channel choices
    downsamples: tuple[str, ...] = DOWNSAMPLES  # "stride" and / or "pool"
    activations: tuple[str, ...] = ACTIVATIONS  # conv activations
    batch_sizes: tuple[int, ...] = (32, 64, 128)  # examples per batch
    init_scale: tuple[float, float] = (0.5, 2.0)  # init-scale multiplier, log-uniform in [a, b]
    max_params: int = 200_000  # configs with more parameters are resampled
    max_macs: int = 6_000_000  # configs with more forward multiply-adds per batch are resampled

    def __post_init__(self):
        _images.check_datasets("CNN.datasets", self.datasets, DATASETS)
        _images.check_image_sizes("CNN.image_sizes", self.image_sizes)
        _images.check_values("CNN.depths", self.depths, 1, 4)
        _images.check_values("CNN.channels", self.channels, 1, 1024)
        check_subset("CNN.downsamples", self.downsamples, DOWNSAMPLES)
        check_subset("CNN.activations", self.activations, ACTIVATIONS)
        _images.check_values("CNN.batch_sizes", self.batch_sizes, 1, 4096)
        check_interval("CNN.init_scale", self.init_scale, 1e-3, 1e3)
        _images.within_budget("CNN", self._structures(), self.max_params, self.max_macs)

    def _structures(self):
        """Every structure of the space (the activation fixed: it changes neither size nor cost)."""
        data = [(ds, s) for ds in self.datasets for s in _images.size_choices(ds, self.image_sizes)]
        for (ds, size), depth, down, bs in itertools.product(
            data, self.depths, self.downsamples, self.batch_sizes
        ):
            for chans in itertools.product(self.channels, repeat=depth):
                yield CNNStatic(ds, size, chans, down, self.activations[0], bs)

    def sample_static(self, key):
        rng = host_rng(key)

        def draw():
            dataset = _images.pick(rng, self.datasets)
            depth = _images.pick(rng, self.depths)
            return CNNStatic(
                dataset=dataset,
                image_size=_images.pick(rng, _images.size_choices(dataset, self.image_sizes)),
                channels=tuple(_images.pick(rng, self.channels) for _ in range(depth)),
                downsample=_images.pick(rng, self.downsamples),
                activation=_images.pick(rng, self.activations),
                batch_size=_images.pick(rng, self.batch_sizes),
            )

        return _images.sample_within_budget(draw, self.max_params, self.max_macs)

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        fits = _images.within_budget("CNN", self._structures(), self.max_params, self.max_macs)
        return _images.extremes(fits)

    def describe(self, static):
        chans = "-".join(map(str, static.channels))
        data = _images.describe_data(static.dataset, static.image_size)
        return f"{data}, conv {chans} {static.downsample} {static.activation}, bs{static.batch_size}"

    def load_data(self, static):
        return _images.load(static.dataset, static.image_size)

    def init(self, key, task: Task):
        chans, scale = (1, *task.static.channels), task.dynamic["init_scale"]
        keys = jax.random.split(key, len(chans))
        convs = [_nn.conv_init(k, KERNEL, a, b, scale) for k, a, b in zip(keys[:-1], chans[:-1], chans[1:])]
        return {"convs": convs, "head": _nn.dense_init(keys[-1], chans[-1], _images.NUM_CLASSES, scale)}

    def batch(self, key, split, task: Task):
        x, y = _images.sample_xy(key, task.data[split], task.static.batch_size)
        return {"x": x[..., None], "y": y}  # x (B, H, W, 1) float32 in [0, 1], y (B,) int32

    def logits(self, params, x, task: Task) -> jax.Array:
        """Class logits (B, 10) of images ``x`` (B, H, W, 1)."""
        act, pool = _nn.ACTIVATIONS[task.static.activation], task.static.downsample == "pool"
        h = x
        for p in params["convs"]:
            h = act(_images.conv(p, h, stride=1 if pool else 2))  # (B, H', W', C_l)
            h = _images.max_pool(h) if pool else h  # (B, ⌈H'/2⌉, ⌈W'/2⌉, C_l)
        return _nn.dense(params["head"], jnp.mean(h, axis=(1, 2)))  # (B, C_L) -> (B, 10)

    def loss(self, params, key, batch, task: Task):
        return _nn.softmax_cross_entropy(self.logits(params, batch["x"], task), batch["y"])

    def metrics(self, params, key, batch, task: Task):
        logits = self.logits(params, batch["x"], task)  # (B, 10)
        return {
            "loss": _nn.softmax_cross_entropy(logits, batch["y"]),
            "accuracy": _nn.accuracy(logits, batch["y"]),
        }
