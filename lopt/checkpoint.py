"""Atomic checkpoints of a meta-training run's outer state, with its resolved config and step.

    path = save(directory, step, outer_state, config, keep=3)       # ckpt_{step:08d}.safetensors
    state, config, step = restore(path, template)                   # template: e.g. a fresh init
    restored = restore_latest(directory, template, expect_config=config)   # None when there is none

The state is any pytree of arrays (NamedTuples, registered dataclasses, dicts, lists; numpy or jax
arrays, typed PRNG key arrays, Python scalars). One checkpoint is one safetensors file: each leaf
is a tensor named by its tree path (`jax.tree_util.keystr`, e.g. ``.theta['w']``; a typed key is
stored as its `jax.random.key_data`), and the header's ``__metadata__`` holds

    format="lopt.checkpoint", format_version, lopt_version, step, config (JSON),
    prng_keys (JSON: leaf name -> key implementation), sha256

where ``sha256`` covers the canonical JSON of the rest of the header followed by the whole tensor
payload, so corruption is detected even when the file still parses. Restoring gives arrays that
are bitwise identical to the saved ones (bfloat16, NaN payloads and key bits included), with the
template's structure and leaf types, which is what makes a resumed run match an uninterrupted one.

Atomicity (`lopt.serialization`, the codec of every lopt file): a checkpoint is written to a
hidden temp file in the same directory, flushed and fsynced, renamed over its final name
(`os.replace`), and the directory is fsynced. A process killed at any moment leaves either the
complete file or none under the final name; its temp file is ignored by `list_checkpoints` and
removed by the next `save`. Only `save` deletes anything:
checkpoints beyond the last ``keep``, never the one it just wrote.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lopt import serialization
from lopt.named_tensors import leaf_name, restore_leaf, template_spec, to_host, weakly_typed

_weakly_typed = weakly_typed  # imported from here before

FORMAT = "lopt.checkpoint"
FORMAT_VERSION = "1"
_NAME = re.compile(r"ckpt_(\d{8,})\.safetensors")
_TEMP = re.compile(r"\.ckpt_\d+\.safetensors\.tmp\.(\d+)\.[0-9a-f]+")


class CheckpointError(Exception):
    """A checkpoint file cannot be restored; ``path`` names the file and ``cause`` says why."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path, self.cause = os.fspath(path), cause
        super().__init__(f"checkpoint {self.path}: {cause}")


class CheckpointMismatch(CheckpointError):
    """An intact checkpoint of something else: another config, or a state of another structure."""


class TemplateMismatch(CheckpointMismatch):
    """An intact checkpoint whose state has another structure (e.g. written by an older lopt)."""


# ----------------------------------------------------------------------------------------- listing


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """The final file name of the checkpoint of ``step`` in ``directory``."""
    return Path(directory) / f"ckpt_{step:08d}.safetensors"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The checkpoints in ``directory`` sorted by step (temp files are not listed)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(directory) if (m := _NAME.fullmatch(name))]
    return [directory / name for _, name in sorted(found)]


