"""Learning-rate schedules of the paper's recipes, stepped per optimizer step."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch


def build_schedule(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any] | None, total_steps: int):
    """``constant``, ``cosine`` (with linear warm-up; MoRA's recipe) or ``onecycle`` (Depth Anything's)."""
    cfg = dict(cfg or {"name": "constant"})
    name = cfg.get("name", "constant")
    total_steps = max(1, int(total_steps))
    warmup = int(round(float(cfg.get("warmup_ratio", 0.0)) * total_steps))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup)))
    if name == "cosine":
        floor = float(cfg.get("min_lr_ratio", 0.0))

        def cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=float(cfg.get("pct_start", 0.7)),
            div_factor=float(cfg.get("div_factor", 1.0)),
            final_div_factor=float(cfg.get("final_div_factor", 1e4)),
            cycle_momentum=bool(cfg.get("cycle_momentum", True)),
            base_momentum=float(cfg.get("base_momentum", 0.85)),
            max_momentum=float(cfg.get("max_momentum", 0.95)),
        )
    raise ValueError(f"task.schedule.name must be constant, cosine or onecycle, got {name!r}")
