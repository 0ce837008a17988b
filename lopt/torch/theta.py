"""Which learned optimizer a param group runs: a shipped name, a theta file, or an architecture.

    resolve(name="mlp-small-v1")                           # a pretrained optimizer (lopt.PRETRAINED)
    resolve(theta="opt.safetensors")                       # any `save_theta` file; its architecture
    resolve(theta="opt.safetensors", architecture="mlp")   # ... insisting on one architecture
    resolve(theta={"mlp": ..., "skip": ...}, architecture="mlp")  # theta in memory
    resolve(architecture="adam_lr")                        # the architecture's initial theta (key 0)

Every mismatch raises `ThetaMismatchError` saying what differs (architecture, version, config or
array shapes), the messages of `lopt.load_theta`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from lopt.optimizers.learned.base import LearnedOptimizer, Theta
from lopt.optimizers.learned.io import ThetaMismatchError, load_theta
from lopt.optimizers.learned.registry import LEARNED, get_learned
from lopt.pretrained import PRETRAINED, load_pretrained
from lopt.validate import ConfigError, UnknownNameError, unknown_name

Source = tuple[Any, ...]  # a hashable description of where a group's theta comes from


def _shapes(tree: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _shapes(sub, f"{prefix}{key}/").items()}
    return {prefix[:-1]: tuple(np.shape(tree))}


def _expected(learned: LearnedOptimizer) -> dict[str, tuple[int, ...]]:
    return _shapes(jax.eval_shape(learned.init, jax.random.key(0)))


def _guess(shapes: dict[str, tuple[int, ...]]) -> str:
    """ ", which matches the default 'X' architecture" when one does."""
    for name, cls in LEARNED.items():
        if _expected(cls()) == shapes:
            return f"; it matches the default {name!r} architecture"
    return ""


def check_theta(learned: LearnedOptimizer, theta: Theta) -> None:
    """Raise `ThetaMismatchError` unless ``theta`` has exactly ``learned``'s arrays and shapes."""
    if not isinstance(theta, dict):
        raise ThetaMismatchError(
            f"theta must be a nested dict of arrays or a path, got {type(theta).__name__}."
        )
    expected, given = _expected(learned), _shapes(theta)
    missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or extra:
        raise ThetaMismatchError(
            f"this theta is not one of {learned!r}: missing arrays {missing}, unexpected arrays {extra}{_guess(given)}."
        )
    for key, shape in expected.items():
        if given[key] != shape:
            raise ThetaMismatchError(
                f"this theta is not one of {learned!r}: array {key!r} has shape {given[key]}, expected {shape}"
                f"{_guess(given)}."
            )


def _architecture(architecture: str | LearnedOptimizer | None) -> LearnedOptimizer | None:
    if architecture is None or isinstance(architecture, LearnedOptimizer):
        return architecture
    if isinstance(architecture, str):
        return get_learned(architecture)()
    raise ConfigError(
        f"architecture must be a name in lopt.LEARNED ({', '.join(LEARNED)}) or a lopt LearnedOptimizer, "
        f"got {type(architecture).__name__}."
    )


def source_of(name: str | None, theta: Any, architecture: Any) -> Source:
    """A hashable key for (name, theta, architecture): equal keys resolve to the same optimizer."""
    if isinstance(theta, (str, os.PathLike)):
        theta_key: Any = ("path", os.path.abspath(os.fspath(theta)))
    else:
        theta_key = None if theta is None else ("object", id(theta))
    return (name, theta_key, architecture)


def resolve(
    name: str | None = None, theta: Any = None, architecture: Any = None
) -> tuple[LearnedOptimizer, Theta]:
    """(learned optimizer, theta) for a group's ``name`` / ``theta`` / ``architecture`` options."""
    if name is not None:
        if theta is not None or architecture is not None:
            raise ConfigError(
                f"name={name!r} picks a pretrained optimizer, weights and architecture both; do not also "
                "pass theta= or architecture= (pass theta=path alone for weights of your own)."
            )
        if name not in PRETRAINED:
            err = unknown_name("pretrained optimizer", name, PRETRAINED)
            if name in LEARNED:
                hint = f" ({name!r} is an architecture: pass architecture={name!r} with theta=, or alone for its initial theta)"
                err = UnknownNameError(str(err) + hint)
            raise err
        return load_pretrained(name)
    learned = _architecture(architecture)
    if isinstance(theta, (str, os.PathLike)):
        return load_theta(theta, learned)
    if theta is not None:
        if learned is None:
            raise ConfigError(
                "a theta given as arrays needs its architecture: pass architecture='mlp' (or another)."
            )
        check_theta(learned, theta)
        return learned, theta
    if learned is None:
        raise ConfigError(
            "say which learned optimizer to run: name= one of the pretrained ones "
            f"({', '.join(sorted(PRETRAINED))}), or theta= a theta file, or architecture= one of {', '.join(LEARNED)}."
        )
    return learned, learned.init(jax.random.key(0))
