"""Builders for models that come from libraries: timm ViTs, transformers ViT and LLaMA.

Depth Anything and DiT, whose paper layouts no library provides exactly, have their own modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import register_builder
from .pretrained import is_local, missing_weights


def _arch(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return dict(cfg.get("arch") or {})


def _dtype(cfg: Mapping[str, Any]) -> torch.dtype | None:
    name = cfg.get("dtype")
    return getattr(torch, name) if name else None


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors / .pt / .pth / .ckpt file (a Lightning ckpt's state_dict too)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise missing_weights(str(path), tried=path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor], head: list[str]) -> None:
    """Load everything strictly except head tensors whose shape differs (a new task head)."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k in own and own[k].shape != v.shape and _is_head(k, head))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_head(k, head)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _is_head(key: str, head: list[str]) -> bool:
    return any(key == h or key.startswith(h + ".") for h in head)


@register_builder("timm")
def build_timm(cfg: Mapping[str, Any], *, num_classes: int | None = None, load_weights: bool = True) -> nn.Module:
    """A timm model by name; ``pretrained`` is a local state-dict file or a timm / HF hub tag."""
    import timm

    name, source, arch = cfg["timm_name"], cfg.get("pretrained"), _arch(cfg)
    kwargs = dict(arch, num_classes=num_classes if num_classes is not None else arch.get("num_classes", 1000))
    if not (load_weights and source):
        return timm.create_model(name, pretrained=False, **kwargs)
    if is_local(str(source)):
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_backbone_state(model, load_state_file(source), list(cfg.get("head") or []))
        return model
    hub_name = str(source).removeprefix("timm/")
    try:
        return timm.create_model(hub_name, pretrained=True, **kwargs)
    except Exception as err:  # timm raises various errors when the hub is unreachable
        raise missing_weights(str(source), tried="the Hugging Face hub cache and hub (via timm)", cause=err) from err


def _hf_from_pretrained(cls: Any, source: str, **kwargs: Any) -> nn.Module:
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        from huggingface_hub import constants

        tried = Path(source).expanduser() if is_local(source) else f"the Hugging Face cache {constants.HF_HUB_CACHE} and hub"
        raise missing_weights(source, tried=tried, cause=err) from err


@register_builder("hf_vit")
def build_hf_vit(cfg: Mapping[str, Any], *, num_classes: int | None = None, load_weights: bool = True) -> nn.Module:
    """transformers' ViTForImageClassification (separate q, k, v; the paper's ViT-B layout)."""
    from transformers import ViTConfig, ViTForImageClassification

    num_labels = num_classes or 1000
    source = cfg.get("pretrained")
    if load_weights and source:
        return _hf_from_pretrained(
            ViTForImageClassification, str(source), num_labels=num_labels, ignore_mismatched_sizes=True
        )
    return ViTForImageClassification(ViTConfig(**_arch(cfg), num_labels=num_labels))


@register_builder("hf_llama")
def build_hf_llama(cfg: Mapping[str, Any], *, num_classes: int | None = None, load_weights: bool = True) -> nn.Module:
    """transformers' LlamaForCausalLM (LLaMA-2 7B / 13B, or a tiny twin)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    source, dtype = cfg.get("pretrained"), _dtype(cfg)
    if load_weights and source:
        return _hf_from_pretrained(LlamaForCausalLM, str(source), dtype=dtype)
    model = LlamaForCausalLM(LlamaConfig(**_arch(cfg), tie_word_embeddings=False))
    return model.to(dtype) if dtype else model


from . import depth_anything, dit  # noqa: E402,F401  (register their builders)
