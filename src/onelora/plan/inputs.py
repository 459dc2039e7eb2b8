"""Synthetic batches in a task's real shapes and dtypes, as its data module would hand them over, so a
step can be traced without the data. One builder per task family (``task.family``); each reads the
shapes from the config the data module reads them from.

- classification: ``(images, labels)``, images at the model's input size (``model.input``);
- depth: ``{"image", "depth", "mask"}``, the image at ``task.data.input_size`` snapped to the patch
  (as the data module does), the ground truth at the dataset's own resolution (KITTI's KB crop
  352 x 1216, NYU 480 x 640, DIODE 768 x 1024; ``plan.depth_target_size`` overrides), every pixel
  valid (the loss's worst case);
- generation: ``{"latent", "label"}`` in the model's input shape (channels x size x size): the task
  trains on latents its data module encoded once (``task.data.cache_dir``), not on images;
- language: ``{"input_ids", "attention_mask", "labels"}`` of ``plan.seq_length`` tokens (default
  ``task.data.max_length``), one position padded. Real batches are padded to their longest sample,
  so the maximum length is the worst case, which is what a run must fit; with padding transformers
  passes an explicit attention mask (the memory-efficient SDPA kernel, not flash).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..config import ConfigError, as_int, plain

BatchBuilder = Callable[[int], Any]


def batch_builder(cfg: Any, model_cfg: Mapping[str, Any]) -> tuple[BatchBuilder, dict[str, Any]]:
    """The task family's synthetic batch builder, and the shapes it makes (for the report)."""
    family = cfg.task.get("family")
    builders = {"classification": _classification, "depth": _depth, "generation": _generation, "language": _language}
    if family not in builders:
        raise ConfigError(f"task.family: mode=plan knows the families {sorted(builders)}, got {family!r}")
    return builders[family](cfg, model_cfg)


def _input(model_cfg: Mapping[str, Any], key: str) -> Any:
    value = (model_cfg.get("input") or {}).get(key)
    if value is None:
        raise ConfigError(f"model.input.{key}: mode=plan needs it to shape the batch (model '{model_cfg.get('name')}')")
    return value


def _classification(cfg, model_cfg):
    size, channels = as_int(_input(model_cfg, "size"), "model.input.size", minimum=1), int(_input(model_cfg, "channels"))

    def batch(n: int):
        return torch.zeros(n, channels, size, size), torch.zeros(n, dtype=torch.long)

    return batch, {"images": [channels, size, size]}


def _depth(cfg, model_cfg):
    from ..data.depth import dataset_spec, snap_size

    data = cfg.task.data
    size = data.get("input_size") if data.get("input_size") is not None else _input(model_cfg, "size")
    patch = data.get("patch_size") or (model_cfg.get("input") or {}).get("patch_size") or 14
    height, width = snap_size(plain(size), int(patch))
    target = cfg.plan.get("depth_target_size")
    if target is None:
        name = data.get("dataset") or (cfg.task.get("dataset") or {}).get("name") or cfg.task.module.get("dataset")
        spec = dataset_spec(str(name))
        crop = data.get("kb_crop", "auto")
        crop = spec.kb_crop if crop == "auto" else crop
        target = crop or (spec.height, spec.width)
    th, tw = (int(target), int(target)) if isinstance(target, (int, float)) else (int(target[0]), int(target[1]))

    def batch(n: int):
        return {"image": torch.zeros(n, 3, height, width), "depth": torch.ones(n, 1, th, tw),
                "mask": torch.ones(n, 1, th, tw, dtype=torch.bool)}

    return batch, {"image": [3, height, width], "depth": [1, th, tw]}


def _generation(cfg, model_cfg):
    arch = model_cfg.get("arch") or {}
    channels = arch.get("in_channels")
    size = arch.get("input_size")
    if channels is None or size is None:
        raise ConfigError(f"model.arch: mode=plan needs in_channels and input_size (model '{model_cfg.get('name')}')")
    vae = (cfg.task.get("parts") or {}).get("vae")
    if vae is not None and vae.get("source") not in (None, "identity") and not cfg.task.data.get("cache_dir"):
        raise ConfigError("task.data.cache_dir: mode=plan plans training on cached latents; with no cache the task "
                          "would encode every batch with its VAE, which the plan does not trace")

    def batch(n: int):
        return {"latent": torch.zeros(n, int(channels), int(size), int(size)), "label": torch.zeros(n, dtype=torch.long)}

    return batch, {"latent": [int(channels), int(size), int(size)]}


def _language(cfg, model_cfg):
    length = cfg.plan.get("seq_length")
    key = "plan.seq_length"
    if length is None:
        length, key = cfg.task.data.get("max_length"), "task.data.max_length"
    length = as_int(length, key, minimum=2)
    positions = (model_cfg.get("arch") or {}).get("max_position_embeddings")
    if positions is not None and length > int(positions):
        raise ConfigError(f"{key}: {length} tokens exceed model '{model_cfg.get('name')}''s "
                          f"max_position_embeddings ({positions})")

    def batch(n: int):
        ids = torch.zeros(n, length, dtype=torch.long)
        mask = torch.ones(n, length, dtype=torch.long)
        mask[-1, -1] = 0  # one padded position: a batch padded to its longest sample (an explicit attention mask)
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return batch, {"tokens": [length]}
