"""MLP classifiers on small images (digits, MNIST, Fashion-MNIST) and on MNIST-1D vectors.

logits = W_L σ(... σ(W_1 x + b_1) ...) + b_L, with x the flattened image in [0, 1] (or the
40-dim MNIST-1D vector), σ the sampled activation, every hidden layer of the sampled width,
LeCun-normal weights times a dynamic init scale s ~ LogUniform(0.5, 2), and zero biases. The loss
is the mean softmax cross-entropy of the labels; metrics add the accuracy.

Sampled: dataset, image side (8 / 14 / 28 for mnist and fashion_mnist; digits is 8x8), depth
(number of hidden layers), width, activation and batch size. Configurations above ``max_params``
parameters or ``max_macs`` forward multiply-adds per batch are resampled (rejection sampling,
so the largest nets are rarer than the lists suggest).

References: the image-MLP task families of TaskSet (Metz et al. 2020, "Using a thousand
optimization tasks to learn hyperparameter search strategies") and of learned_optimization
(``tasks/fixed/image_mlp.py``); MNIST-1D (Greydanus & Kobak 2024, "Scaling down deep learning
with MNIST-1D").
"""

from __future__ import annotations

import dataclasses
import itertools

import jax

from lopt.tasks import _images, _nn
from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import check_choice, check_interval, check_range, check_subset

DATASETS = ("digits", "mnist", "fashion_mnist", "mnist1d")
ACTIVATIONS = ("relu", "tanh", "gelu", "elu", "swish")


@dataclasses.dataclass(frozen=True)
class MLPStatic:
    """Structure of one MLP classifier."""

    dataset: str  # one of DATASETS
    image_size: int | None  # side of the (square) image; None for mnist1d
    hidden: tuple[int, ...]  # widths of the hidden layers
    activation: str  # one of ACTIVATIONS
    batch_size: int  # examples per batch

    def __post_init__(self):
        _images.check_static_data("MLPStatic", self.dataset, self.image_size, DATASETS)
        check_range("MLPStatic.depth", len(self.hidden), 1, 8)
        for w in self.hidden:
            check_range("MLPStatic.hidden", w, 1, 4096)
        check_choice("MLPStatic.activation", self.activation, ACTIVATIONS)
        check_range("MLPStatic.batch_size", self.batch_size, 1, 4096)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes from input to logits: (input_dim, *hidden, 10)."""
        return (_images.input_dim(self.dataset, self.image_size), *self.hidden, _images.NUM_CLASSES)

    def num_params(self) -> int:
        """Σ_l (n_l + 1) n_{l+1} over consecutive layer sizes."""
        s = self.sizes
        return sum((a + 1) * b for a, b in zip(s[:-1], s[1:]))

    def macs(self) -> int:
        """Forward multiply-adds of one batch: B Σ_l n_l n_{l+1}."""
        s = self.sizes
        return self.batch_size * sum(a * b for a, b in zip(s[:-1], s[1:]))


@dataclasses.dataclass(frozen=True)
class MLP(TaskFamily):
    """MLP classifiers on digits / mnist / fashion_mnist images and MNIST-1D vectors."""

    name = "mlp"

    datasets: tuple[str, ...] = DATASETS  # datasets to sample from (a subset of DATASETS)
    image_sizes: tuple[int, ...] = (8, 14, 28)  # sides for mnist / fashion_mnist (digits: 8)
    depths: tuple[int, ...] = (1, 2, 3)  # number of hidden layers
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)  # hidden width (all hidden layers alike)
    activations: tuple[str, ...] = ACTIVATIONS  # hidden activations
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)  # examples per batch
    init_scale: tuple[float, float] = (0.5, 2.0)  # init-scale multiplier, log-uniform in [a, b]
    max_params: int = 200_000  # configs with more parameters are resampled
    max_macs: int = 16_000_000  # configs with more forward multiply-adds per batch are resampled

    def __post_init__(self):
        _images.check_datasets("MLP.datasets", self.datasets, DATASETS)
        _images.check_image_sizes("MLP.image_sizes", self.image_sizes)
        _images.check_values("MLP.depths", self.depths, 1, 8)
        _images.check_values("MLP.widths", self.widths, 1, 4096)
        check_subset("MLP.activations", self.activations, ACTIVATIONS)
        _images.check_values("MLP.batch_sizes", self.batch_sizes, 1, 4096)
        check_interval("MLP.init_scale", self.init_scale, 1e-3, 1e3)
        _images.within_budget("MLP", self._structures(), self.max_params, self.max_macs)

    def _structures(self):
        """Every structure of the space (activation fixed: it changes neither size nor cost)."""
        for ds in self.datasets:
            for size, depth, width, bs in itertools.product(
                _images.size_choices(ds, self.image_sizes), self.depths, self.widths, self.batch_sizes
            ):
                yield MLPStatic(ds, size, (width,) * depth, self.activations[0], bs)

    def sample_static(self, key):
        rng = host_rng(key)

        def draw():
            dataset = _images.pick(rng, self.datasets)
            depth, width = _images.pick(rng, self.depths), _images.pick(rng, self.widths)
            return MLPStatic(
                dataset=dataset,
                image_size=_images.pick(rng, _images.size_choices(dataset, self.image_sizes)),
                hidden=(width,) * depth,
                activation=_images.pick(rng, self.activations),
                batch_size=_images.pick(rng, self.batch_sizes),
            )

        return _images.sample_within_budget(draw, self.max_params, self.max_macs)

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        fits = _images.within_budget("MLP", self._structures(), self.max_params, self.max_macs)
        return _images.extremes(fits)

    def describe(self, static):
        hidden = "-".join(map(str, static.hidden))
        data = _images.describe_data(static.dataset, static.image_size)
        return f"{data}, {hidden} {static.activation}, bs{static.batch_size}"

    def load_data(self, static):
        return _images.load(static.dataset, static.image_size)

    def init(self, key, task: Task):
        return _nn.mlp_init(key, task.static.sizes, task.dynamic["init_scale"])

    def batch(self, key, split, task: Task):
        x, y = _images.sample_xy(key, task.data[split], task.static.batch_size)
        return {"x": x.reshape(x.shape[0], -1), "y": y}  # x (B, D) float32, y (B,) int32

    def logits(self, params, x, task: Task) -> jax.Array:
        """Class logits (B, 10) of inputs ``x`` (B, D)."""
        return _nn.mlp_apply(params, x, task.static.activation)

    def loss(self, params, key, batch, task: Task):
        return _nn.softmax_cross_entropy(self.logits(params, batch["x"], task), batch["y"])

    def metrics(self, params, key, batch, task: Task):
        logits = self.logits(params, batch["x"], task)  # (B, 10)
        return {
            "loss": _nn.softmax_cross_entropy(logits, batch["y"]),
            "accuracy": _nn.accuracy(logits, batch["y"]),
        }
