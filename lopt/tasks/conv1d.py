"""1-D conv-net classifiers on MNIST-1D.

Each of the 1-3 layers is a 'SAME' 1-D convolution with stride 2, the sampled kernel size and
number of channels (one count for all layers), followed by the sampled activation σ. The output
is flattened and a dense head gives 10 logits:

    h_0 = x (B, 40, 1);  h_l = σ(conv_l(h_{l-1})) (B, ⌈40 / 2^l⌉, C);  logits = flat(h_L) W + b.

Weights are LeCun-normal times a dynamic init scale s ~ LogUniform(0.5, 2), biases zero; the loss
is the mean softmax cross-entropy, metrics add the accuracy. Configurations above ``max_params``
parameters or ``max_macs`` forward multiply-adds per batch are resampled (this removes the widest,
deepest nets with the largest kernels and batches).

References: MNIST-1D and its reference conv net (Greydanus & Kobak 2024, "Scaling down deep
learning with MNIST-1D": three stride-2 conv layers of 25 channels, kernels 5/3/3, a linear head
on the flattened features).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax

from lopt.tasks import _images, _nn
from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import check_choice, check_interval, check_range, check_subset

DATASETS = ("mnist1d",)
ACTIVATIONS = ("relu", "tanh", "gelu", "elu", "swish")


@dataclasses.dataclass(frozen=True)
class Conv1DStatic:
    """Structure of one 1-D conv net."""

    dataset: str  # one of DATASETS
    channels: tuple[int, ...]  # output channels of each conv layer
    kernel_size: int  # width of every convolution kernel
    activation: str  # one of ACTIVATIONS
    batch_size: int  # examples per batch

    def __post_init__(self):
        check_choice("Conv1DStatic.dataset", self.dataset, DATASETS)
        check_range("Conv1DStatic.depth", len(self.channels), 1, 5)
        for c in self.channels:
            check_range("Conv1DStatic.channels", c, 1, 1024)
        check_range("Conv1DStatic.kernel_size", self.kernel_size, 1, 39)
        check_choice("Conv1DStatic.activation", self.activation, ACTIVATIONS)
        check_range("Conv1DStatic.batch_size", self.batch_size, 1, 4096)

    @property
    def out_length(self) -> int:
        """Length after the stride-2 layers: ⌈40 / 2^depth⌉."""
        return math.ceil(_images.MNIST1D_LENGTH / 2 ** len(self.channels))

    def num_params(self) -> int:
        """Σ_l (k c_{l-1} + 1) c_l with c_0 = 1, plus the head's (L_out c_L + 1) · 10."""
        c = (1, *self.channels)
        conv = sum((self.kernel_size * a + 1) * b for a, b in zip(c[:-1], c[1:]))
        return conv + (self.out_length * c[-1] + 1) * _images.NUM_CLASSES

    def macs(self) -> int:
        """Forward multiply-adds of one batch: B (Σ_l L_l k c_{l-1} c_l + 10 L_out c_L), L_l = ⌈40 / 2^l⌉."""
        total, length, c = 0, _images.MNIST1D_LENGTH, (1, *self.channels)
        for a, b in zip(c[:-1], c[1:]):
            length = -(-length // 2)
            total += length * self.kernel_size * a * b
        return self.batch_size * (total + length * c[-1] * _images.NUM_CLASSES)


@dataclasses.dataclass(frozen=True)
class Conv1D(TaskFamily):
    """1-D conv nets on MNIST-1D."""

    name = "conv1d"

    datasets: tuple[str, ...] = DATASETS  # datasets to sample from (only mnist1d)
    depths: tuple[int, ...] = (1, 2, 3)  # number of conv layers
    channels: tuple[int, ...] = (8, 16, 32, 64)  # channels (all layers alike)
    kernel_sizes: tuple[int, ...] = (3, 5, 7, 9)  # kernel widths
    activations: tuple[str, ...] = ACTIVATIONS  # conv activations
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)  # examples per batch
    init_scale: tuple[float, float] = (0.5, 2.0)  # init-scale multiplier, log-uniform in [a, b]
    max_params: int = 200_000  # configs with more parameters are resampled
    max_macs: int = 12_000_000  # configs with more forward multiply-adds per batch are resampled

    def __post_init__(self):
        _images.check_datasets("Conv1D.datasets", self.datasets, DATASETS)
        _images.check_values("Conv1D.depths", self.depths, 1, 5)
        _images.check_values("Conv1D.channels", self.channels, 1, 1024)
        _images.check_values("Conv1D.kernel_sizes", self.kernel_sizes, 1, 39)
        check_subset("Conv1D.activations", self.activations, ACTIVATIONS)
        _images.check_values("Conv1D.batch_sizes", self.batch_sizes, 1, 4096)
        check_interval("Conv1D.init_scale", self.init_scale, 1e-3, 1e3)
        _images.within_budget("Conv1D", self._structures(), self.max_params, self.max_macs)

    def _structures(self):
        """Every structure of the space (activation fixed: it changes neither size nor cost)."""
        for ds, depth, width, k, bs in itertools.product(
            self.datasets, self.depths, self.channels, self.kernel_sizes, self.batch_sizes
        ):
            yield Conv1DStatic(ds, (width,) * depth, k, self.activations[0], bs)

    def sample_static(self, key):
        rng = host_rng(key)

        def draw():
            depth, width = _images.pick(rng, self.depths), _images.pick(rng, self.channels)
            return Conv1DStatic(
                dataset=_images.pick(rng, self.datasets),
                channels=(width,) * depth,
                kernel_size=_images.pick(rng, self.kernel_sizes),
                activation=_images.pick(rng, self.activations),
                batch_size=_images.pick(rng, self.batch_sizes),
            )

        return _images.sample_within_budget(draw, self.max_params, self.max_macs)

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        fits = _images.within_budget("Conv1D", self._structures(), self.max_params, self.max_macs)
        return _images.extremes(fits)

    def describe(self, static):
        chans = "-".join(map(str, static.channels))
        layers = f"conv1d {chans} k{static.kernel_size} {static.activation}"
        return f"{static.dataset}, {layers}, bs{static.batch_size}"

    def load_data(self, static):
        return _images.load(static.dataset, None)

    def init(self, key, task: Task):
        s, scale = task.static, task.dynamic["init_scale"]
        chans = (1, *s.channels)
        keys = jax.random.split(key, len(chans))
        convs = [
            _nn.conv_init(k, (s.kernel_size,), a, b, scale)
            for k, a, b in zip(keys[:-1], chans[:-1], chans[1:])
        ]
        head = _nn.dense_init(keys[-1], s.out_length * chans[-1], _images.NUM_CLASSES, scale)
        return {"convs": convs, "head": head}

    def batch(self, key, split, task: Task):
        x, y = _images.sample_xy(key, task.data[split], task.static.batch_size)
        return {"x": x[..., None], "y": y}  # x (B, 40, 1) float32, y (B,) int32

    def logits(self, params, x, task: Task) -> jax.Array:
        """Class logits (B, 10) of signals ``x`` (B, 40, 1)."""
        act = _nn.ACTIVATIONS[task.static.activation]
        h = x
        for p in params["convs"]:
            h = act(_images.conv(p, h, stride=2))  # (B, ⌈L/2⌉, C)
        return _nn.dense(params["head"], h.reshape(h.shape[0], -1))  # (B, L_out C) -> (B, 10)

    def loss(self, params, key, batch, task: Task):
        return _nn.softmax_cross_entropy(self.logits(params, batch["x"], task), batch["y"])

    def metrics(self, params, key, batch, task: Task):
        logits = self.logits(params, batch["x"], task)  # (B, 10)
        return {
            "loss": _nn.softmax_cross_entropy(logits, batch["y"]),
            "accuracy": _nn.accuracy(logits, batch["y"]),
        }
