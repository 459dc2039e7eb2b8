"""Read the same records from a Weights & Biases project instead of ``results.json`` files.

Our logger stores each run's ``results.json`` record in the run summary under ``"results"``;
this adapter only fetches those and hands them on, so the report cannot differ between the
two sources. ``api`` is injectable (tests pass a fake: there is no network there).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from onelora.reporting.records import Run, runs_from_records

#: wandb run states -> our record status (used only when a record has no status)
_STATE = {
    "finished": "completed",
    "failed": "failed",
    "crashed": "failed",
    "killed": "failed",
    "running": "running",
}


def _plain(value: Any) -> Any:
    """wandb summary sub-dicts and lists -> plain JSON-like Python objects."""
    if isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _summary_results(run: Any) -> dict[str, Any] | None:
    summary = getattr(run, "summary", None)
    if summary is None:
        return None
    try:
        raw = summary["results"]
    except (KeyError, TypeError):
        getter = getattr(summary, "get", None)
        raw = getter("results") if callable(getter) else None
    if raw is None:
        return None
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    record = _plain(raw)
    return record if isinstance(record, dict) else None


def load_wandb_records(
    project: str, entity: str | None = None, api: Any = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Records from every run of ``entity/project`` that has ``summary["results"]``.

    Returns (records, skipped run ids). Each record gets ``_path = "wandb:<entity/project>/<id>"``.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    for run in api.runs(path):
        run_id = str(getattr(run, "id", None) or getattr(run, "name", "?"))
        record = _summary_results(run)
        if record is None:
            skipped.append(run_id)
            continue
        if not record.get("status"):
            record["status"] = _STATE.get(str(getattr(run, "state", "")), "unknown")
        record["_path"] = f"wandb:{path}/{run_id}"
        records.append(record)
    return records, skipped


def load_wandb_runs(project: str, entity: str | None = None, api: Any = None) -> list[Run]:
    """:func:`load_wandb_records` wrapped as :class:`Run` objects."""
    records, _ = load_wandb_records(project, entity, api)
    return runs_from_records(records)
