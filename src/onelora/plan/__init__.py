"""``mode=plan``: what a run costs before it is launched, exactly, from fake tensors: per-GPU memory
(parameters, gradients, optimizer states, activations, the peak), FLOPs of a step and of the whole
run, GPU-hours on A100 / H100 / H200, whether it fits each card and the largest micro-batch that
does. No weights, no data, no GPU; nothing is written under ``results/``.

    python run.py mode=plan model=llama2_13b task=metamath method=onelora
    python run.py -m experiment=table_s7 mode=plan
    make plan                                  # every paper grid -> reports/plan.md (+ .json)

Modules: ``trace`` (one training iteration under fake or real tensors, its instruments), ``inputs``
(synthetic batches in a task's real shapes), ``core`` (a run's plan from its config: memory per GPU
under its strategy, FLOPs, run length, GPU-hours), ``paper`` (the paper's grids and memory claims,
reports/plan.md), ``measure`` (the GPU check of the plan).
"""

from __future__ import annotations

import json
from typing import Any

from .core import GIB, RunPlan

__all__ = ["GIB", "RunPlan", "plan", "summary"]


def plan(settings: Any) -> dict[str, Any]:
    """Plan the run ``settings`` describe; print a summary and, last, the record as one JSON line."""
    from ..sweeps import log_event

    run = RunPlan.from_settings(settings)
    record = run.record()
    print(summary(record), flush=True)
    print(json.dumps(record, default=str), flush=True)
    log_event("planned", settings.config["run_name"])  # a sweep's summary counts it
    return record


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def summary(record: dict[str, Any]) -> str:
    b, f = record["bytes"], record["flops"]
    lines = [
        f"plan: {record['task']} | {record['model']} | {record['method']}",
        f"  run: {record['gpus']} GPU(s), {record['strategy']}, {record['precision']}; global batch {record['global_batch']} = "
        f"{record['gpus']} x micro-batch {record['micro_batch']} x accumulation {record['accumulate']}; input {record['shapes']}"
        + ("; activation checkpointing" if record["checkpointing"] else ""),
        f"  parameters: {record['params']:,} ({record['trainable']:,} trainable); bytes "
        + ", ".join(f"{k} {_gib(v)} GiB" for k, v in b["params"].items()),
        f"  per process: gradients {_gib(b['grads'])} GiB, optimizer states {_gib(b['optimizer'])} GiB, activations "
        f"{_gib(b['activations'])} GiB (held after forward {_gib(b['forward_held'])} GiB), traced peak {_gib(b['traced_peak'])} GiB",
        f"  per GPU ({record['strategy']}): peak {_gib(b['peak_per_gpu'])} GiB + reserve {_gib(b['reserve'])} GiB = "
        f"{record['peak_gib']:.2f} GiB",
        f"  FLOPs: micro-step forward {f['micro_forward'] / 1e12:.3f} T, backward {f['micro_backward'] / 1e12:.3f} T "
        f"(recomputation {f['micro_recompute'] / 1e12:.3f} T); optimizer step {f['step_executed'] / 1e12:.2f} TFLOP on all GPUs",
    ]
    for name, card in record["cards"].items():
        cost = (f"{card['steps']:,} steps ({card['why']}), {card['pflop']:,.1f} PFLOP, {card['gpu_hours']:,.1f} GPU-h "
                f"({card['hours']:,.2f} h wall)" if card.get("steps") is not None else card["why"])
        largest = card.get("largest_micro_batch")
        lines.append(f"  {name} ({card['memory_gib']:g} GiB): {card['verdict']}"
                     + (f", largest micro-batch {largest}" if "largest_micro_batch" in card else "")
                     + f"; {cost} at MFU {record['mfu']:g}")
    return "\n".join(lines)
