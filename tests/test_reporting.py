"""The report builder on synthetic results.json records: numbers, missing rows, failures, files."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from PIL import Image

from onelora.reporting import build_report, load_file_runs, load_paper_rows, runs_from_records
from onelora.reporting import __main__ as cli
from onelora.reporting import paper, stats, wandb_source
from onelora.reporting.tables import params_match
from onelora.results import write_json_atomic

CIFAR10 = {"task": "classification", "source": "ImageNet-21k", "target": "CIFAR10"}
KITTI_NYU = {"task": "depth", "source": "KITTI", "target": "NYU"}
DIGITS = {"task": "classification", "source": "digits0-4", "target": "digits5-9-rot90"}

ONELORA_ACC = [97.6, 97.75, 97.8, 97.7]  # seed 3 only has best_val: the fallback is tested too
LORA_ACC = [96.0, 96.5]  # paper 98.1: ours worse by ~1.85 points, beyond 1% of 98.1
RMSE = [0.2381, 0.2385]
ABSREL = [0.0648, 0.0650]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_record(
    *, task="cifar10", paper_keys=CIFAR10, model="vit_base", method="onelora", seed=0, value=None,
    best_val=None, metric="accuracy", direction="max", status="completed", experiment=None,
    metrics=None, device="cuda", peak_bytes=4 * 2**30, fit_s=600.0, adapter_params=82944,
    trainable_params=90634, reported="adapter", run_tag="", error=None,
) -> dict:
    record = {
        "schema": 1,
        "status": status,
        "experiment": experiment,
        "task": task,
        "paper": dict(paper_keys),
        "model": model,
        "method": method,
        "method_parts": method.split("+"),
        "seed": seed,
        "metric": {"name": metric, "direction": direction, "best_val": best_val, "final_val": best_val, "test": value},
        "metrics": metrics or {},
        "time": {"train_s": fit_s * 0.9, "val_s": fit_s * 0.1, "fit_s": fit_s, "total_s": fit_s + 5},
        "memory": {"device": device, "peak_bytes": peak_bytes, "kind": "max_allocated" if device == "cuda" else "rss"},
        "params": {
            "adapted_layers": 72, "adapter_params": adapter_params, "head_params": 7690,
            "trainable_params": trainable_params, "total_params": 85_806_346,
        },
        "run_dir": None,
        "git_commit": "deadbeef",
        "versions": {},
        "config": {"model": {"reported_params": reported}, "run_tag": run_tag, "seed": seed},
    }
    if error:
        record["error"] = error
    return record


def synthetic_records() -> list[dict]:
    recs = []
    for seed, acc in enumerate(ONELORA_ACC):
        if seed == 3:
            recs.append(make_record(seed=seed, value=None, best_val=acc, fit_s=60.0 * (16 + seed)))
        else:
            recs.append(make_record(seed=seed, value=acc, best_val=acc + 0.5, fit_s=60.0 * (16 + seed)))
    for seed, acc in enumerate(LORA_ACC):
        recs.append(make_record(method="lora", seed=seed, value=acc, adapter_params=165888, fit_s=1980.0))
    # a failed run with a value that would move the mean a lot if it were averaged
    recs.append(make_record(method="lora", seed=2, value=10.0, status="failed", error="CUDA out of memory"))
    # a tagged variant: never averaged into the paper row
    recs.append(make_record(seed=0, value=50.0, run_tag="_lr1e-3"))
    # depth, KITTI -> NYU: RMSE as the main metric, AbsRel under both accepted keys
    for seed, (rmse, absrel) in enumerate(zip(RMSE, ABSREL)):
        key = "test/abs_rel" if seed == 0 else "abs_rel"
        recs.append(
            make_record(
                task="depth_kitti_nyu", paper_keys=KITTI_NYU, model="depth_anything_l", method="onelora",
                seed=seed, value=rmse, metric="rmse", direction="min", metrics={key: absrel, "test/rmse": rmse},
                adapter_params=221184, peak_bytes=14 * 2**30, fit_s=3900.0,
            )
        )
    # the embedded mini grid on digits: no paper counterpart
    for method, seeds in (("onelora", (0, 1)), ("lora", (0,))):
        for seed in seeds:
            recs.append(
                make_record(
                    task="digits", paper_keys=DIGITS, model="digits_vit", method=method, seed=seed,
                    value=80.0 + seed + (method == "lora"), experiment="mini", device="cpu",
                    peak_bytes=2**29, fit_s=12.0, adapter_params=1000 + 100 * (method == "lora"),
                )
            )
    return recs


def write_records(root: Path, records: list[dict]) -> None:
    for i, rec in enumerate(records):
        write_json_atomic(root / f"run{i:02d}" / "results.json", rec)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_records(root, synthetic_records())
    out = root.parent / "reports"
    assert cli.main(["--results", str(root), "--out", str(out)]) == 0
    report = build_report(load_file_runs(root), root.parent / "reports_api", plots=False)
    return out, report


def read_csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def row(rows, method, metric=None, setting=None):
    hits = [r for r in rows if r["method"] == method and (metric is None or r["metric"] == metric)
            and (setting is None or r["setting"] == setting)]
    assert len(hits) == 1, hits
    return hits[0]


# ------------------------------------------------------------------ numbers
def test_means_and_stds_exact(built):
    out, report = built
    s9 = report.table("S9").rows
    one = row(s9, "onelora")
    assert one["ours_n"] == 4
    assert one["ours_mean"] == pytest.approx(statistics.mean(ONELORA_ACC), abs=1e-12)
    assert one["ours_std"] == pytest.approx(statistics.stdev(ONELORA_ACC), abs=1e-12)
    lora = row(s9, "lora")
    assert lora["ours_n"] == 2
    assert lora["ours_mean"] == pytest.approx(96.25, abs=1e-12)
    assert lora["ours_std"] == pytest.approx(statistics.stdev(LORA_ACC), abs=1e-12)
    # the CSV carries the same numbers
    csv_one = row(read_csv_rows(out / "table_S9.csv"), "onelora")
    assert float(csv_one["ours_mean"]) == pytest.approx(statistics.mean(ONELORA_ACC), abs=1e-12)
    assert float(csv_one["ours_std"]) == pytest.approx(statistics.stdev(ONELORA_ACC), abs=1e-12)
    assert float(csv_one["paper_mean"]) == 97.7 and float(csv_one["paper_std"]) == 0.186
    # time in minutes (mean fit_s), memory in GB and % of 40 GB
    assert one["ours_time"] == pytest.approx(statistics.mean([16, 17, 18, 19]))
    assert one["ours_memory_gb"] == pytest.approx(4.0) and one["ours_memory_pct"] == pytest.approx(10.0)
    # the same runs count in every table that prints the row (S12 repeats S9's onelora)
    assert row(report.table("S12").rows, "onelora")["ours_n"] == 4


def test_table2_rmse_and_absrel(built):
    _, report = built
    t2 = report.table("2").rows
    rmse = row(t2, "onelora", "rmse", "KITTI → NYU")
    absrel = row(t2, "onelora", "absrel", "KITTI → NYU")
    assert rmse["ours_mean"] == pytest.approx(statistics.mean(RMSE), abs=1e-12)
    assert absrel["ours_mean"] == pytest.approx(statistics.mean(ABSREL), abs=1e-12)
    assert absrel["ours_std"] == pytest.approx(statistics.stdev(ABSREL), abs=1e-12)
    assert absrel["paper_mean"] == 0.0647 and rmse["paper_mean"] == 0.238
    assert row(report.table("S2").rows, "onelora")["ours_n"] == 2
    assert row(t2, "onelora", "rmse", "NYU → KITTI")["status"] == "missing"


def test_missing_rows_say_missing(built):
    out, report = built
    mora = row(report.table("S9").rows, "mora1")
    assert mora["status"] == "missing" and mora["ours_mean"] is None and mora["ours_n"] == 0
    md = (out / "table_S9.md").read_text()
    assert "| mora1 | missing |" in md
    # a table without any runs: every row missing, no numbers of ours
    s8 = read_csv_rows(out / "table_S8.csv")
    assert len(s8) == 7 and all(r["status"] == "missing" and r["ours_mean"] == "" for r in s8)


def test_failed_run_counted_not_averaged(built):
    out, report = built
    lora = row(report.table("S9").rows, "lora")
    assert lora["ours_failed"] == 1 and lora["ours_n"] == 2  # 10.0 would drag the mean to ~67
    md = (out / "table_S9.md").read_text()
    assert "1 failed" in md and "Runs not averaged" in md and "CUDA out of memory" in md
    assert "Runs not averaged: 1 failed" in (out / "summary.md").read_text()


def test_tagged_variant_kept_apart(built):
    _, report = built
    assert row(report.table("S9").rows, "onelora")["ours_mean"] < 98  # the 50.0 run is not in it
    tagged = [t for t in report.ours_tables if any(r["method"] == "onelora [_lr1e-3]" for r in t.rows)]
    assert len(tagged) == 1


def test_params_column_and_match(built):
    _, report = built
    one = row(report.table("S9").rows, "onelora")
    assert one["ours_params_str"] == "82.94K" and one["paper_params_str"] == "331.78K"
    assert one["params_match"] == "yes (x4)"
    depth = row(report.table("S2").rows, "onelora")
    assert depth["ours_params_str"] == "221.18K" and depth["params_match"] == "yes"


def test_reported_params_selects_trainable():
    rec = make_record(value=97.0, reported="trainable", trainable_params=1_359_872)
    run = runs_from_records([rec])[0]
    assert run.reported_params == 1_359_872
    assert params_match(run.reported_params, "1.36M") == "yes"
    assert params_match(1000, "1.36M") == "no" and params_match(None, "1.36M") == "n/a"


# ------------------------------------------------------------------ files
def test_every_paper_table_written(built):
    out, _ = built
    for table_id in paper.TABLE_ORDER:
        for ext in ("md", "csv", "png"):
            assert (out / f"table_{table_id}.{ext}").stat().st_size > 0, (table_id, ext)
    rows = load_paper_rows()
    for table_id in paper.TABLE_ORDER:
        written = read_csv_rows(out / f"table_{table_id}.csv")
        expected = rows[rows["table"] == table_id]
        assert [r["method"] for r in written] == list(expected["method"])  # the paper's row order
    assert (out / "summary.md").exists() and (out / "paper_comparison.csv").exists()


def test_pngs_are_valid(built):
    out, _ = built
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == len(paper.TABLE_ORDER) + 2  # + the mini digits grid and the tagged-variant group
    assert (out / "ours_digits_digits_vit.png").exists()
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200


def test_ours_only_table_for_mini_grid(built):
    out, report = built
    mini = next(t for t in report.ours_tables if t.slug == "ours_digits_digits_vit")
    assert [r["method"] for r in mini.rows] == ["onelora", "lora"]
    one = row(mini.rows, "onelora")
    assert one["ours_n"] == 2 and one["ours_mean"] == pytest.approx(80.5, abs=1e-12)
    assert one["ours_std"] == pytest.approx(statistics.stdev([80.0, 81.0]), abs=1e-12)
    assert one["ours_memory_pct"] is None and one["ours_memory_device"] == "cpu"
    lora = row(mini.rows, "lora")
    assert lora["ours_n"] == 1 and lora["ours_std"] is None
    md = (out / "ours_digits_digits_vit.md").read_text()
    assert "80.50 ± 0.71 (n=2)" in md and "0.50 GB (cpu)" in md and "paper" not in md.split("Notes:")[0]


# ------------------------------------------------------------------ summary
def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start: end if end > 0 else None]


def test_summary_agreement_and_disagreement(built):
    out, _ = built
    text = (out / "summary.md").read_text()
    s9 = _section(text, "Table S9:")
    agree, _, disagree = s9.partition("Disagrees with the paper")
    assert "Agrees with the paper (1)" in agree and "onelora accuracy: ours 97.71" in agree
    assert "lora accuracy: ours 96.25 (n=2) vs paper 98.1" in disagree and "(ours worse)" in disagree
    assert "Paper rows: 10; with our runs: 2; missing: 8." in s9
    assert "Only 2 method(s) with runs: no rank correlation" in s9
    assert "No runs yet" in _section(text, "Table S8:")
    assert "task digits · model digits_vit" in text


def test_agreement_rule():
    # 2 paper std dominates
    assert stats.agreement(97.7 + 0.3, 97.7, 0.186, 1, "max") == stats.AGREE
    # relative floor: 1% of 0.238 = 0.00238 > 2 * 0.0005
    assert stats.agreement(0.2400, 0.238, 0.0005, 3, "min") == stats.AGREE
    assert stats.agreement(0.2420, 0.238, 0.0005, 3, "min") == stats.WORSE
    assert stats.agreement(0.2300, 0.238, 0.0005, 3, "min") == stats.BETTER
    # printing floor: "0.17" covers 0.1749
    assert stats.agreement(0.1749, 0.17, 0.003768, 2, "min") == stats.AGREE
    assert stats.agreement(None, 0.17, 0.003768, 2, "min") is None
    assert stats.tolerance(98.1, 0.058, 1) == pytest.approx(0.981)


def test_stats_helpers():
    assert stats.mean_std([]) == (None, None, 0)
    assert stats.mean_std([2.0]) == (2.0, None, 1)
    mean, std, n = stats.mean_std([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4) and std == pytest.approx(math.sqrt(5 / 3))
    assert stats.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert stats.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert stats.spearman([1, 2], [1, 2]) is None and stats.spearman([1, 1, 1], [1, 2, 3]) is None


def test_summary_spearman_with_three_methods(tmp_path):
    recs = [make_record(method=m, seed=s, value=v) for m, v in (("onelora", 97.7), ("lora", 98.1), ("bitfit", 97.0))
            for s in (0, 1)]
    build_report(runs_from_records(recs), tmp_path, plots=False)
    s9 = _section((tmp_path / "summary.md").read_text(), "Table S9:")
    assert "ours lora > onelora > bitfit; paper lora > onelora > bitfit. Spearman ρ = +1.00 over 3 methods." in s9
    assert "Agrees with the paper (3)" in s9 and "Disagrees" not in s9


# ------------------------------------------------------------------ params strings
def test_params_parse_and_format_round_trip():
    rows = load_paper_rows()
    printed = [s for s in rows["params_str"] if s]
    assert printed and all(paper.format_params(paper.parse_params(s)) == s for s in printed)
    assert paper.parse_params("331.78K") == pytest.approx(331_780)
    assert paper.parse_params("343.19M") == pytest.approx(343_190_000)
    assert paper.parse_params("") is None and paper.parse_params(None) is None
    for n, s in ((221_184, "221.18K"), (1_359_872, "1.36M"), (995_328, "995.33K"), (85_798_656 * 4, "343.19M"),
                 (512, "512")):
        assert paper.format_params(n) == s
        assert abs(paper.parse_params(s) - n) <= 0.005 * (1e6 if s.endswith("M") else 1e3 if s.endswith("K") else 1)
    with pytest.raises(ValueError):
        paper.parse_params("lots")


def test_paper_rows_shipped():
    rows = load_paper_rows()
    assert set(rows["table"]) == set(paper.TABLE_ORDER)
    assert len(rows[rows["table"] != "2"]) == 107 and len(rows[rows["table"] == "2"]) == 36
    s3_lora = rows[(rows["table"] == "S3") & (rows["method"] == "lora")].iloc[0]
    assert s3_lora["mean"] == 2.253 and s3_lora["params"] == pytest.approx(393_220)


# ------------------------------------------------------------------ wandb
class FakeRun:
    def __init__(self, run_id, summary, state="finished"):
        self.id = run_id
        self.summary = summary
        self.state = state


class FakeApi:
    calls: list[str] = []

    def __init__(self, records):
        self._records = records

    def runs(self, path):
        FakeApi.calls.append(path)
        out = []
        for i, rec in enumerate(self._records):
            # one as a JSON string, the rest as (nested) dicts, as wandb may return either
            summary = {"results": json.dumps(rec) if i == 0 else rec, "_step": 3}
            out.append(FakeRun(f"r{i}", summary))
        out.append(FakeRun("nores", {"loss": 1.0}))
        return out


def test_wandb_adapter_same_report(tmp_path, monkeypatch, built):
    _, file_report = built
    records = synthetic_records()
    import wandb

    monkeypatch.setattr(wandb, "Api", lambda *a, **k: FakeApi(records))
    got, skipped = wandb_source.load_wandb_records("proj", "ent")
    assert skipped == ["nores"] and len(got) == len(records)
    assert got[1]["_path"] == "wandb:ent/proj/r1"
    assert {k: v for k, v in got[0].items() if k != "_path"} == records[0]

    out = tmp_path / "wb"
    args = ["--source", "wandb", "--wandb-project", "proj", "--wandb-entity", "ent", "--out", str(out), "--no-plots"]
    assert cli.main(args) == 0
    assert FakeApi.calls[-1] == "ent/proj"
    wb = row(read_csv_rows(out / "table_S9.csv"), "onelora")
    assert float(wb["ours_mean"]) == pytest.approx(row(file_report.table("S9").rows, "onelora")["ours_mean"], abs=1e-12)
    assert int(wb["ours_n"]) == 4
    assert "Source: wandb ent/proj" in (out / "summary.md").read_text()


def test_wandb_status_from_state():
    rec = make_record(value=97.0)
    del rec["status"]

    class Api:
        def runs(self, path):
            return [FakeRun("x", {"results": rec}, state="crashed")]

    got, _ = wandb_source.load_wandb_records("p", api=Api())
    assert got[0]["status"] == "failed"


def test_matching_rules(tmp_path):
    math_keys = {"task": "math", "source": None, "target": "MetaMathQA"}
    recs = [
        # the paper gives no source for MetaMathQA: any source matches; val_loss 0.172 rounds to "0.17"
        make_record(task="metamathqa", paper_keys=math_keys, model="llama2_7b", method="onelora", value=0.172,
                    metric="val_loss", direction="min", reported="trainable", trainable_params=1_359_872),
        make_record(task="metamathqa", paper_keys=dict(math_keys, source="LLaMA-2"), model="llama2_7b",
                    method="lora", value=0.2, metric="val_loss", direction="min"),
        # spelled differently but the same dataset and combination: still the paper's row
        make_record(paper_keys=dict(CIFAR10, target="CIFAR-10"), method="onelora+norms+bias", value=97.9),
        # another model is not the paper's row, even on the paper's task
        make_record(model="timm_vit_base", value=97.0),
    ]
    report = build_report(runs_from_records(recs), tmp_path, plots=False)
    s6 = report.table("S6").rows
    one = row(s6, "onelora")
    assert one["ours_n"] == 1 and one["agreement"] == stats.AGREE and one["params_match"] == "yes"
    assert row(s6, "lora")["agreement"] == stats.WORSE
    assert row(report.table("S12").rows, "onelora+bias+norms")["ours_n"] == 1
    assert row(report.table("S9").rows, "onelora")["status"] == "missing"
    assert [t.slug for t in report.ours_tables] == ["ours_cifar10_timm_vit_base"]
