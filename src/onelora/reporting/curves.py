"""Loss curves of several methods on one figure, from the CSV logs every run keeps
(``<run_dir>/logs/version_N/metrics.csv``, one version per attempt: a resumed run's attempts are
joined, the later one winning a step both logged).

Left: the training loss (a running mean over the logged steps), right: the validation metric per
round; the mean over a method's seeds, their range as a band. A run that trained nothing (the
un-adapted model, ``mode=eval``) has one validation value: a dashed line across the right panel.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from onelora.reporting.paper import FAMILY_COLORS, method_family  # noqa: E402

LINESTYLES = ("-", "--", "-.", ":")  # methods of one family (one colour) told apart
SMOOTH_POINTS = 40  # the running mean spans about 1/SMOOTH_POINTS of a run's logged steps


def read_logged(run_dir: str | Path, key: str) -> dict[int, float]:
    """step -> value of ``key`` over every attempt's ``metrics.csv`` (finite values only)."""
    series: dict[int, float] = {}
    versions = sorted(Path(run_dir).glob("logs/version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[-1]) if p.parent.name.split("_")[-1].isdigit() else 0)
    for path in versions:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                value, step = row.get(key), row.get("step")
                if value in (None, "") or step in (None, ""):
                    continue
                v = float(value)
                if math.isfinite(v):
                    series[int(float(step))] = v
    return dict(sorted(series.items()))


def running_mean(values: Sequence[float], window: int) -> np.ndarray:
    """The mean of the last ``window`` values at each point (fewer at the start)."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(x) == 0:
        return x
    sums = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def _across_seeds(series: list[dict[int, float]], smooth: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over the seeds' series, on the steps every seed logged."""
    common = sorted(set.intersection(*(set(s) for s in series)))
    if smooth:
        window = max(1, len(common) // SMOOTH_POINTS)
        values = np.stack([running_mean([s[k] for k in common], window) for s in series])
    else:
        values = np.stack([[s[k] for k in common] for s in series])
    return np.array(common), values.mean(0), values.min(0), values.max(0)


def _plain_log_ticks(ax) -> None:
    """Log-scale ticks as plain numbers (0.6, 1, 2): every minor tick labelled on an axis spanning
    less than a decade, else the 2x, 3x and 5x ones."""
    def minor(value: float, _pos: object) -> str:
        lo, hi = ax.get_ylim()
        leading = round(value / 10 ** math.floor(math.log10(value)), 6)
        return f"{value:g}" if hi / lo < 10 or leading in (2, 3, 5) else ""

    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(minor))
    ax.tick_params(axis="y", which="both", labelsize=8)


def loss_curves_figure(methods: Sequence[tuple[str, str, list[Path]]], title: str, train_key: str = "train/loss",
                       val_key: str = "val/loss", val_name: str = "validation loss") -> plt.Figure:
    """``methods``: (method, label, its runs' directories) in drawing order."""
    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(12.5, 4.8))
    fig.subplots_adjust(left=0.07, right=0.82, top=0.86, bottom=0.12, wspace=0.25)
    fig.suptitle(title, fontsize=10)
    styles: dict[str, int] = {}
    for method, label, dirs in methods:
        family = method_family(method)
        color = FAMILY_COLORS[family]
        style = LINESTYLES[styles.get(family, 0) % len(LINESTYLES)]
        styles[family] = styles.get(family, 0) + 1
        seeds = f" (n={len(dirs)})" if len(dirs) > 1 else ""
        train = [s for s in (read_logged(d, train_key) for d in dirs) if s]
        val = [s for s in (read_logged(d, val_key) for d in dirs) if s]
        if train and set.intersection(*(set(s) for s in train)):
            steps, mean, lo, hi = _across_seeds(train, smooth=True)
            train_ax.plot(steps, mean, color=color, linestyle=style, linewidth=1.3, label=label + seeds)
            if len(train) > 1:
                train_ax.fill_between(steps, lo, hi, color=color, alpha=0.12, linewidth=0)
        if not val or not set.intersection(*(set(s) for s in val)):
            continue
        steps, mean, lo, hi = _across_seeds(val, smooth=False)
        if not train and len(steps) == 1:  # evaluated as loaded: one value, no curve
            val_ax.axhline(mean[0], color=color, linestyle="--", linewidth=1.2,
                           label=f"{label}{seeds} (no training: {mean[0]:.3g})")
            continue
        val_ax.plot(steps, mean, color=color, linestyle=style, marker="o", markersize=3, linewidth=1.3,
                    label=label + seeds)
        if len(val) > 1:
            val_ax.fill_between(steps, lo, hi, color=color, alpha=0.12, linewidth=0)
    train_ax.set_title(f"training loss (running mean over ~1/{SMOOTH_POINTS} of the steps)", fontsize=9)
    val_ax.set_title(f"{val_name}, every validation round", fontsize=9)
    for ax, name in ((train_ax, "training loss"), (val_ax, val_name)):
        ax.set_xlabel("optimizer step", fontsize=9)
        ax.set_ylabel(f"{name} (log scale)", fontsize=9)
        ax.grid(True, alpha=0.3, which="both")
        if ax.lines and all(np.min(line.get_ydata()) > 0 for line in ax.lines if len(line.get_ydata())):
            ax.set_yscale("log")
            _plain_log_ticks(ax)
    legend: dict[str, object] = {}  # one entry per method: its validation line, else its training line
    for ax in (val_ax, train_ax):
        for handle, text in zip(*ax.get_legend_handles_labels()):
            if text.split(" (no training")[0] not in {t.split(" (no training")[0] for t in legend}:
                legend[text] = handle
    if legend:
        handles, labels = list(legend.values()), list(legend)
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.83, 0.5), fontsize=8,
                   title="mean over seeds, range shaded", title_fontsize=7)
    return fig
