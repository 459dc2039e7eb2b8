"""What every task's LightningModule shares: the optimizer over the trainable parameters (built
from the task's ``optimizer`` / ``scheduler`` partials), a loss that must stay finite, and
adapter-only checkpoints (only trainable tensors are saved)."""

from __future__ import annotations

import inspect
import math
import re
from typing import Any, Callable, Mapping

import lightning as L
import torch
from torch import nn

from ..adapters import trainable_state
from ..methods import method_info


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run stops and is recorded as failed."""


class FineTuneModule(L.LightningModule):
    """Base of every task module.

    ``optimizer`` is a partial taking the parameter groups (``torch.optim.AdamW`` with its settings,
    or any other optimizer by config); ``scheduler`` a partial taking the optimizer, given
    ``total_steps`` (when the run has a step or epoch cap) and ``max_lr`` when its signature has them. ``lr_scales`` maps a regex on
    parameter names to a learning-rate multiplier (Depth Anything trains its encoder at lr / 50).
    ``metric`` is the task's metric declaration (name, direction, val_key, test_key, extra).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        metric: Mapping[str, Any],
        lr_scales: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.metric = dict(metric)
        self.lr_scales = dict(lr_scales or {})
        self.strict_loading = False  # checkpoints hold only the trainable tensors

    # -- optimisation -------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters, one group per ``lr_scales`` multiplier (first matching regex)."""
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                scale = next((float(s) for pattern, s in self.lr_scales.items() if re.match(pattern, name)), 1.0)
                groups.setdefault(scale, []).append(param)
        return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]

    def configure_optimizers(self):
        groups = self.param_groups()
        optimizer = self.optimizer_factory([{"params": g["params"]} for g in groups])
        for group, spec in zip(optimizer.param_groups, groups):
            group["lr"] = group["lr"] * spec["lr_scale"]
        if self.scheduler_factory is None:
            return optimizer
        offered = {"max_lr": [g["lr"] for g in optimizer.param_groups]}
        steps = self.trainer.estimated_stepping_batches  # infinite when only a time budget ends the run
        if math.isfinite(steps):
            offered["total_steps"] = max(1, int(steps))
        scheduler = call_with_offered(self.scheduler_factory, optimizer, offered)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None and not math.isfinite(float(loss.detach())):
            raise NonFiniteLossError(f"non-finite loss ({float(loss.detach())}) at step {self.global_step}")

    # -- what a picture of the run says about it ------------------------------------------------
    @property
    def method_name(self) -> str:
        """The method the model was adapted with (its config name; "" before injection)."""
        return str(getattr(getattr(self.model, "onelora_method", None), "name", "") or "")

    @property
    def method_label(self) -> str:
        """The method's label (``describe.label`` of its conf/method YAML), for a caption."""
        info = method_info(self.method_name)
        return info.label if info is not None else self.method_name

    #: the optimizer step of the weights held when ``artifacts`` is called, for a caption: the
    #: runner sets it (the best validation round's, else the last); None: evaluated as loaded
    weights_step: int | None = None

    def test_metric(self, key: str) -> float | None:
        """The last test's value of ``key`` (the runner tests the best round's weights last)."""
        trainer = self._trainer
        value = None if trainer is None else trainer.callback_metrics.get(key)
        return None if value is None else float(value)

    # -- adapter-only checkpoints ---------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {f"model.{name}" for name in trainable_state(self.model)}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}


def call_with_offered(factory: Callable[..., Any], first: Any, offered: Mapping[str, Any]) -> Any:
    """``factory(first, **offered)``, passing only the offered keywords its signature takes and
    that the config did not already set."""
    target = getattr(factory, "func", factory)
    bound = getattr(factory, "keywords", {}) or {}
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature
        params = {}
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if k not in bound and (k in params or accepts_any)}
    return factory(first, **kwargs)
