"""Image transforms per model (its input size, mean and std) and per task recipe."""

from __future__ import annotations

from typing import Any, Mapping

from torchvision import transforms as T


def classification_transforms(model_input: Mapping[str, Any], augment: Mapping[str, Any] | None, train: bool):
    """The paper's recipe: RandomResizedCrop + horizontal flip for training; resize for evaluation."""
    size = int(model_input["size"])
    normalize = T.Normalize(mean=list(model_input["mean"]), std=list(model_input["std"]))
    augment = dict(augment or {})
    steps: list[Any] = []
    if train and augment.get("random_resized_crop", True):
        steps.append(T.RandomResizedCrop(size, scale=tuple(augment.get("crop_scale", (0.08, 1.0)))))
    else:
        steps.append(T.Resize((size, size)))
    if train and augment.get("hflip", True):
        steps.append(T.RandomHorizontalFlip())
    if int(model_input.get("channels", 3)) == 1:
        steps.append(T.Grayscale(1))
    steps += [T.ToTensor(), normalize]
    return T.Compose(steps)
