"""What the report's figures share: a title wrapped to the figure's width, and writing a figure as
a PNG (Agg backend: headless), closing it either way."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (folders made) and close it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def wrap_title(text: str, width_in: float, fontsize: float = 10) -> tuple[str, float]:
    """``text`` with each line wrapped to a figure ``width_in`` inches wide (a long title over two
    panels would be cut at both edges), and the inches it takes at the top of the figure."""
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))  # ~0.55 em per character
    wrapped = "\n".join(textwrap.fill(line, chars) for line in text.splitlines())
    return wrapped, 0.1 + (wrapped.count("\n") + 1) * fontsize * 1.35 / 72
