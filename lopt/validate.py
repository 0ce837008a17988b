"""Validation of user-facing configuration values, with errors that name the field and the fix."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is out of range or not one of the valid choices."""


def check_range(field: str, value: float, lo: float, hi: float) -> None:
    """Raise `ConfigError` unless ``lo <= value <= hi``."""
    if not (lo <= value <= hi):
        raise ConfigError(f"{field}={value!r} is out of range: it must be in [{lo}, {hi}].")


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise `ConfigError` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{field}={value!r} is not valid: choose one of {list(choices)}.")


def check_subset(field: str, values: Iterable[Any], choices: Iterable[Any]) -> None:
    """Raise `ConfigError` unless every element of ``values`` is one of ``choices`` and there is one."""
    values, choices = tuple(values), tuple(choices)
    if not values:
        raise ConfigError(f"{field} is empty: give at least one of {list(choices)}.")
    for v in values:
        if v not in choices:
            raise ConfigError(f"{field} contains {v!r}, which is not valid: choose from {list(choices)}.")


def check_interval(field: str, interval: tuple[float, float], lo: float, hi: float) -> None:
    """Raise `ConfigError` unless ``interval`` is (a, b) with ``lo <= a <= b <= hi``."""
    if len(interval) != 2 or not (lo <= interval[0] <= interval[1] <= hi):
        raise ConfigError(
            f"{field}={interval!r} is not a valid interval: it must be (a, b) with {lo} <= a <= b <= {hi}."
        )


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError's own __str__ would quote the whole message
        return str(self.args[0])


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UnknownNameError:
    """The error for an unknown registry name: it lists the valid names."""
    return UnknownNameError(f"unknown {kind} {name!r}; valid {kind} names are: {', '.join(sorted(valid))}")


def json_tuples(value: Any) -> Any:
    """JSON lists (nested) as tuples, so values are hashable like dataclass defaults."""
    return tuple(json_tuples(v) for v in value) if isinstance(value, list) else value
