"""Depth maps a reader looks at: a few fixed test images with the ground truth, the prediction and
its absolute error, for one run and for the methods of a grid side by side.

Each depth run saves its examples (``predictions/depth_examples.npz``, written by
``DepthModule.artifacts`` with the best round's weights: the same evenly spaced test indices for
every run of a task, whatever its seed) and draws :func:`run_figure` from them; the report draws
:func:`comparison_figure` from the saved files of several runs. Depths share one colour scale per
image (ground truth and every prediction, in metres) and so do the errors; pixels without a valid
ground truth (sky, out of range) and, for the error, pixels the metric does not evaluate (outside
the evaluation crop) are hatched, never coloured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onelora.figures.figtools import wrap_title  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

EXAMPLES_FILE = "predictions/depth_examples.npz"
DEPTH_CMAP = "plasma_r"  # near: yellow, far: dark blue
ERROR_CMAP = "inferno"
HATCH = {"facecolor": "0.88", "edgecolor": "0.55", "hatch": "////"}
CELL = 1.75  # inches per square image


def _cell(ex: dict[str, Any]) -> tuple[float, float]:
    """(width, height) in inches of one image panel: wide images (KITTI's 352 x 1216) get wider,
    lower panels rather than thin strips."""
    h, w = ex["depth"].shape[-2:]
    width = CELL * min(max(w / h, 1.0), 1.8)
    return width, width * h / w


def example_indices(n_images: int, count: int) -> list[int]:
    """``count`` evenly spaced indices of a test set of ``n_images`` (first and last included):
    fixed by the test set alone, so every run of a task shows the same images."""
    if n_images <= 0 or count <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, n_images - 1, min(count, n_images))})


def save_examples(path: str | Path, *, indices: Sequence[int], rgb: np.ndarray, depth: np.ndarray,
                  valid: np.ndarray, evaluated: np.ndarray, pred: np.ndarray, min_depth: float,
                  max_depth: float) -> Path:
    """Write the examples: ``rgb`` (k,H,W,3) in [0, 1], ``depth`` / ``pred`` (k,H,W) metres (the
    prediction at the ground truth's resolution, clamped as the metric clamps it), ``valid`` the
    pixels with a ground truth in range, ``evaluated`` those the metric counts (valid and inside
    the evaluation crop). Depths as float16 and RGB as uint8 keep a real KITTI run's file small."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, indices=np.asarray(indices, dtype=np.int64),
        rgb=np.clip(np.asarray(rgb) * 255.0 + 0.5, 0, 255).astype(np.uint8),
        depth=np.nan_to_num(np.asarray(depth, dtype=np.float32)).astype(np.float16),
        pred=np.asarray(pred, dtype=np.float32).astype(np.float16),
        valid=np.asarray(valid, dtype=bool), evaluated=np.asarray(evaluated, dtype=bool),
        min_depth=np.float64(min_depth), max_depth=np.float64(max_depth),
    )
    return path


def load_examples(path: str | Path) -> dict[str, Any]:
    """The arrays of :func:`save_examples` (depths as float32), plus each image's RMSE and AbsRel
    over its evaluated pixels."""
    with np.load(path) as f:
        ex = {k: f[k] for k in f.files}
    for key in ("depth", "pred"):
        ex[key] = ex[key].astype(np.float32)
    ex["image_rmse"], ex["image_absrel"] = image_errors(ex)
    return ex


def image_errors(ex: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: RMSE (m) and AbsRel over the evaluated pixels (NaN for an image without any)."""
    rmse, absrel = [], []
    for gt, pr, mask in zip(ex["depth"], ex["pred"], ex["evaluated"]):
        if not mask.any():
            rmse.append(np.nan)
            absrel.append(np.nan)
            continue
        g, p = gt[mask].astype(np.float64), pr[mask].astype(np.float64)
        rmse.append(float(np.sqrt(np.mean((g - p) ** 2))))
        absrel.append(float(np.mean(np.abs(g - p) / g)))
    return np.array(rmse), np.array(absrel)


def _depth_range(ex_list: Sequence[dict[str, Any]], i: int) -> tuple[float, float]:
    """One colour scale for image ``i``: 0 to the largest valid ground-truth depth."""
    ex = ex_list[0]
    gt = ex["depth"][i][ex["valid"][i]]
    return 0.0, float(gt.max()) if gt.size else float(ex["max_depth"])


def _error_max(ex_list: Sequence[dict[str, Any]], i: int) -> float:
    """The error scale of image ``i``: the 98th percentile over every shown prediction (a few
    outliers would wash the rest out; the colour bar's arrow marks the clipped ones)."""
    errors = [np.abs(ex["pred"][i] - ex["depth"][i])[ex["evaluated"][i]] for ex in ex_list]
    errors = np.concatenate([e for e in errors if e.size]) if any(e.size for e in errors) else np.zeros(1)
    return max(float(np.percentile(errors, 98)), 1e-6)


def _hatched(ax) -> None:
    """A hatched background: what an image leaves transparent (masked pixels) shows it."""
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, zorder=0, **HATCH))
    ax.set_xticks([])
    ax.set_yticks([])


def _show(ax, image: np.ndarray, cmap: str | None = None, vmin: float | None = None, vmax: float | None = None,
          mask: np.ndarray | None = None):
    """``image`` with the pixels outside ``mask`` masked (transparent over the hatching)."""
    _hatched(ax)
    if cmap is None:
        return ax.imshow(image, interpolation="nearest", zorder=1)
    colors = plt.get_cmap(cmap).with_extremes(bad=(0, 0, 0, 0))
    data = np.ma.masked_array(image, mask=~mask) if mask is not None else image
    return ax.imshow(data, cmap=colors, vmin=vmin, vmax=vmax, interpolation="nearest", zorder=1)


def _invalid_legend(fig) -> None:
    fig.legend(handles=[Patch(label="no valid ground truth (depth) / not evaluated (error)", **HATCH)],
               loc="lower center", fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))


