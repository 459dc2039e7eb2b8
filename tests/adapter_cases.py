"""What every adapter test runs on: each method of the paper and 1LoRA's combinations, and the
tiny models (a timm ViT, a transformers LLaMA) they are injected into."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from onelora.adapters import MethodSpec

HEAD = ["head"]

def _shipped_methods() -> dict[str, dict]:
    """Every method config of conf/method/ (the paper's methods and the 1LoRA combinations of
    Tables S11 / S12) as MethodSpec fields, by the method's name. Left out: methods on another
    target set than ``linear`` (``lora_qkv``: the tiny models here define only ``linear``) and the
    un-adapted ``none``. The tiny models have a head, so ``head``'s probe module set is dropped."""
    from dataclasses import fields

    from onelora.methods import method_config, method_files

    keys = {f.name for f in fields(MethodSpec)} - {"name", "modules"}
    out = {}
    for file in method_files():
        cfg = method_config(file)
        if cfg.get("targets", "linear") == "linear" and cfg["name"] != "unadapted":
            out[cfg["name"]] = {k: v for k, v in cfg.items() if k in keys}
    return out


METHODS: dict[str, dict] = _shipped_methods()


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
