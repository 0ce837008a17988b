"""`ESTIMATORS`: the explicit registry of meta-gradient estimators (name -> class).

Every class takes the same constructor fields (`GradientEstimator`), so
``get_estimator(name, learned=..., family=..., static=..., num_particles=8)`` works for any name.
"""

from __future__ import annotations

from typing import Any

from lopt.estimators.base import GradientEstimator
from lopt.estimators.es import ES
from lopt.estimators.nres import NRES
from lopt.estimators.pes import PES
from lopt.estimators.tbptt import TBPTT
from lopt.validate import unknown_name

ESTIMATORS: dict[str, type[GradientEstimator]] = {
    "es": ES,  # antithetic ES over full unrolls: unbiased (smoothed), one episode per estimate
    "pes": PES,  # Persistent ES: unbiased over truncations, variance grows with their number
    "nres": NRES,  # Noise-Reuse ES: one perturbation per episode, lower variance than PES
    "tbptt": TBPTT,  # truncated backprop: exact within the truncation, short-horizon biased
}


def get_estimator(name: str, **kwargs: Any) -> GradientEstimator:
    """The estimator registered as ``name``, built with ``kwargs``; an unknown name raises listing the valid ones."""
    if name not in ESTIMATORS:
        raise unknown_name("estimator", name, ESTIMATORS)
    return ESTIMATORS[name](**kwargs)