def run_figure(ex: dict[str, Any], title: str) -> plt.Figure:
    """One run: per example image a row of RGB, ground truth, prediction (one depth scale, with its
    colour bar in metres) and absolute error (its own scale and colour bar, metres)."""
    k = len(ex["indices"])
    cw, ch = _cell(ex)
    title, head = wrap_title(title, 4 * cw + 2.2)
    fig = plt.figure(figsize=(4 * cw + 2.2, k * (ch + 0.25) + head + 0.75))
    height = fig.get_figheight()
    # columns: RGB, ground truth, prediction, depth bar, a gap for its label, error, error bar
    grid = fig.add_gridspec(k, 7, width_ratios=[1, 1, 1, 0.07, 0.3, 1, 0.07], left=0.03, right=0.93,
                            top=1 - (head + 0.3) / height, bottom=0.45 / height, wspace=0.12, hspace=0.22)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    for i in range(k):
        lo, hi = _depth_range([ex], i)
        top = _error_max([ex], i)
        index = int(ex["indices"][i])
        axes = [fig.add_subplot(grid[i, c]) for c in (0, 1, 2, 5)]
        _show(axes[0], ex["rgb"][i])
        _show(axes[1], ex["depth"][i], DEPTH_CMAP, lo, hi, ex["valid"][i])
        im = _show(axes[2], ex["pred"][i], DEPTH_CMAP, lo, hi)
        err = _show(axes[3], np.abs(ex["pred"][i] - ex["depth"][i]), ERROR_CMAP, 0.0, top, ex["evaluated"][i])
        fig.colorbar(im, cax=fig.add_subplot(grid[i, 3])).set_label("depth (m)", fontsize=7)
        fig.colorbar(err, cax=fig.add_subplot(grid[i, 6]), extend="max").set_label("|error| (m)", fontsize=7)
        axes[0].set_ylabel(f"test image {index}", fontsize=8)
        axes[3].set_xlabel(f"RMSE {ex['image_rmse'][i]:.3g} m, AbsRel {ex['image_absrel'][i]:.3g}", fontsize=7)
        if i == 0:
            for ax, name in zip(axes, ("RGB", "ground truth", "prediction", "absolute error")):
                ax.set_title(name, fontsize=9)
    _invalid_legend(fig)
    return fig


