"""An exponential moving average of a model's trained parameters (DiT samples with EMA weights).

Only parameters with ``requires_grad`` are tracked: under a PEFT method that is the adapters and
the class table, so the average costs a copy of those, not of the frozen backbone. As DiT's
``update_ema``: shadow = decay * shadow + (1 - decay) * param, started from the model's weights.
``warmup=True`` uses min(decay, (1 + n) / (10 + n)) at update n instead (short fine-tuning runs,
where a 0.9999 average would still mostly hold the starting weights).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.num_updates = float(decay), bool(warmup), 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }
        if not self.shadow:
            raise ValueError("EMA: the model has no trainable parameters")

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [name for name in self.shadow if name not in params]
        if missing:
            raise KeyError(f"EMA: the model has no parameter(s) {missing[:5]}; was it adapted after the EMA was made?")
        return params

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        params = self._params(model)
        for name, shadow in self.shadow.items():
            param = params[name]
            if shadow.device != param.device:
                shadow = self.shadow[name] = shadow.to(param.device)
            shadow.lerp_(param.detach().to(shadow.dtype), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged values into the model's parameters."""
        params = self._params(model)
        for name, shadow in self.shadow.items():
            params[name].copy_(shadow)

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block the model holds the EMA weights; its own come back afterwards."""
        params = self._params(model)
        backup = {name: params[name].detach().clone() for name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.detach().clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise KeyError(f"EMA state does not fit: missing {sorted(set(self.shadow) - set(shadow))[:5]}, "
                           f"unexpected {sorted(set(shadow) - set(self.shadow))[:5]}")
        for name, value in shadow.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(f"EMA state: {name} has shape {tuple(value.shape)}, expected {tuple(self.shadow[name].shape)}")
            self.shadow[name] = value.detach().clone().to(self.shadow[name].device)
        self.decay, self.warmup = float(state["decay"]), bool(state.get("warmup", False))
        self.num_updates = int(state["num_updates"])
