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
