"""The registry of learned optimizers: name -> class; every class constructs with no arguments."""

from __future__ import annotations

from lopt.optimizers.learned.base import LearnedOptimizer
from lopt.optimizers.learned.hierarchical import HierarchicalOptimizer
from lopt.optimizers.learned.hyper import SGDM, AdamLR
from lopt.optimizers.learned.mlp import MLPOptimizer
from lopt.validate import unknown_name

LEARNED: dict[str, type[LearnedOptimizer]] = {
    "mlp": MLPOptimizer,  # per-parameter MLP (small_fc_lopt-style); 4 floats/param
    "hierarchical": HierarchicalOptimizer,  # Metz et al. 2020: per-tensor LSTM + per-parameter MLP; 6 floats/param
    "adam_lr": AdamLR,  # Adam with learned per-tensor learning rates; 2 floats/param
    "sgdm": SGDM,  # SGD with learned momentum and per-tensor learning rates; 1 float/param
}


def get_learned(name: str) -> type[LearnedOptimizer]:
    """The learned-optimizer class registered as ``name``; an unknown name raises listing the valid ones."""
    if name not in LEARNED:
        raise unknown_name("learned optimizer", name, LEARNED)
    return LEARNED[name]
