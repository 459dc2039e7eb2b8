"""What every adapter test runs on: each method of the paper and 1LoRA's combinations, and the
tiny models (a timm ViT, a transformers LLaMA) they are injected into."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from onelora.adapters import ADAPTER_KINDS, MethodSpec

HEAD = ["head"]


def shipped_methods() -> dict[str, dict]:
    """Every method config of the method table (``onelora.methods``: conf/method/, or the folders
    ``ONELORA_CONF`` names) as MethodSpec fields, by the method's name: the paper's methods and the
    1LoRA combinations of Tables S11 / S12. Left out: methods on another target set than
    ``linear`` (``lora_qkv``: the tiny models here define only ``linear``) and the un-adapted
    ``none``. The tiny models have a head, so ``head``'s probe module set is dropped."""
    from dataclasses import fields

    from onelora.methods import method_config, method_table

    keys = {f.name for f in fields(MethodSpec)} - {"name", "modules"}
    out = {}
    for info in method_table().values():
        cfg = method_config(info.file)
        if cfg.get("targets", "linear") == "linear" and info.name != "unadapted":
            out[info.name] = {k: v for k, v in cfg.items() if k in keys}
    return out


def per_layer_formulas() -> dict[str, str | None]:
    """Each method's trainable parameters per target layer as its YAML states the paper's count
    (``describe.per_layer``, in k input and d output features): the tests' oracle."""
    from onelora.methods import method_table

    return {info.name: info.per_layer for info in method_table().values()}


def per_layer(formula: str | None, k: int, d: int) -> int:
    """A ``describe.per_layer`` formula evaluated for a k -> d layer (None: the method adds none)."""
    import math

    if formula is None:
        return 0
    return int(eval(formula, {"__builtins__": {"int": int}}, {"k": k, "d": d, "sqrt": math.sqrt}))


METHODS: dict[str, dict] = shipped_methods()
PER_LAYER: dict[str, str | None] = per_layer_formulas()
#: every registered per-linear update kind
LINEAR_KINDS: list[str] = sorted(k for k in ADAPTER_KINDS if k != "none")
#: the methods that are one linear kind alone (no bias, gamma or norms), one per kind
KIND_METHODS: list[str] = [n for n, c in METHODS.items()
                           if c.get("linear") and not (c.get("bias") or c.get("gamma") or c.get("norms"))]


def spec_of(name: str) -> MethodSpec:
    return MethodSpec.from_config({"name": name, **METHODS[name]})


def tiny_vit(seed: int = 0) -> VisionTransformer:
    """A 2-block timm ViT (width 32, fused qkv 32->96, fc1 32->64, fc2 64->32) with non-trivial
    biases and norm parameters (timm initialises them to 0 / 1, which would hide bugs)."""
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2, num_classes=5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tiny_llama(seed: int = 0):
    """A 2-block transformers LLaMA (width 16, MLP 24, one KV head so k, v are 16 -> 8: layers of
    different shapes) with non-trivial norm weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model
