"""Reading config values with errors that name the key, before any work starts.

A bad value (wrong type, out of range) fails here with one line that names the key, not as a raw
``int()`` traceback or an hour into a run.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def plain(cfg: Any) -> Any:
    """OmegaConf node -> plain Python containers (resolved)."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def as_int(value: Any, key: str, *, minimum: int | None = None, allow: tuple[Any, ...] = ()) -> Any:
    """``value`` as an int (>= ``minimum``), or one of the ``allow`` values as they are."""
    if value in allow:
        return value
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{key}: must be an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: must be an integer{' or ' + ' / '.join(map(repr, allow)) if allow else ''}, "
                          f"got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}{' (or ' + ' / '.join(map(repr, allow)) + ')' if allow else ''}, got {number}")
    return number


def as_float(value: Any, key: str, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{key}: must be finite, got {value!r}")
    if positive and number <= 0:
        raise ConfigError(f"{key}: must be > 0, got {number:g}")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{key}: must be >= {minimum:g}, got {number:g}")
    return number


def as_bool(value: Any, key: str) -> bool:
    """``true`` / ``false`` (YAML booleans): a string such as "maybe" is truthy and would pass silently."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value
