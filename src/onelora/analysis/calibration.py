"""Fig. 11: error distribution and calibration of classification runs (full, LoRA r=1, 1LoRA).

Reads each run's ``predictions/val.npz`` (validation logits and labels of the best round's
weights) and draws, side by side, the distribution of the per-sample validation error (the
cross-entropy -log p(true), on a log axis) and one reliability diagram per run: accuracy against
confidence (the top class's probability) in equal-width bins, with the expected calibration
error ECE = sum_b (n_b / N) |accuracy_b - confidence_b|.

    python -m onelora.analysis calibration <run_dir> [<run_dir> ...] --bins 15 --out <dir> [--pool]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import log_softmax

from onelora.analysis import rundir
from onelora.reporting.paper import FAMILY_COLORS, method_family

#: cross-entropies below this are drawn at it (a float32 softmax saturates at exactly 1)
MIN_ERROR = 1e-8


@dataclass
class Reliability:
    """Per equal-width confidence bin (``edges``: B + 1 values from 0 to 1; bin b is
    (edges[b], edges[b+1]], the first also holds 0): sample count, accuracy, mean confidence."""

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray  # NaN in empty bins
    confidence: np.ndarray  # NaN in empty bins

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence| over bins."""
        full = self.counts > 0
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float(np.sum(self.counts[full] * gaps) / total)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> Reliability:
    """Bin the predictions by confidence (equal width, right-closed, as sklearn's calibration_curve)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(index, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / counts
    return Reliability(edges, counts, accuracy, mean_conf)


@dataclass
class RunCalibration:
    """One run's validation predictions, summarised."""

    run_dir: str
    label: str
    method: str
    errors: np.ndarray  # per-sample cross-entropy
    reliability: Reliability

    @property
    def n(self) -> int:
        return int(self.errors.size)

    def summary(self) -> dict:
        rel = self.reliability
        return {
            "run_dir": self.run_dir, "label": self.label, "method": self.method, "n": self.n,
            "accuracy": float(np.sum(rel.counts * np.nan_to_num(rel.accuracy)) / max(self.n, 1)),
            "mean_confidence": float(np.sum(rel.counts * np.nan_to_num(rel.confidence)) / max(self.n, 1)),
            "nll": float(np.mean(self.errors)), "median_error": float(np.median(self.errors)), "ece": rel.ece,
            "bins": {"edges": rel.edges.tolist(), "counts": rel.counts.tolist(),
                     "accuracy": [None if np.isnan(v) else float(v) for v in rel.accuracy],
                     "confidence": [None if np.isnan(v) else float(v) for v in rel.confidence]},
        }


