"""`TASKS`: the explicit registry of task families (name -> family class).

Every class constructs with no arguments (its full default sampling space); keyword arguments
restrict the space, e.g. ``TASKS["mlp"](datasets=("fashion_mnist",))``.
"""

from __future__ import annotations

from lopt.tasks.autoencoder import MLPAutoencoder
from lopt.tasks.base import TaskFamily
from lopt.tasks.cnn import CNN
from lopt.tasks.conv1d import Conv1D
from lopt.tasks.flow import Flow
from lopt.tasks.functions2d import Functions2D
from lopt.tasks.mlp import MLP
from lopt.tasks.nqm import NQM
from lopt.tasks.quadratic import Quadratic
from lopt.tasks.regression import LinearRegression, LogisticRegression
from lopt.tasks.rnn_lm import RNNLM
from lopt.tasks.transformer_lm import TransformerLM
from lopt.tasks.vae import VAE
from lopt.validate import unknown_name

TASKS: dict[str, type[TaskFamily]] = {
    "quadratic": Quadratic,
    "nqm": NQM,  # the noisy quadratic model, with closed-form SGD dynamics (lopt.tasks.nqm)
    "functions2d": Functions2D,
    "linear_regression": LinearRegression,
    "logistic_regression": LogisticRegression,
    "mlp": MLP,
    "mlp_autoencoder": MLPAutoencoder,
    "cnn": CNN,
    "conv1d": Conv1D,
    "vae": VAE,
    "flow": Flow,
    "rnn_lm": RNNLM,
    "transformer_lm": TransformerLM,
}


def get_family(name: str, **space) -> TaskFamily:
    """The family registered as ``name``, with its sampling space optionally restricted."""
    if name not in TASKS:
        raise unknown_name("task family", name, TASKS)
    return TASKS[name](**space)
