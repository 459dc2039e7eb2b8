"""CLI: ``python -m onelora.reporting --results results --out reports [--source wandb ...]``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from onelora.reporting.build import build_report
from onelora.reporting.records import load_file_runs, runs_from_records
from onelora.reporting.wandb_source import load_wandb_records


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m onelora.reporting", description=__doc__)
    p.add_argument("--results", default="results", help="folder searched recursively for results.json (files source)")
    p.add_argument("--out", default="reports", help="output folder (default: reports/)")
    p.add_argument("--source", choices=("files", "wandb"), default="files")
    p.add_argument("--wandb-project", default="onelora")
    p.add_argument("--wandb-entity", default=None)
    p.add_argument("--no-plots", action="store_true", help="tables and summary only")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source == "wandb":
        records, skipped = load_wandb_records(args.wandb_project, args.wandb_entity)
        runs = runs_from_records(records)
        where = f"wandb {args.wandb_entity + '/' if args.wandb_entity else ''}{args.wandb_project}"
        if skipped:
            print(f"{len(skipped)} wandb run(s) without summary['results'] skipped", file=sys.stderr)
    else:
        runs = load_file_runs(args.results)
        where = f"results.json files under {args.results}"
    report = build_report(runs, args.out, source=where, plots=not args.no_plots)
    n_have = sum(r["status"] == "ok" for t in report.paper_tables for r in t.rows)
    n_rows = sum(len(t.rows) for t in report.paper_tables)
    print(
        f"{len(runs)} records from {where}: {n_have}/{n_rows} paper rows with runs, "
        f"{len(report.ours_tables)} ours-only table(s); {len(report.files)} files in {report.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
