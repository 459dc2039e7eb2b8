"""The paper's numbers (Table 2 and Tables S1-S12), read from the CSVs shipped as package data.

Everything the report compares against comes from here, so the comparison never depends on a
checkout of ``/work/shared``. The paper prints parameter counts as strings ("331.78K"); they are
parsed into numbers here, and our counts are formatted the same way so the two can be compared
as printed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from io import StringIO

import pandas as pd

RESULTS_CSV = "paper_results.csv"
ABSREL_CSV = "paper_absrel.csv"

#: the A100's memory the paper's percentages refer to (bytes; "40GB" = 40 GiB of HBM)
A100_BYTES = 40 * 2**30

#: paper table ids in the order the report lists them
TABLE_ORDER = ("2", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12")


@dataclass(frozen=True)
class TableSpec:
    """What a paper table is about: the report's heading and the figure it belongs to."""

    id: str
    title: str
    figure: str | None = None

    @property
    def name(self) -> str:
        return f"Table {self.id}"

    @property
    def slug(self) -> str:
        return f"table_{self.id}"


TABLES: dict[str, TableSpec] = {
    "2": TableSpec("2", "Depth Anything ViT-L: RMSE and AbsRel, KITTI ↔ NYU"),
    "S1": TableSpec("S1", "Depth Anything: 1LoRA vs a random compression vector (ablation)"),
    "S2": TableSpec("S2", "Depth Anything ViT-L, KITTI → NYU", "2a"),
    "S3": TableSpec("S3", "Depth Anything ViT-L, NYU → KITTI", "2b"),
    "S4": TableSpec("S4", "Depth Anything ViT-L, KITTI → DIODE outdoor", "2c"),
    "S5": TableSpec("S5", "Depth Anything ViT-L, NYU → DIODE outdoor", "2d"),
    "S6": TableSpec("S6", "LLaMA-2 7B on MetaMathQA (validation loss)", "3"),
    "S7": TableSpec("S7", "LLaMA-2 13B on MetaMathQA (validation loss)", "4"),
    "S8": TableSpec("S8", "DiT-XL/2, ImageNet → Food-101 (FID)", "5"),
    "S9": TableSpec("S9", "ViT-Base, ImageNet-21k → CIFAR-10", "6"),
    "S10": TableSpec("S10", "ViT-Base, ImageNet-21k → CIFAR-100", "7"),
    "S11": TableSpec("S11", "Depth Anything: 1LoRA combined with BitFit/DiffFit parts, NYU → KITTI", "10"),
    "S12": TableSpec("S12", "ViT-Base: 1LoRA combined with BitFit/DiffFit parts, CIFAR-10", "8"),
}

#: notes printed under a table: known inconsistencies of the paper itself
TABLE_NOTES: dict[str, list[str]] = {
    "2": [
        "RMSE and time/memory/params are taken from Tables S2/S3 (same runs). Table 2 prints "
        "LoRA NYU → KITTI RMSE as 2.353, Table S3 as 2.253; 2.253 is used here.",
        "DiffFit's AbsRel has no std in the paper.",
    ],
    "S8": ["The paper's DiT results are single runs (no std); time in hours."],
    "S9": ["The paper's parameter counts for ViT-Base are 4x one model's (likely summed over 4 "
           "data-parallel ranks); 'yes (x4)' in the params-match column marks that case."],
    "S10": ["Parameter counts: see Table S9 (4x one model's)."],
    "S11": ["Captioned KITTI → NYU in the paper, but its values equal NYU → KITTI (Table S3); "
            "matched here as NYU → KITTI."],
    "S12": ["Parameter counts: see Table S9 (4x one model's)."],
}

#: metric display names
METRIC_LABELS = {
    "accuracy": "accuracy (%)",
    "rmse": "RMSE",
    "absrel": "AbsRel",
    "val_loss": "validation loss",
    "fid": "FID",
}

#: paper metric name -> names our records may use for it (``metric.name`` or ``metrics`` keys)
METRIC_ALIASES = {
    "absrel": ("abs_rel", "absrel"),
    "accuracy": ("accuracy", "acc"),
    "rmse": ("rmse",),
    "val_loss": ("val_loss", "loss"),
    "fid": ("fid",),
}

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}


def parse_params(text: object) -> float | None:
    """"331.78K" -> 331780.0, "343.19M" -> 343190000.0, "1,359,872" -> 1359872.0; blank -> None."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().replace(",", "").replace("_", "")
    if not s:
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([KMBG]?)", s, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"not a parameter count: {text!r}")
    return float(m.group(1)) * _SUFFIX.get(m.group(2).upper(), 1.0)


def format_params(n: float | int | None) -> str:
    """Format a count like the paper prints it: 221184 -> "221.18K", 1359872 -> "1.36M"."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    n = float(n)
    for suffix, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:  # as the paper: 995,328 -> "995.33K", not "1.00M"
            return f"{n / scale:.2f}{suffix}"
    return f"{int(round(n))}"


