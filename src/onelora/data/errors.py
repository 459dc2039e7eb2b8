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
