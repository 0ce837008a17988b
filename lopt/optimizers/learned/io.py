"""Save and load a learned optimizer's theta as safetensors, with its architecture beside it.

    lopt.save_theta("opt.safetensors", learned, theta)
    learned, theta = lopt.load_theta("opt.safetensors")           # rebuilds the saved architecture
    learned, theta = lopt.load_theta("opt.safetensors", learned)  # or insists on this one

The file's header metadata records the registry name, the architecture's version and its config
(JSON); arrays are keyed by their path in theta ("mlp/l0/w"). Loading checks all of it, and every
array's shape, and says exactly what differs: a theta is meaningless under another architecture.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from lopt import serialization
from lopt.optimizers.learned.base import LearnedOptimizer, Theta
from lopt.optimizers.learned.registry import build_learned, get_learned
from lopt.validate import ConfigError, UnknownNameError

FORMAT = "lopt.theta"
FORMAT_VERSION = "1"


class ThetaMismatchError(ConfigError):
    """A saved theta does not fit the requested learned optimizer (architecture, version or shapes)."""


def _flatten(theta: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(theta, dict):
        out = {}
        for key, value in theta.items():
            if "/" in str(key):
                raise ValueError(f"theta key {key!r} contains '/', which the file format uses as separator")
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    if isinstance(theta, jax.ShapeDtypeStruct):
        return {prefix[:-1]: theta}
    return {prefix[:-1]: np.array(jax.device_get(theta), order="C")}  # (ascontiguousarray makes 0-d 1-d)


def _unflatten(flat: dict[str, np.ndarray]) -> Theta:
    theta: dict = {}
    for path, value in flat.items():
        node = theta
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = jax.numpy.asarray(value)
    return theta


def _config_json(learned: LearnedOptimizer) -> str:
    return json.dumps(dataclasses.asdict(learned.config), sort_keys=True)


def save_theta(path: str | os.PathLike, learned: LearnedOptimizer, theta: Theta) -> None:
    """Write ``theta`` and ``learned``'s name, version and config to ``path`` (safetensors)."""
    expected = _flatten(jax.eval_shape(learned.init, jax.random.key(0)))
    arrays = _flatten(theta)
    _check_shapes(f"the theta given to save_theta for {learned.name!r}", expected, arrays)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": learned.name,
        "version": str(learned.version),
        "config": _config_json(learned),
    }
    serialization.write(path, arrays, metadata)  # atomic, with a sha256


def _check_shapes(what: str, expected: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ThetaMismatchError(f"{what} has the wrong arrays: missing {missing}, unexpected {extra}.")
    for key, spec in expected.items():
        if tuple(arrays[key].shape) != tuple(spec.shape):
            raise ThetaMismatchError(
                f"{what}: array {key!r} has shape {tuple(arrays[key].shape)}, expected {tuple(spec.shape)}."
            )


def _read(path: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, arrays) of a theta file (`lopt.serialization`; files from before the sha256 was
    recorded load without one)."""

    def check(metadata: dict) -> None:
        if metadata.get("format") != FORMAT:
            raise ThetaMismatchError(
                f"{path} is not a lopt theta file (its metadata has no format={FORMAT!r})."
            )
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ThetaMismatchError(
                f"{path} uses theta file format version {metadata.get('format_version')!r}; "
                f"this lopt reads version {FORMAT_VERSION}."
            )

    try:
        return serialization.read(path, require_sha256=False, check=check)
    except serialization.SerializationError as err:
        raise ThetaMismatchError(f"{path} is not a lopt theta file: {err.cause}") from None


def _build(path: str, metadata: dict[str, str]) -> LearnedOptimizer:
    """The learned optimizer the file describes."""
    name = metadata["architecture"]
    try:
        return build_learned(name, json.loads(metadata["config"]))
    except UnknownNameError as err:
        raise ThetaMismatchError(
            f"{path} was saved by a learned optimizer this lopt does not have: {err}"
        ) from None
    except ConfigError as err:
        raise ThetaMismatchError(f"{path} was saved by a config this lopt does not know: {err}") from None


def load_theta(
    path: str | os.PathLike, learned: LearnedOptimizer | None = None
) -> tuple[LearnedOptimizer, Theta]:
    """(learned optimizer, theta) from a file written by `save_theta`.

    Without ``learned``, the saved architecture is rebuilt from the file. With it, the file must
    have been saved by the same architecture (name), version and config, or `ThetaMismatchError`
    says which differs.
    """
    path = os.fspath(path)
    metadata, arrays = _read(path)
    name, version = metadata["architecture"], int(metadata["version"])
    if learned is not None:
        if name != learned.name:
            raise ThetaMismatchError(
                f"{path} holds a theta of the {name!r} learned optimizer; it cannot be loaded into {learned.name!r}."
            )
        if version != learned.version:
            raise ThetaMismatchError(
                f"{path} was saved by {name!r} version {version}, but this lopt's {name!r} is version "
                f"{learned.version}: theta's meaning changed between them, so it cannot be loaded."
            )
        if _build(path, metadata).config != learned.config:  # fields added later hold their defaults
            raise ThetaMismatchError(
                f"{path} was saved by {name!r} with config {metadata['config']}, which differs from the "
                f"requested {_config_json(learned)}; call load_theta(path) to rebuild the saved architecture."
            )
    else:
        cls = get_learned(name) if name in _registry_names() else None
        if cls is not None and version != cls.version:
            raise ThetaMismatchError(
                f"{path} was saved by {name!r} version {version}, but this lopt's {name!r} is version "
                f"{cls.version}: theta's meaning changed between them, so it cannot be loaded."
            )
        learned = _build(path, metadata)
    _check_shapes(f"{path}", _flatten(jax.eval_shape(learned.init, jax.random.key(0))), arrays)
    return learned, _unflatten(arrays)


def _registry_names() -> list[str]:
    from lopt.optimizers.learned.registry import LEARNED

    return list(LEARNED)
