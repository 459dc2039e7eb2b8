"""The benchmark's model families: transformers' ViT (the paper's classification model) and a
LLaMA-style decoder stack, both random-init, plus their inputs, loss and target layers.

Every shape is a ``ModelShape``; ``build`` gives the model, ``batch`` a random batch and ``loss`` the
training loss, so the benchmark's step is the same for every family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelShape:
    """One model of a family at one size: what to build and how to feed it."""

    family: str  # "vit" or "llama"
    name: str  # e.g. "vit_base", "llama_512"
    arch: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: head modules (trainable in every method; the frozen-base reference trains only these)
    head: tuple[str, ...] = ()
    #: regular expressions excluded from the target linears (the head always is)
    exclude: tuple[str, ...] = ()
    seq_len: int = 0  # LLaMA: tokens per sequence
    num_classes: int = 10  # ViT: classifier outputs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vit_shape(name: str, hidden: int, layers: int, heads: int, mlp: int, *, image: int = 224, patch: int = 16) -> ModelShape:
    arch = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        image_size=image,
        patch_size=patch,
    )
    return ModelShape("vit", name, arch, head=("classifier",))


def llama_shape(
    name: str, hidden: int, layers: int, heads: int, mlp: int, *, seq_len: int = 512, vocab: int = 1024
) -> ModelShape:
    arch = dict(
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=vocab,
        max_position_embeddings=max(seq_len, 128),
        rms_norm_eps=1e-5,
    )
    return ModelShape("llama", name, arch, head=("lm_head",), seq_len=seq_len)


#: ViT-B/16 and its narrower siblings (ViT-Ti/16, ViT-S/16): 12 blocks, 6 target linears each
VIT_SHAPES = {
    "vit_tiny": vit_shape("vit_tiny", 192, 12, 3, 768),
    "vit_small": vit_shape("vit_small", 384, 12, 6, 1536),
    "vit_base": vit_shape("vit_base", 768, 12, 12, 3072),
    # for tests: a few seconds for every method
    "vit_micro": vit_shape("vit_micro", 32, 2, 2, 64, image=32, patch=8),
}

#: LLaMA-style decoder stacks at sequence 512. ``llama_cpu``: a 4-block stack of width 512 that a
#: 2-core CPU trains in well under a second a step; ``llama7b_layers``: LLaMA-2 7B's layer shapes
#: (width 4096, MLP 11008, 32 heads), 2 blocks, for a GPU. The vocabulary is small (1,024; the
#: adapted layers have the paper's shapes, a 32,000-row head would only add the same cost to every
#: method) and ``lm_head`` is the trainable head (the frozen-base reference trains it alone).
LLAMA_SHAPES = {
    "llama_cpu": llama_shape("llama_cpu", 512, 4, 8, 1376),
    "llama7b_layers": llama_shape("llama7b_layers", 4096, 2, 32, 11008),
    "llama_micro": llama_shape("llama_micro", 32, 2, 4, 64, seq_len=16, vocab=64),
}

SHAPES = {**VIT_SHAPES, **LLAMA_SHAPES}


def build(shape: ModelShape, *, seed: int = 0) -> nn.Module:
    """The random-init model (float32, train mode, dropout 0 as in both configs' defaults)."""
    torch.manual_seed(seed)
    if shape.family == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        model = ViTForImageClassification(ViTConfig(**shape.arch, num_labels=shape.num_classes))
    elif shape.family == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**shape.arch, tie_word_embeddings=False))
    else:
        raise ValueError(f"unknown model family {shape.family!r}")
    return model.train()


def make_batch(
    shape: ModelShape, batch: int, *, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 1
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if shape.family == "vit":
        size = shape.arch["image_size"]
        return {
            "pixel_values": torch.randn(batch, 3, size, size, generator=g).to(device=device, dtype=dtype),
            "labels": torch.randint(0, shape.num_classes, (batch,), generator=g).to(device),
        }
    ids = torch.randint(0, shape.arch["vocab_size"], (batch, shape.seq_len), generator=g).to(device)
    return {"input_ids": ids}


def loss_fn(shape: ModelShape, model: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the classifier (ViT) or of next-token prediction (LLaMA)."""
    if shape.family == "vit":
        logits = model(pixel_values=data["pixel_values"]).logits
        return F.cross_entropy(logits, data["labels"])
    ids = data["input_ids"]
    logits = model(input_ids=ids).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def target_names(shape: ModelShape, model: nn.Module) -> list[str]:
    """Every ``nn.Linear`` outside the head: what every method adapts (ours and peft's alike)."""
    import re

    out = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(name == h or name.startswith(h + ".") for h in shape.head):
            continue
        if any(re.fullmatch(p, name) for p in shape.exclude):
            continue
        out.append(name)
    return out
