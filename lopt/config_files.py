"""Run configs on disk: a file of field values under explicit flags, and an older run's recorded
config read back for a resume (fields retired since, fields added since with their old values).

    cfg = resolve(cfg, "run.json", explicit_flags(sys.argv[1:]))   # `lopt meta-train --config run.json`
    expect = checkpoint_expectation(cfg, saved)                    # what a checkpoint's config must equal

The configs themselves are in `lopt.config`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

from lopt.validate import ConfigError, json_tuples

if TYPE_CHECKING:
    from lopt.config import MetaTrainConfig

# Fields of older lopt versions that no longer exist (the held-out evaluation during meta-training,
# replaced by the validation protocol): ignored when an old run's config is read.
RETIRED = ("eval_every", "eval_suite", "eval_tasks", "eval_steps", "eval_seeds")
# Fields added with a default that changes the trajectory, and the value an older run (whose
# config lacks them) was trained with.
LEGACY = {
    "objective": "relative",
    "loss_reference": "zero",
    "step_weights": "uniform",
    "shaping": "none",
    "drop_diverged": False,
    "group_sampling": "uniform",
}


def checkpoint_expectation(cfg: MetaTrainConfig, saved: dict[str, Any] | None) -> dict[str, Any]:
    """What a checkpoint's recorded config must equal for ``cfg`` to resume from it: ``cfg.trajectory()``
    without the fields the checkpoint predates (absent from ``saved``) that hold their default -- a
    field added to lopt later, whose default reproduces the old behaviour, does not block a resume."""
    from lopt.config import MetaTrainConfig

    defaults = MetaTrainConfig()
    if saved is None:
        return cfg.trajectory()
    out = {}
    for k, v in cfg.trajectory().items():
        if k in saved:
            out[k] = v
        elif k in LEGACY:  # the old run was trained with the legacy value: any other value is a mismatch
            if v != LEGACY[k]:
                out[k] = v
        elif v != getattr(defaults, k):
            out[k] = v
    out.update({k: saved[k] for k in RETIRED if k in saved})  # old fields: whatever the checkpoint has
    return out


def upgrade_config(saved: dict[str, Any]) -> dict[str, Any]:
    """An older run's recorded config as `MetaTrainConfig` fields: retired fields dropped, fields it
    predates set to the values it was trained with (`LEGACY`)."""
    out = {k: v for k, v in saved.items() if k not in RETIRED}
    out.update({k: v for k, v in LEGACY.items() if k not in out})
    return out


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Field values from a JSON file: a flat object, or a run's ``config.json`` (``{"config": {...}}``)."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except ValueError as err:
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
    if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
        raw = upgrade_config(raw["config"])  # a run's config.json, maybe of an older lopt
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of MetaTrainConfig fields.")
    from lopt.config import MetaTrainConfig

    known = {f.name for f in dataclasses.fields(MetaTrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config file {path} has unknown fields {unknown}; valid fields: {sorted(known)}.")
    return {k: json_tuples(v) for k, v in raw.items()}


def resolve(cfg: MetaTrainConfig, config_file: str = "", explicit: set[str] = frozenset()) -> MetaTrainConfig:
    """``cfg`` (parsed flags) on top of ``config_file``: a flag wins when it was given explicitly
    (named in ``explicit``) or differs from its default; otherwise the file's value is used."""
    if not config_file:
        return cfg
    from lopt.config import MetaTrainConfig

    defaults = MetaTrainConfig()
    values = read_config_file(config_file)
    for f in dataclasses.fields(MetaTrainConfig):
        mine = getattr(cfg, f.name)
        if f.name in explicit or mine != getattr(defaults, f.name):
            values[f.name] = mine
    return MetaTrainConfig(**values)


def explicit_flags(argv: list[str]) -> set[str]:
    """Field names of the ``--flag`` / ``--flag=value`` / ``--no-flag`` tokens in ``argv``."""
    from lopt.config import MetaTrainConfig

    names = {f.name for f in dataclasses.fields(MetaTrainConfig)}
    found = set()
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        if name in names:
            found.add(name)
        elif name.startswith("no_") and name[3:] in names:
            found.add(name[3:])
    return found
