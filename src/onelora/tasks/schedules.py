"""Learning-rate schedules of the paper's recipes, stepped per optimizer step.

Task configs name a schedule as a partial (``_target_`` + ``_partial_: true``); the module calls it
with the optimizer and, where the signature takes them, ``total_steps`` and ``max_lr``. So torch's
own schedulers work unchanged (Depth Anything's recipe is ``torch.optim.lr_scheduler.OneCycleLR``);
these two add the warm-up that torch's lack.
"""

from __future__ import annotations

import math

import torch


def constant(optimizer: torch.optim.Optimizer, total_steps: int | None = None, warmup_ratio: float = 0.0):
    """Constant learning rate after an optional linear warm-up (DiT's and DiffFit's recipes).
    ``total_steps`` is needed for a warm-up only (a run bounded by time alone has none)."""
    if warmup_ratio and total_steps is None:
        raise ValueError("warmup_ratio needs a step count (total_steps), which a run bounded by time alone has not")
    warmup = max(1, round(warmup_ratio * (total_steps or 0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.0,
                  min_lr_ratio: float = 0.0):
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` x the peak (MoRA's recipe: 3% warm-up)."""
    warmup = round(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