def comparison_figure(columns: Sequence[tuple[str, dict[str, Any]]], title: str, images: int = 3) -> plt.Figure:
    """The methods of a grid side by side on the same test images: per image a row of
    predictions (RGB and ground truth first; one depth scale with its colour bar) and below it a
    row of their absolute errors (one error scale). ``columns``: (panel title, examples) per
    method, e.g. ("1LoRA\\nRMSE 6.94 · AbsRel 0.380", ...); every examples dict must hold the
    same test indices."""
    exs = [ex for _, ex in columns]
    first = exs[0]
    for (name, ex) in columns[1:]:
        if not np.array_equal(ex["indices"], first["indices"]):
            raise ValueError(f"{name.splitlines()[0]}: other test images ({list(ex['indices'])}) than "
                             f"{columns[0][0].splitlines()[0]} ({list(first['indices'])})")
    k = min(images, len(first["indices"]))
    m = len(columns)
    cw, ch = _cell(first)
    title, head = wrap_title(title, (m + 2) * cw + 1.0)
    fig = plt.figure(figsize=((m + 2) * cw + 1.0, 2 * k * (ch + 0.25) + head + 0.95))
    height = fig.get_figheight()
    grid = fig.add_gridspec(2 * k, m + 3, width_ratios=[1] * (m + 2) + [0.07], left=0.02, right=0.95,
                            top=1 - (head + 0.5) / height, bottom=0.45 / height, wspace=0.1, hspace=0.28)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    for i in range(k):
        lo, hi = _depth_range(exs, i)
        top = _error_max(exs, i)
        r = 2 * i
        rgb_ax, gt_ax = fig.add_subplot(grid[r, 0]), fig.add_subplot(grid[r, 1])
        _show(rgb_ax, first["rgb"][i])
        _show(gt_ax, first["depth"][i], DEPTH_CMAP, lo, hi, first["valid"][i])
        rgb_ax.set_ylabel(f"test image {int(first['indices'][i])}", fontsize=8)
        note = fig.add_subplot(grid[r + 1, 0:2])
        note.axis("off")
        note.text(0.5, 0.5, f"test image {int(first['indices'][i])}:\nprediction (above),\n|error| (below)",
                  ha="center", va="center", fontsize=8, color="0.3", transform=note.transAxes)
        for j, (name, ex) in enumerate(columns):
            pax, eax = fig.add_subplot(grid[r, j + 2]), fig.add_subplot(grid[r + 1, j + 2])
            im = _show(pax, ex["pred"][i], DEPTH_CMAP, lo, hi)
            err = _show(eax, np.abs(ex["pred"][i] - ex["depth"][i]), ERROR_CMAP, 0.0, top, ex["evaluated"][i])
            eax.set_xlabel(f"RMSE {ex['image_rmse'][i]:.3g} m", fontsize=7)
            if i == 0:
                pax.set_title(name, fontsize=8)
        if i == 0:
            rgb_ax.set_title("RGB", fontsize=8)
            gt_ax.set_title("ground truth", fontsize=8)
        fig.colorbar(im, cax=fig.add_subplot(grid[r, -1])).set_label("depth (m)", fontsize=7)
        fig.colorbar(err, cax=fig.add_subplot(grid[r + 1, -1]), extend="max").set_label("|error| (m)", fontsize=7)
    _invalid_legend(fig)
    return fig
