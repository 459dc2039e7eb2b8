"""Bubble plots in the style of the paper's Figures 2-8: time vs metric, area ~ parameters.

One figure per paper table, one row per (setting, metric): our runs, the paper's rows (drawn
from the paper CSV even when we have no runs) and a memory bar panel; ours-only tables get the
same without the paper panel. Agg backend: works headless.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from onelora.reporting.paper import METRIC_LABELS  # noqa: E402
from onelora.reporting.tables import TableResult  # noqa: E402

MAX_AREA = 2000.0  # points^2 of the largest (non-outlier) bubble
MIN_AREA = 25.0
OUTLIER = 20.0  # counts this many times the median are capped (e.g. "full": 343M vs ~300K)


def _ok(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _area_scale(counts: list[float]) -> float:
    """Reference count for MAX_AREA: the largest count that is not an outlier."""
    counts = sorted(c for c in counts if _ok(c) and c > 0)
    if not counts:
        return 1.0
    median = counts[len(counts) // 2]
    regular = [c for c in counts if c <= OUTLIER * median]
    return max(regular) if regular else counts[-1]


def _areas(counts: list[Any], ref: float) -> tuple[list[float], list[bool]]:
    areas, capped = [], []
    for c in counts:
        if not _ok(c) or c <= 0:
            areas.append(MIN_AREA * 4)  # unknown count: a fixed mid-size marker
            capped.append(False)
            continue
        a = MAX_AREA * float(c) / ref
        capped.append(a > MAX_AREA * 1.25)
        areas.append(min(max(a, MIN_AREA), MAX_AREA * 1.25))
    return areas, capped


def _bubbles(ax, points: list[dict], ref: float, color: str, title: str, xlabel: str, ylabel: str, empty: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    areas, capped = _areas([p["params"] for p in points], ref)
    for p, a, cap in zip(points, areas, capped):
        ax.scatter(
            p["x"], p["y"], s=a, alpha=0.45, color=color,
            edgecolors="k", linewidths=0.8, linestyle="--" if cap else "-",
        )
        label = p["method"] + (" (size capped)" if cap else "")
        ax.annotate(label, (p["x"], p["y"]), fontsize=7, ha="center", va="bottom",
                    xytext=(0, math.sqrt(a) / 2 + 1), textcoords="offset points")
    xs = [p["x"] for p in points]
    ys = [p["y"] for p in points]
    _pad(ax.set_xlim, xs)
    _pad(ax.set_ylim, ys, top=0.3)  # room for the labels above the bubbles


def _pad(setter, values: list[float], top: float = 0.15) -> None:
    lo, hi = min(values), max(values)
    span = hi - lo or max(abs(hi), 1.0) * 0.1
    setter(lo - 0.15 * span, hi + top * span)


def _memory_bars(ax, methods: list[str], ours: list[Any], paper: list[Any] | None, ours_label: str) -> None:
    ax.set_title("peak memory", fontsize=10)
    ax.set_ylabel("GB")
    ax.grid(True, axis="y", alpha=0.3)
    if not methods or not any(_ok(v) for v in list(ours) + list(paper or [])):
        ax.text(0.5, 0.5, "no memory figures", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return
    xs = list(range(len(methods)))
    width = 0.4 if paper is not None else 0.7
    ours_vals = [float(v) if _ok(v) else 0.0 for v in ours]
    if paper is not None:
        ax.bar([x - width / 2 for x in xs], ours_vals, width, label=ours_label, color="tab:blue")
        ax.bar([x + width / 2 for x in xs], [float(v) if _ok(v) else 0.0 for v in paper], width,
               label="paper (% of 40 GB A100)", color="tab:orange")
    else:
        ax.bar(xs, ours_vals, width, label=ours_label, color="tab:blue")
    ax.set_xticks(xs)
    ax.set_xticklabels(methods, rotation=60, ha="right", fontsize=7)
    ax.legend(fontsize=7)


def _groups(rows: list[dict]) -> list[tuple[str, str, list[dict]]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["metric"]), []).append(r)
    return [(s, m, rs) for (s, m), rs in groups.items()]


def _device_label(rows: list[dict]) -> str:
    devices = sorted({r["ours_memory_device"] for r in rows if r.get("ours_memory_device")})
    return "ours" + (f" ({'/'.join(devices)})" if devices else "")


def plot_table(table: TableResult, path: Path) -> Path:
    """The bubble figure for one table (paper or ours-only) as a PNG."""
    groups = _groups(table.rows) or [("", "", [])]
    ncols = 3 if table.is_paper else 2
    fig, axes = plt.subplots(len(groups), ncols, figsize=(6 * ncols, 4.6 * len(groups)), squeeze=False)
    for ax_row, (setting, metric, rows) in zip(axes, groups):
        unit = rows[0]["time_unit"] if rows else "min"
        ylabel = METRIC_LABELS.get(metric, metric or "metric")
        if rows and rows[0].get("direction") in ("min", "max"):
            ylabel += " (lower is better)" if rows[0]["direction"] == "min" else " (higher is better)"
        ours = [
            {"x": r["ours_time"], "y": r["ours_mean"], "params": r["ours_params"], "method": r["method"]}
            for r in rows if _ok(r["ours_mean"]) and _ok(r["ours_time"])
        ]
        paper = [
            {"x": r["paper_time"], "y": r["paper_mean"], "params": r["paper_params"], "method": r["method"]}
            for r in rows if table.is_paper and _ok(r["paper_mean"]) and _ok(r["paper_time"])
        ]
        ref = _area_scale([p["params"] for p in ours + paper])
        where = f"{setting}, " if setting else ""
        _bubbles(ax_row[0], ours, ref, "tab:blue", f"ours: {where}{metric}", f"wall time ({unit})", ylabel,
                 "no runs yet")
        if table.is_paper:
            _bubbles(ax_row[1], paper, ref, "tab:orange", f"paper: {where}{metric}", f"time ({unit})", ylabel,
                     "no paper values")
            if ours and paper:  # one y scale, so the two panels compare at a glance
                lo = min(ax_row[0].get_ylim()[0], ax_row[1].get_ylim()[0])
                hi = max(ax_row[0].get_ylim()[1], ax_row[1].get_ylim()[1])
                ax_row[0].set_ylim(lo, hi)
                ax_row[1].set_ylim(lo, hi)
            _memory_bars(ax_row[2], [r["method"] for r in rows], [r["ours_memory_gb"] for r in rows],
                         [r["paper_memory_gb"] for r in rows], _device_label(rows))
        else:
            _memory_bars(ax_row[1], [r["method"] for r in rows], [r["ours_memory_gb"] for r in rows], None,
                         _device_label(rows))
    # fixed margins in inches (tight_layout costs more than the drawing itself)
    height = fig.get_figheight()
    fig.suptitle(table.title + "  (bubble area ∝ trainable parameters)", fontsize=11, y=1 - 0.12 / height,
                 va="top")
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.8 / height, bottom=1.15 / height,
                        wspace=0.25, hspace=1.5 / 3.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
