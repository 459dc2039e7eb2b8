"""The error a run stops with when its dataset is not where the config says."""

from __future__ import annotations

from pathlib import Path


class MissingDataError(FileNotFoundError):
    """A dataset that is not on disk; the message says what, where, and how to get it."""


def missing_data(name: str, tried: str | Path, expected: str, how: str, cause: BaseException | None = None) -> MissingDataError:
    reason = f" ({str(cause).splitlines()[0][:200]})" if cause else ""
    return MissingDataError(
        f"dataset {name} not found: looked in {tried}, expected {expected}{reason}. "
        f"To get it: {how}. Or point the run at an existing copy with `paths.data_dir=<dir>` "
        f"or `task.data.root=<dir>`."
    )


class DamagedDataError(ValueError):
    """A dataset file that is there but cannot be read as the dataset's format; the message names it."""


def damaged_data(name: str, path: str | Path, expected: str, cause: BaseException, how: str) -> DamagedDataError:
    text = str(cause.args[0]) if isinstance(cause, KeyError) and cause.args else str(cause)  # KeyError quotes it
    reason = f"{type(cause).__name__}: {text.splitlines()[0][:160]}" if text else type(cause).__name__
    return DamagedDataError(
        f"dataset {name}: {path} is damaged or not {expected} ({reason}). To fix it: {how}"
    )
