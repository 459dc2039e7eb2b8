"""VeRA (Kopiczko et al. 2024): ``W0 x + diag(lambda_b) B diag(lambda_d) A x``.

``A`` (r x max_in) and ``B`` (max_out x r) are frozen, drawn once per model from a seeded
generator exactly as peft draws them, and sliced to each layer's shape; ``lambda_d`` starts at
``d_initial`` (0.1) and ``lambda_b`` at zeros, so ``r + d`` parameters per layer.

Computed as ``F.linear(lambda_d * (A x), B * lambda_b[:, None])``: with ``lambda_b`` folded into
the (tiny) up-projection, backward keeps only the ``r``-sized ``A x`` per token instead of an
output-sized tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdditiveAdapter, linear_features, register
from .lora import check_rank


def kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Kaiming-uniform (gain sqrt(2), fan_in = shape[1]) from an explicit generator, as peft's VeRA."""
    bound = math.sqrt(3.0) * math.sqrt(2.0) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


@register("vera")
class VeRALinear(AdditiveAdapter):
    adapter_tensor_names = ("vera_lambda_b", "vera_lambda_d", "vera_A", "vera_B")
    internal_options = ("shared_A", "shared_B")

    def __init__(
        self,
        base_layer: nn.Module,
        *,
        r: int = 1,
        d_initial: float = 0.1,
        dropout: float = 0.0,
        seed: int = 0,
        shared_A: torch.Tensor | None = None,
        shared_B: torch.Tensor | None = None,
        **kwargs,
    ):
        super().__init__(base_layer, **kwargs)
        self.r = check_rank("vera", r, base_layer)
        if shared_A is None or shared_B is None:
            shared = self.shared_kwargs([base_layer], {"r": r, "seed": seed})
            shared_A, shared_B = shared["shared_A"], shared["shared_B"]
        self.vera_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.register_buffer("vera_A", shared_A[:, : self.in_features].clone().to(**self._factory()))
        self.register_buffer("vera_B", shared_B[: self.out_features, :].clone().to(**self._factory()))
        self.vera_lambda_b = nn.Parameter(self._zeros(self.out_features))
        self.vera_lambda_d = nn.Parameter(torch.full((self.r,), float(d_initial), **self._factory()))

    @classmethod
    def check_layer(cls, name: str, layer: nn.Module, **options) -> None:
        super().check_layer(name, layer, **options)
        check_rank("vera", options.get("r", 1), layer, name=name)

    @classmethod
    def shared_kwargs(cls, layers, options):
        r = int(options.get("r", 1))
        for layer in layers:  # before drawing: r < 1 would divide by zero in the init
            check_rank("vera", r, layer)
        generator = torch.Generator(device="cpu").manual_seed(int(options.get("seed", 0)))
        max_in = max(linear_features(layer)[0] for layer in layers)
        max_out = max(linear_features(layer)[1] for layer in layers)
        shared_A = kaiming_uniform((r, max_in), generator)
        shared_B = kaiming_uniform((max_out, r), generator)
        return {"shared_A": shared_A, "shared_B": shared_B}

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        h = F.linear(self.vera_dropout(x), self.vera_A.to(x.dtype)) * self.vera_lambda_d.to(x.dtype)
        # added in place: the frozen base's output is not kept for backward
        return result.add_(F.linear(h, (self.vera_B * self.vera_lambda_b[:, None]).to(x.dtype)))

    def delta_weight(self) -> torch.Tensor:
        return (self.vera_lambda_b[:, None] * self.vera_B) @ (self.vera_lambda_d[:, None] * self.vera_A)
