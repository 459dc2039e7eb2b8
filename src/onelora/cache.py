"""Files built once and then shared: by the parallel runs of a sweep, and by the users of a team's cache.

A complete copy is used as it is, read-only: using it takes no lock and no write access (a
teammate's cache, files 644 in folders 755). Only building takes the lock ``.<name>.lock`` next to
it, so parallel runs build once; when a build is needed where this user cannot write, it stops
before any work with one line that says so and how to fix it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .places import PROBLEMS, PlaceError, _user


class CacheNotWritableError(PlaceError):
    """Something must be built in a shared folder this user cannot write to."""


def build_once(path: str | Path, build: Callable[[Path], None], *, complete: Callable[[Path], bool],
               what: str, place: str = "paths.cache_dir=<dir> (or ONELORA_CACHE=<dir>)") -> Path:
    """``path`` if ``complete(path)``; else ``build(path)`` under the lock, once across processes.

    ``build`` writes ``path`` atomically (a temporary name, then a rename), so a reader without the
    lock never sees half a file. ``what`` names the thing in messages, ``place`` the setting that
    points elsewhere."""
    path = Path(path)
    if complete(path):  # another user's copy, or one built by a run that has finished
        return path
    with _build_lock(path, what, place):
        if not complete(path):  # else a parallel run built it while this one waited
            _check_writable(path.parent, path, what, place)
            build(path)
    return path


@contextmanager
def _build_lock(path: Path, what: str, place: str) -> Iterator[None]:
    lock = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            if not lock.exists():
                raise
            fd = os.open(lock, os.O_RDONLY)  # another user's lock file (644): flock needs no write access to it
    except OSError as err:
        raise _not_writable(path, what, place, err) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_writable(folder: Path, path: Path, what: str, place: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".onelora-write-check-"):
            pass
    except OSError as err:
        raise _not_writable(path, what, place, err) from None


def _not_writable(path: Path, what: str, place: str, err: OSError) -> CacheNotWritableError:
    state = "is damaged" if path.exists() else "is not built yet"
    problem = PROBLEMS.get(err.errno, os.strerror(err.errno or errno.EIO))
    if err.errno in (errno.EACCES, errno.EPERM):
        problem += f" for user {_user()}"
    return CacheNotWritableError(
        f"{path} ({what}) {state}, and building it needs to write in {path.parent}: {problem}. "
        f"Build it once as a user who can write there (the same command), make the folder writable for your "
        f"group (chmod -R g+w), or use a folder of your own: {place}"
    )
