"""What every task shares: the optimizer over the trainable parameters, the schedule,
adapter-only checkpoints and the best validation metric (kept across resumes)."""

from __future__ import annotations

import re
from typing import Any, Mapping

import lightning as L
import torch
from torch import nn

from ..adapters import trainable_state
from .schedules import build_schedule


class FineTuneModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        optim: Mapping[str, Any],
        schedule: Mapping[str, Any] | None = None,
        metric: Mapping[str, Any],
    ):
        super().__init__()
        self.model = model
        self.optim_cfg = dict(optim)
        self.schedule_cfg = dict(schedule or {})
        self.metric_cfg = dict(metric)
        self.strict_loading = False  # checkpoints hold only the trainable tensors
        self.best_val: float | None = None
        self.last_val: float | None = None

    # -- optimisation -------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters, grouped by ``optim.lr_scales`` (regex on the name -> lr multiplier)."""
        lr = float(self.optim_cfg["lr"])
        scales = dict(self.optim_cfg.get("lr_scales") or {})
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            scale = next((float(s) for pattern, s in scales.items() if re.match(pattern, name)), 1.0)
            groups.setdefault(scale, []).append(param)
        return [{"params": params, "lr": lr * scale} for scale, params in groups.items()]

    def configure_optimizers(self):
        cfg = self.optim_cfg
        name = cfg.get("name", "adamw").lower()
        if name != "adamw":
            raise ValueError(f"task.optim.name: only adamw is implemented (the paper's optimizer), got {name!r}")
        optimizer = torch.optim.AdamW(
            self.param_groups(),
            lr=float(cfg["lr"]),
            weight_decay=float(cfg.get("weight_decay", 0.0)),
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
            eps=float(cfg.get("eps", 1e-8)),
        )
        scheduler = build_schedule(optimizer, self.schedule_cfg, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- metric bookkeeping -------------------------------------------------------------------
    def record_val(self, value: float) -> None:
        self.last_val = float(value)
        better = max if self.metric_cfg.get("direction", "max") == "max" else min
        self.best_val = self.last_val if self.best_val is None else better(self.best_val, self.last_val)

    # -- adapter-only checkpoints ---------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {f"model.{name}" for name in trainable_state(self.model)}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["onelora"] = {"best_val": self.best_val, "last_val": self.last_val}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("onelora", {})
        self.best_val, self.last_val = state.get("best_val"), state.get("last_val")
