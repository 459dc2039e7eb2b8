"""MoRA (Jiang et al. 2024): a square ``rhat x rhat`` matrix between fixed compress/decompress maps.

Follows the MoRA authors' code (kongds/MoRA, peft-mora ``LoraLayer._apply_mora``):
- type 1 ("sharing"): the input, padded by repeating its first features up to a multiple of
  rhat, is summed over groups of rhat features; the rhat outputs are tiled to ``out_features``;
- type 6 ("RoPE"): the padded input is cut into chunks of rhat features, each chunk rotated by
  RoPE with the chunk index as position, ``M`` applied to every chunk, the chunks concatenated
  and truncated (or tiled) to ``out_features``.
``M`` starts at zeros. ``size_rule="paper"`` gives ``rhat = int(sqrt(out_features) + 0.5)`` (what
the 1LoRA paper's parameter counts use); ``size_rule="mora"`` gives MoRA's own
``int(sqrt((in + out) * r) + 0.5)``. Type 6 rounds rhat down to even. ``dropout`` drops the input
of the update path in training, as MoRA's code does with its ``lora_dropout`` (0.05 in its
MetaMathQA script); the base path and the merged weight see the whole input.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdditiveAdapter, AdapterConfigError, linear_features, register

SIZE_RULES = ("paper", "mora")


def mora_size(in_features: int, out_features: int, *, r: int, size_rule: str, mora_type: int) -> int:
    check_size_rule(size_rule)
    if size_rule == "paper":
        rhat = int(math.sqrt(out_features) + 0.5)
    else:
        rhat = int(math.sqrt((in_features + out_features) * r) + 0.5)
    if mora_type == 6:
        rhat = rhat // 2 * 2
    if rhat < (2 if mora_type == 6 else 1) or rhat > min(in_features, out_features):
        raise AdapterConfigError(
            f"mora{mora_type} square size rhat={rhat} does not fit a {in_features}->{out_features} linear layer"
        )
    return rhat


def check_size_rule(size_rule) -> None:
    if size_rule not in SIZE_RULES:
        raise AdapterConfigError(f"mora size_rule must be one of {SIZE_RULES}, got {size_rule!r}")


class MoRALinear(AdditiveAdapter):
    adapter_tensor_names = ("mora_M",)
    mora_type = 1

    @classmethod
    def check_options(cls, **options) -> None:
        super().check_options(**options)
        if "size_rule" in options:
            check_size_rule(options["size_rule"])

    @classmethod
    def check_layer(cls, name: str, layer: nn.Module, **options) -> None:
        super().check_layer(name, layer, **options)
        k, d = linear_features(layer)
        try:
            mora_size(k, d, r=int(options.get("r", 1)), size_rule=options.get("size_rule", "paper"), mora_type=cls.mora_type)
        except AdapterConfigError as err:
            raise AdapterConfigError(f"{name}: {err}") from None

    def __init__(self, base_layer: nn.Module, *, r: int = 1, size_rule: str = "paper", dropout: float = 0.0, **kwargs):
        super().__init__(base_layer, **kwargs)
        self.mora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rhat = mora_size(
            self.in_features, self.out_features, r=int(r), size_rule=size_rule, mora_type=self.mora_type
        )
        self.pad = (-self.in_features) % self.rhat
        self.n_chunks = (self.in_features + self.pad) // self.rhat
        self.mora_M = nn.Parameter(self._zeros(self.rhat, self.rhat))

    def _padded_chunks(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = torch.cat([x, x[..., : self.pad]], dim=-1)
        return x.view(*x.shape[:-1], self.n_chunks, self.rhat)

    @staticmethod
    def _tile(y: torch.Tensor, size: int) -> torch.Tensor:
        if y.shape[-1] < size:
            y = torch.cat([y] * math.ceil(size / y.shape[-1]), dim=-1)
        return y[..., :size]

    def update(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.update(self.mora_dropout(x))

    def delta_weight(self) -> torch.Tensor:
        """The update is linear in x: read its matrix off the identity, a block of rows at a time."""
        eye = torch.eye(self.in_features, **self._factory())
        rows = [self.update(block) for block in eye.split(1024)]
        return torch.cat(rows).t()


@register("mora1")
class MoRASharingLinear(MoRALinear):
    """Type 1: group sums in, tiled copies out."""

    mora_type = 1

    def update(self, x: torch.Tensor) -> torch.Tensor:
        compressed = self._padded_chunks(x).sum(dim=-2)
        return self._tile(F.linear(compressed, self.mora_M.to(x.dtype)), self.out_features)


@register("mora6")
class MoRARoPELinear(MoRALinear):
    """Type 6: RoPE-rotated chunks share ``M``."""

    mora_type = 6

    def __init__(self, base_layer: nn.Module, **kwargs):
        super().__init__(base_layer, **kwargs)
        cos, sin = self._rope_tables(self.base_layer.weight.device)
        self.register_buffer("rope_cos", cos.to(**self._factory()), persistent=False)
        self.register_buffer("rope_sin", sin.to(**self._factory()), persistent=False)

    def _rope_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the RoPE angles (chunk index x frequency), in float32."""
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.rhat, 2, device=device).float() / self.rhat))
        freqs = torch.outer(torch.arange(self.n_chunks, device=device).float(), inv_freq)
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos(), angles.sin()

    def _apply(self, fn, recurse: bool = True):
        """The RoPE tables are fixed and not in the state_dict (non-persistent): rebuild them after
        every move, cast or materialisation (``to_empty`` from the meta device leaves garbage)."""
        super()._apply(fn, recurse)
        with torch.no_grad():
            cos, sin = self._rope_tables(self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        return self

    def update(self, x: torch.Tensor) -> torch.Tensor:
        chunks = self._padded_chunks(x)
        half = self.rhat // 2
        rotated_half = torch.cat([-chunks[..., half:], chunks[..., :half]], dim=-1)
        chunks = chunks * self.rope_cos.to(x.dtype) + rotated_half * self.rope_sin.to(x.dtype)
        out = F.linear(chunks, self.mora_M.to(x.dtype))
        return self._tile(out.flatten(-2), self.out_features)
