"""Compare our runs with the paper: tables, bubble plots and a summary (``python -m onelora.reporting``).

Reads the ``results.json`` records every run leaves (or the same records from wandb) and the
paper's numbers shipped in ``onelora/data``; writes Markdown/CSV tables, PNG figures and
``summary.md``.

    python -m onelora.reporting --results results --out reports
    python -m onelora.reporting --source wandb --wandb-project onelora --wandb-entity ENTITY --out reports
"""

from onelora.reporting.build import Report, build_report
from onelora.reporting.paper import format_params, load_paper_rows, parse_params
from onelora.reporting.records import Run, load_file_runs, runs_from_records
from onelora.reporting.wandb_source import load_wandb_records, load_wandb_runs

__all__ = [
    "Report",
    "Run",
    "build_report",
    "format_params",
    "load_file_runs",
    "load_paper_rows",
    "load_wandb_records",
    "load_wandb_runs",
    "parse_params",
    "runs_from_records",
]
