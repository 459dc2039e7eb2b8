"""Sample grids a reader looks at: one row per class label, for one run and for the methods of a
grid side by side.

Each generation run saves its grid's samples (``predictions/samples.npz``, written by
``GenerationModule.artifacts`` with the best round's weights): the same class labels and the same
sampling seed for every run of a task, whatever its own seed, so that with deterministic DDIM the
grids of two runs differ only by their weights. :func:`grid_figure` draws one run (titled with its
method, step and FID); :func:`comparison_figure` draws several, one panel per method, FID under each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onelora.figures.figtools import wrap_title  # noqa: E402

SAMPLES_FILE = "predictions/samples.npz"
PAD = 1  # white pixels between two samples of a grid
PANEL_WIDTH = 3.2  # inches of one method's grid in a comparison


def save_samples(path: str | Path, images: Any, labels: Sequence[int], columns: int, seed: int) -> Path:
    """``images`` (N,C,H,W) in [-1, 1], row-major ``columns`` per class row, as uint8 (N,H,W,C);
    ``labels`` their class labels and ``seed`` the sampling seed (what makes grids comparable)."""
    array = np.asarray(images, dtype=np.float32)
    array = np.clip((array + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=array, labels=np.asarray(labels, dtype=np.int64),
                        columns=np.int64(columns), seed=np.int64(seed))
    return path


def load_samples(path: str | Path) -> dict[str, Any]:
    with np.load(path) as f:
        return {"images": f["images"], "labels": f["labels"], "columns": int(f["columns"]), "seed": int(f["seed"])}


def tile(samples: dict[str, Any], rows: int | None = None, columns: int | None = None) -> np.ndarray:
    """The grid as one image (H,W,C) on white: the first ``rows`` class rows, ``columns`` each."""
    images, per_row = samples["images"], samples["columns"]
    n_rows = len(images) // per_row
    rows, columns = min(rows or n_rows, n_rows), min(columns or per_row, per_row)
    h, w, c = images.shape[1:]
    out = np.full((rows * (h + PAD) + PAD, columns * (w + PAD) + PAD, c), 255, dtype=np.uint8)
    for r in range(rows):
        for col in range(columns):
            y, x = PAD + r * (h + PAD), PAD + col * (w + PAD)
            out[y:y + h, x:x + w] = images[r * per_row + col]
    return out


def _draw(ax, samples: dict[str, Any], rows: int | None = None, columns: int | None = None) -> None:
    image = tile(samples, rows, columns)
    gray = image.shape[-1] == 1
    ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255,
              interpolation="nearest")
    h = samples["images"].shape[1]
    n_rows = (image.shape[0] - PAD) // (h + PAD)
    labels = samples["labels"][:: samples["columns"]][:n_rows]
    ax.set_yticks([PAD + r * (h + PAD) + h / 2 for r in range(n_rows)])
    ax.set_yticklabels([f"label {int(k)}" for k in labels], fontsize=7)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)


def grid_figure(samples: dict[str, Any], title: str) -> plt.Figure:
    """One run's grid: one row per class label, titled (method, step, FID)."""
    image = tile(samples)
    width = 6.0
    title, top = wrap_title(title, width)
    fig = plt.figure(figsize=(width, width * 0.85 * image.shape[0] / image.shape[1] + top + 0.15))
    height = fig.get_figheight()
    ax = fig.add_axes((0.12, 0.1 / height, 0.85, 1 - (top + 0.15) / height))
    _draw(ax, samples)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return fig


def comparison_figure(panels: Sequence[tuple[str, str, dict[str, Any]]], title: str, rows: int = 8,
                      columns: int = 8) -> plt.Figure:
    """The methods' grids side by side: ``panels`` of (title, caption under it, samples), each
    cut to ``rows`` class rows x ``columns`` samples."""
    first = tile(panels[0][2], rows, columns)
    n = len(panels)
    lines = -(-n // 4)  # at most 4 grids a line, the lines as even as can be (6: 3 + 3)
    per_row = -(-n // lines)
    height = PANEL_WIDTH * first.shape[0] / first.shape[1]
    width = max(per_row, 3) * PANEL_WIDTH + 0.8  # room for the title under few panels
    title, top = wrap_title(title, width)
    fig = plt.figure(figsize=(width, lines * (height + 0.75) + top + 0.4))
    total = fig.get_figheight()
    grid = fig.add_gridspec(lines, per_row, left=0.07, right=0.07 + (1 - 0.08) * per_row / max(per_row, 3),
                            top=1 - (top + 0.3) / total, bottom=0.4 / total, wspace=0.15, hspace=0.3)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / total, va="top")
    for i, (name, caption, samples) in enumerate(panels):
        ax = fig.add_subplot(grid[i // per_row, i % per_row])
        _draw(ax, samples, rows, columns)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(caption, fontsize=9)
        if i % per_row:
            ax.set_yticklabels([])
    return fig