def calibrate(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> tuple[np.ndarray, Reliability]:
    """(per-sample cross-entropy, reliability of the top-class confidence) of one run's predictions."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    errors = -log_p[np.arange(len(labels)), labels]
    confidence = np.exp(log_p.max(axis=1))
    correct = log_p.argmax(axis=1) == labels
    return errors, reliability(confidence, correct, bins)


def analyse(run_dirs: list[str | Path], bins: int = 15, pool: bool = False) -> list[RunCalibration]:
    """One entry per run; with ``pool``, one per method, its runs' predictions concatenated (the
    seeds of one method share the validation split, so pooling gives the diagram more samples)."""
    loaded: dict[str, list] = {}
    for run_dir in run_dirs:
        logits, labels = rundir.load_predictions(run_dir)
        try:
            record = rundir.read_record(run_dir)
        except rundir.RunDirError:
            record = {}
        key = str(record.get("method") or run_dir) if pool else str(run_dir)
        loaded.setdefault(key, []).append((str(run_dir), record, logits, labels))
    runs = []
    for entries in loaded.values():
        run_dir, record = entries[0][0], entries[0][1]
        if len({e[2].shape[1] for e in entries}) > 1:
            raise rundir.RunDirError(f"runs {[e[0] for e in entries]} have different numbers of classes: not pooled")
        logits = np.concatenate([e[2] for e in entries])
        labels = np.concatenate([e[3] for e in entries])
        errors, rel = calibrate(logits, labels, bins)
        label = rundir.run_label(run_dir, record or None)
        if len(entries) > 1:
            label += f" ({len(entries)} runs pooled)"
            run_dir = ";".join(e[0] for e in entries)
        runs.append(RunCalibration(run_dir, label, str(record.get("method") or ""), errors, rel))
    labels = [r.label for r in runs]
    for r in runs:  # two seeds of one method: tell them apart
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({Path(r.run_dir).name})"
    return runs


def plot(runs: list[RunCalibration], path: str | Path, title: str = "") -> Path:
    """Fig. 11's layout: the error histograms (log x) of all runs, then a reliability diagram per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(runs), figsize=(4.2 * (1 + len(runs)), 3.9), squeeze=False)
    ax = axes[0][0]
    errors = np.concatenate([np.maximum(r.errors, MIN_ERROR) for r in runs])
    edges = np.logspace(np.log10(errors.min()), np.log10(max(errors.max(), errors.min() * 10)), 40)
    for r in runs:
        ax.hist(np.maximum(r.errors, MIN_ERROR), bins=edges, histtype="step", linewidth=1.5,
                color=_color(r), label=f"{r.label} (NLL {np.mean(r.errors):.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("per-sample validation error (cross-entropy, log)")
    ax.set_ylabel("samples")
    ax.set_title("error distribution", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    for ax, r in zip(axes[0][1:], runs):
        rel = r.reliability
        full = rel.counts > 0
        centers = (rel.edges[:-1] + rel.edges[1:]) / 2
        width = rel.edges[1] - rel.edges[0]
        ax.bar(centers[full], rel.accuracy[full], width=width, color=_color(r), alpha=0.7, edgecolor="k",
               linewidth=0.5, label="accuracy")
        ax.bar(centers[full], rel.confidence[full] - rel.accuracy[full], bottom=rel.accuracy[full], width=width,
               color="none", edgecolor="tab:red", hatch="//", linewidth=0.5, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{r.label}: ECE {100 * rel.ece:.2f}% ({len(rel.counts)} bins, n={r.n})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title or "Calibration on the validation split", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _color(run: RunCalibration) -> str:
    return FAMILY_COLORS[method_family(run.method)] if run.method else "0.3"


def markdown(summaries: list[dict], bins: int) -> str:
    lines = [
        "# Calibration (Fig. 11)", "",
        f"Validation predictions of the best round's weights; ECE over {bins} equal-width confidence bins; "
        "NLL = mean per-sample cross-entropy.", "",
        "| run | method | n | accuracy (%) | mean confidence (%) | NLL | median error | ECE (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(f"| `{s['run_dir'].replace(';', '`, `')}` | {s['label']} | {s['n']} | {100 * s['accuracy']:.2f} | "
                     f"{100 * s['mean_confidence']:.2f} | {s['nll']:.4f} | {s['median_error']:.2e} | {100 * s['ece']:.2f} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories with predictions/val.npz (e.g. full, lora, onelora)")
    parser.add_argument("--bins", type=int, default=15, help="equal-width confidence bins for the ECE (default 15)")
    parser.add_argument("--out", default="reports", help="output folder (default: reports/)")
    parser.add_argument("--pool", action="store_true",
                        help="pool the runs of one method (e.g. its seeds) into one error histogram and diagram")
    parser.add_argument("--name", default="calibration", help="file name stem of the outputs")


def run(args: argparse.Namespace) -> int:
    if args.bins < 1:
        raise SystemExit(f"--bins must be >= 1, got {args.bins}")
    runs = analyse(args.runs, args.bins, args.pool)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(runs, out / f"{args.name}.png")
    summaries = [r.summary() for r in runs]
    (out / f"{args.name}.json").write_text(json.dumps({"bins": args.bins, "runs": summaries}, indent=1))
    (out / f"{args.name}.md").write_text(markdown(summaries, args.bins))
    for s in summaries:
        print(f"{s['label']:<24} n={s['n']:<5} acc {100 * s['accuracy']:6.2f}%  NLL {s['nll']:.4f}  "
              f"ECE {100 * s['ece']:.2f}%")
    print(f"-> {png}, {out / (args.name + '.json')}, {out / (args.name + '.md')}")
    return 0