def latest(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    paths = list_checkpoints(directory)
    return paths[-1] if paths else None


# ------------------------------------------------------------------------------------------ saving


def _config_json(config: Any) -> str:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    try:
        return json.dumps(config, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the config to checkpoint is not JSON-serializable: {err}") from None


def _remove_stale_temps(directory: Path) -> None:
    """Delete temp files of processes that no longer run (a live one may be writing its own)."""
    for name in os.listdir(directory):
        if (m := _TEMP.fullmatch(name)) and int(m.group(1)) != os.getpid():
            try:
                os.kill(int(m.group(1)), 0)  # signal 0: only asks whether the process exists
            except ProcessLookupError:
                (directory / name).unlink(missing_ok=True)
            except OSError:  # PermissionError: it exists, under another user
                pass


def save(
    directory: str | os.PathLike, step: int, state: Any, config: Any = None, keep: int | None = 3
) -> Path:
    """Atomically write ``state``, ``config`` and ``step`` to ``directory/ckpt_{step:08d}.safetensors``.

    Args:
      directory: created if missing.
      step: the outer step the state is at (an int >= 0); a checkpoint of the same step is replaced.
      state: a pytree of arrays, typed PRNG keys and Python scalars.
      config: the resolved config, JSON-serializable (a dict; a dataclass is converted with
        `dataclasses.asdict`).
      keep: how many checkpoints to keep, the highest steps (None keeps all). The one just
        written is never deleted.

    Returns:
      The path of the written checkpoint.
    """
    step = int(step)
    if step < 0:
        raise ValueError(f"step={step} is negative.")
    if keep is not None and keep < 1:
        raise ValueError(f"keep={keep} must be at least 1 (or None to keep every checkpoint).")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(directory)
    tensors, keys = to_host(state)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lopt_version": _lopt_version(),
        "step": str(step),
        "config": _config_json(config),
        "prng_keys": json.dumps(keys, sort_keys=True),
    }
    final = checkpoint_path(directory, step)
    temp = directory / f".{final.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}"
    serialization.atomic_write(final, lambda: serialization.encode(tensors, metadata), temp)
    if keep is not None:
        for old in list_checkpoints(directory)[:-keep]:
            if old != final:
                old.unlink(missing_ok=True)
    return final


def _lopt_version() -> str:
    try:
        return importlib.metadata.version("lopt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------- restoring


def _read(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors by name) of a checkpoint file, validated down to its checksum."""

    def check(metadata: dict) -> None:
        if metadata.get("format") != FORMAT:
            raise CheckpointError(path, f"not a lopt checkpoint: its metadata has no format={FORMAT!r}")
        if metadata.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                path,
                f"format version mismatch: the file has version {metadata.get('format_version')!r} "
                f"(written by lopt {metadata.get('lopt_version')}), this lopt reads version {FORMAT_VERSION}",
            )

    try:
        return serialization.read(path, check=check)
    except serialization.SerializationError as err:
        raise CheckpointError(path, err.cause) from None


def _check_leaves(path: Path, names: list[str], template_leaves: list, tensors: dict, keys: dict) -> None:
    missing = [n for n in names if n not in tensors]
    extra = [n for n in tensors if n not in set(names)]
    if missing or extra:
        raise CheckpointError(
            path,
            f"does not match the template's structure: missing leaves {missing}, unexpected leaves {extra}",
        )
    problems = []
    for name, leaf in zip(names, template_leaves):
        shape, dtype = template_spec(leaf)
        array = tensors[name]
        if name in keys:
            data = jax.ShapeDtypeStruct(array.shape, array.dtype)
            try:
                key = jax.eval_shape(lambda d, impl=keys[name]: jax.random.wrap_key_data(d, impl=impl), data)
            except (ValueError, TypeError) as err:  # an unknown implementation, key data of a wrong shape
                raise CheckpointError(
                    path, f"leaf {name} holds PRNG key data this jax cannot wrap: {err}"
                ) from None
            found_dtype, found_shape = str(key.dtype), key.shape
        else:
            found_dtype, found_shape = str(array.dtype), array.shape
        if (found_shape, found_dtype) != (shape, dtype):
            problems.append(f"{name}: expected {dtype}{list(shape)}, found {found_dtype}{list(found_shape)}")
    if problems:
        raise TemplateMismatch(path, "does not match the template: " + "; ".join(problems))


def _flat_config(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {dotted key: JSON of the value}."""
    if isinstance(config, dict) and config:
        out = {}
        for k, v in config.items():
            out.update(_flat_config(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1] or "<config>": json.dumps(config, sort_keys=True)}


def _check_config(path: Path, saved: Any, expected: Any) -> None:
    a, b = _flat_config(saved), _flat_config(json.loads(_config_json(expected)))
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            diffs.append(f"{k} (not in the checkpoint; expected {b[k]})")
        elif k not in b:
            diffs.append(f"{k} (checkpoint has {a[k]}; not expected)")
        elif a[k] != b[k]:
            diffs.append(f"{k} (checkpoint has {a[k]}, expected {b[k]})")
    if diffs:
        raise CheckpointMismatch(path, "config mismatch in keys: " + "; ".join(diffs))


def restore(path: str | os.PathLike, template: Any, *, expect_config: Any = None) -> tuple[Any, Any, int]:
    """(state, config, step) from the checkpoint at ``path``.

    Args:
      path: a file written by `save`.
      template: a pytree with the expected structure, leaf shapes and dtypes: a freshly initialized
        state, or its `jax.eval_shape`. The restored state has the template's structure; a leaf is a
        jax array where the template has a jax array or ShapeDtypeStruct (weak type kept), a numpy
        array or scalar where it has one, a Python scalar where it has one.
      expect_config: if given, the saved config must equal it (after a JSON round trip).

    Raises:
      CheckpointError: naming the file and the cause (truncated, bad header, checksum mismatch,
        format version, missing or unexpected leaves, shape or dtype per leaf, config keys).
    """
    path = Path(path)
    metadata, tensors = _read(path)
    try:
        config, step = json.loads(metadata["config"]), int(metadata["step"])
        keys = json.loads(metadata["prng_keys"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(path, f"bad header: unreadable metadata ({err})") from None
    if expect_config is not None:
        _check_config(path, config, expect_config)
    named, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [leaf_name(p) for p, _ in named]
    template_leaves = [leaf for _, leaf in named]
    _check_leaves(path, names, template_leaves, tensors, keys)
    leaves = [restore_leaf(leaf, tensors[n], keys.get(n)) for n, leaf in zip(names, template_leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves), config, step


def read_config(path: str | os.PathLike) -> Any:
    """The config a checkpoint records (its checksum verified), without restoring any state."""
    path = Path(path)
    metadata, _ = _read(path)
    try:
        return json.loads(metadata["config"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(path, f"bad header: unreadable metadata ({err})") from None


def restore_latest(
    directory: str | os.PathLike, template: Any, *, expect_config: Any = None, skipped: list | None = None
) -> tuple[Any, Any, int] | None:
    """`restore` of the newest intact checkpoint in ``directory``; None when there is none.

    A corrupt checkpoint (truncated, bad header, checksum) is passed over for the next older one and
    its `CheckpointError` appended to ``skipped`` (name it to the user); nothing is deleted. When
    every checkpoint is corrupt, a `CheckpointError` names them all. A `CheckpointMismatch` (an intact
    checkpoint of another config or structure) is raised at once: it is not corruption.
    """
    paths = list_checkpoints(directory)
    errors = []
    for path in reversed(paths):
        try:
            restored = restore(path, template, expect_config=expect_config)
        except CheckpointMismatch:
            raise
        except CheckpointError as err:
            errors.append(err)
            continue
        if skipped is not None:
            skipped.extend(errors)
        return restored
    if errors:
        causes = "; ".join(f"{e.path}: {e.cause}" for e in errors)
        raise CheckpointError(
            errors[0].path, f"every checkpoint in {directory} is corrupt ({causes}); none was deleted"
        )
    return None


# ----------------------------------------------------------------------------------------- manager


@dataclasses.dataclass
class CheckpointManager:
    """When to checkpoint a training loop: every ``every_steps`` steps or ``every_minutes`` minutes.

    Example::

        manager = CheckpointManager(directory, every_steps=1000, every_minutes=30)
        restored = manager.restore_latest(init_state, expect_config=config)
        state, start = (init_state, 0) if restored is None else (restored[0], restored[2])
        for step in range(start + 1, num_steps + 1):
            state = outer_step(state)
            if manager.should_save(step) or step == num_steps:
                manager.save(step, state, config)
    """

    directory: str | os.PathLike  # where ckpt_{step:08d}.safetensors files go
    every_steps: int | None = None  # save when step % every_steps == 0; None: not by steps
    every_minutes: float | None = None  # save when this long passed since the last save; None: not by time
    keep: int | None = 3  # checkpoints kept (the latest ones); None keeps all
    last_step: int | None = None  # step of the last save (or restore)
    last_time: float = dataclasses.field(default_factory=time.monotonic)  # time.monotonic() of it

    def should_save(self, step: int, now: float | None = None) -> bool:
        """Whether ``step`` is due (never the step last saved or restored); ``now``: time.monotonic()."""
        if step == self.last_step:
            return False
        now = time.monotonic() if now is None else now
        by_steps = self.every_steps is not None and step % self.every_steps == 0
        by_time = self.every_minutes is not None and now - self.last_time >= 60 * self.every_minutes
        return by_steps or by_time

    def save(self, step: int, state: Any, config: Any = None, now: float | None = None) -> Path:
        """`save` into the directory, and remember the step and time."""
        path = save(self.directory, step, state, config, keep=self.keep)
        self.last_step, self.last_time = int(step), time.monotonic() if now is None else now
        return path

    def restore_latest(
        self, template: Any, *, expect_config: Any = None, skipped: list | None = None
    ) -> tuple[Any, Any, int] | None:
        """`restore_latest` from the directory; a restored step counts as saved."""
        restored = restore_latest(self.directory, template, expect_config=expect_config, skipped=skipped)
        if restored is not None:
            self.last_step, self.last_time = restored[2], time.monotonic()
        return restored
