"""Builders for models that come from libraries: timm ViTs, transformers ViT and LLaMA.

Depth Anything and DiT, whose paper layouts no library provides exactly, have their own modules.
Weights come through :mod:`onelora.models.weights`: a local file is loaded into a model built from
``arch``; a directory or hub id goes through the library's own ``from_pretrained``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from . import register_builder
from .weights import is_local, is_url, load_directory, load_into, load_state, resolve_directory


def _arch(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return dict(cfg.get("arch") or {})


def _dtype(cfg: Mapping[str, Any]) -> torch.dtype | None:
    name = cfg.get("dtype")
    return getattr(torch, name) if name else None


def _is_file(source: str) -> bool:
    from pathlib import Path

    return is_url(source) or (is_local(source) and Path(source).expanduser().is_file())


@register_builder("timm")
def build_timm(cfg: Mapping[str, Any], *, num_classes: int | None = None, load_weights: bool = True) -> nn.Module:
    """A timm model by name; ``pretrained`` is a weights file / directory or a hub id (``timm/<name>``)."""
    import timm

    arch = _arch(cfg)
    kwargs = dict(arch, num_classes=num_classes if num_classes is not None else arch.get("num_classes", 1000))
    model = timm.create_model(cfg["timm_name"], pretrained=False, **kwargs)
    source = cfg.get("pretrained")
    if load_weights and source:
        load_into(model, load_state(str(source)), head=list(cfg.get("head") or []), source=str(source))
    return model


@register_builder("hf_vit")
def build_hf_vit(cfg: Mapping[str, Any], *, num_classes: int | None = None, load_weights: bool = True) -> nn.Module:
    """transformers' ViTForImageClassification (separate q, k, v; the paper's ViT-B layout)."""
    from transformers import ViTConfig, ViTForImageClassification

    num_labels = num_classes or 1000
    source = str(cfg.get("pretrained") or "")
    if not (load_weights and source):
        return ViTForImageClassification(ViTConfig(**_arch(cfg), num_labels=num_labels))
    if _is_file(source):
        model = ViTForImageClassification(ViTConfig(**_arch(cfg), num_labels=num_labels))
        return load_into(model, load_state(source), head=list(cfg.get("head") or []), source=source)
    directory = resolve_directory(source)
    return load_directory(lambda: ViTForImageClassification.from_pretrained(
        directory, num_labels=num_labels, ignore_mismatched_sizes=True), directory)


@register_builder("hf_llama")
def build_hf_llama(cfg: Mapping[str, Any], *, vocab_size: int | None = None, load_weights: bool = True) -> nn.Module:
    """transformers' LlamaForCausalLM (LLaMA-2 7B / 13B, or a tiny twin); ``vocab_size`` from the task's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    source, dtype = str(cfg.get("pretrained") or ""), _dtype(cfg)
    arch = _arch(cfg) | ({"vocab_size": int(vocab_size)} if vocab_size else {})
    if load_weights and source and not _is_file(source):
        directory = resolve_directory(source)
        return load_directory(lambda: LlamaForCausalLM.from_pretrained(directory, dtype=dtype), directory)
    model = LlamaForCausalLM(LlamaConfig(**arch, tie_word_embeddings=False))
    model = model.to(dtype) if dtype else model
    if load_weights and source:
        load_into(model, load_state(source), source=source)
    return model


from . import depth_anything, dit  # noqa: E402,F401  (register their builders)
