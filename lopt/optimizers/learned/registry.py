"""The registry of learned optimizers: name -> class; every class constructs with no arguments."""

from __future__ import annotations

import dataclasses
from typing import Any

from lopt.optimizers.learned.base import LearnedOptimizer
from lopt.optimizers.learned.hierarchical import HierarchicalOptimizer
from lopt.optimizers.learned.hierarchical_v2 import HierarchicalV2
from lopt.optimizers.learned.hyper import SGDM, AdamLR
from lopt.optimizers.learned.mlp import MLPOptimizer
from lopt.validate import ConfigError, json_tuples, unknown_name

LEARNED: dict[str, type[LearnedOptimizer]] = {
    "mlp": MLPOptimizer,  # per-parameter MLP (small_fc_lopt-style); 4 floats/param
    "hierarchical": HierarchicalOptimizer,  # Metz et al. 2020: per-tensor LSTM + per-parameter MLP; 6 floats/param
    "hierarchical_v2": HierarchicalV2,  # horizon-aware (num_steps=T), normalized odd direction x schedule; 6 floats/param
    "adam_lr": AdamLR,  # Adam with learned per-tensor learning rates; 2 floats/param
    "sgdm": SGDM,  # SGD with learned momentum and per-tensor learning rates; 1 float/param
}


def get_learned(name: str) -> type[LearnedOptimizer]:
    """The learned-optimizer class registered as ``name``; an unknown name raises listing the valid ones."""
    if name not in LEARNED:
        raise unknown_name("learned optimizer", name, LEARNED)
    return LEARNED[name]


def build_learned(name: str, fields: dict[str, Any]) -> LearnedOptimizer:
    """``name``'s learned optimizer with these architecture config fields (JSON lists become tuples);
    unknown fields raise a `ConfigError` naming them and the valid ones."""
    cls = get_learned(name)
    valid = {f.name for f in dataclasses.fields(cls.config_class)}
    if set(fields) - valid:
        raise ConfigError(
            f"config fields {sorted(set(fields) - valid)} are not {name!r} architecture fields; "
            f"valid fields: {', '.join(sorted(valid))}."
        )
    return cls(cls.config_class(**{k: json_tuples(v) for k, v in fields.items()}))