def printed_decimals(text: object) -> int | None:
    """Decimals the paper printed a value with ("97.0" -> 1, "0.238" -> 3); None if blank."""
    if text is None:
        return None
    s = str(text).strip()
    if not s or s.lower() == "nan":
        return None
    return len(s.split(".", 1)[1]) if "." in s else 0


def norm_key(text: object) -> str:
    """Normalise a dataset/task name for matching: "CIFAR-10" == "cifar10", None == ""."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return re.sub(r"[^0-9a-z]+", "", str(text).lower())


def norm_method(method: object) -> str:
    """Canonical method name: lower case; combination parts after the first sorted
    ("onelora+norms+bias" -> "onelora+bias+norms", the paper's order)."""
    if method is None:
        return ""
    parts = [p.strip() for p in str(method).lower().split("+") if p.strip()]
    if not parts:
        return ""
    return "+".join([parts[0], *sorted(parts[1:])])


def norm_metric(name: object) -> str:
    """Map a record's metric name onto the paper's ("test/abs_rel" -> "absrel")."""
    if name is None:
        return ""
    base = str(name).lower().rsplit("/", 1)[-1]
    for paper_name, aliases in METRIC_ALIASES.items():
        if base == paper_name or base in aliases:
            return paper_name
    return base


def setting_label(source: object, target: object) -> str:
    """"NYU → KITTI", or only the target when the paper gives no source (MetaMathQA)."""
    src = "" if source is None or (isinstance(source, float) and math.isnan(source)) else str(source)
    tgt = "" if target is None or (isinstance(target, float) and math.isnan(target)) else str(target)
    return f"{src} → {tgt}" if src else tgt


def _read_csv(name: str) -> pd.DataFrame:
    text = resources.files("onelora").joinpath("data", name).read_text()
    # everything as text first: the printed decimals matter for the agreement tolerance
    return pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)


def _num(s: str) -> float:
    return float(s) if s not in ("", None) else math.nan


def load_paper_rows() -> pd.DataFrame:
    """One row per (table, setting, method, metric), in the paper's row order.

    Columns: table, figure, task, source, target, setting, model, method, metric, direction,
    mean, std, mean_str, time, time_unit, memory_pct, params_str, params, order.
    Table 2 is assembled from ``paper_absrel.csv`` (AbsRel) and Tables S2/S3 (RMSE, time,
    memory, params: the same runs).
    """
    res = _read_csv(RESULTS_CSV)
    rows: list[dict] = []
    for _, r in res.iterrows():
        rows.append(
            {
                "table": r["table"],
                "figure": r["figure"] or None,
                "task": r["task"],
                "source": r["source"],
                "target": r["target"],
                "setting": setting_label(r["source"], r["target"]),
                "model": r["model"],
                "method": r["method"],
                "metric": r["metric"],
                "direction": r["direction"],
                "mean": _num(r["mean"]),
                "std": _num(r["std"]),
                "mean_str": r["mean"],
                "time": _num(r["time"]),
                "time_unit": r["time_unit"],
                "memory_pct": _num(r["memory_pct"]),
                "params_str": r["params"],
                "params": parse_params(r["params"]),
            }
        )
    by_key = {
        (row["table"], row["source"], row["target"], row["method"]): row for row in rows
    }
    absrel = _read_csv(ABSREL_CSV)
    table2: list[dict] = []
    settings: list[tuple[str, str]] = []
    for _, r in absrel.iterrows():
        if (r["source"], r["target"]) not in settings:
            settings.append((r["source"], r["target"]))
    for source, target in settings:
        sub = absrel[(absrel["source"] == source) & (absrel["target"] == target)]
        s_table = next(
            t for (t, s, g, _m) in by_key if t in ("S2", "S3") and s == source and g == target
        )
        for metric in ("rmse", "absrel"):
            for _, r in sub.iterrows():
                base = by_key[(s_table, source, target, r["method"])]
                row = dict(base, table="2", figure=None)
                if metric == "absrel":
                    row.update(
                        metric="absrel",
                        direction="min",
                        mean=_num(r["mean"]),
                        std=_num(r["std"]),
                        mean_str=r["mean"],
                    )
                table2.append(row)
    out = pd.DataFrame(table2 + rows)
    out["order"] = range(len(out))
    return out


def paper_tables() -> list[tuple[TableSpec, pd.DataFrame]]:
    """Every paper table with its rows, in ``TABLE_ORDER``."""
    rows = load_paper_rows()
    return [(TABLES[t], rows[rows["table"] == t].reset_index(drop=True)) for t in TABLE_ORDER]
