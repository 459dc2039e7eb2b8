"""File permissions as the user's umask says: libraries that write through temporary files
(``tempfile.mkstemp``, safetensors) leave 0600, which a teammate's report or shared cache cannot read."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path) -> None:
    """Give a written file the mode an ordinary ``open()`` would have given it."""
    os.chmod(path, 0o666 & ~current_umask())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` through a temporary file and a rename (a reader sees all of it or nothing),
    with the user's umask (not ``tempfile``'s 0600: a teammate sharing the folder reads it)."""
    import tempfile

    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as handle:
        handle.write(text)
    apply_umask(handle.name)
    os.replace(handle.name, path)
