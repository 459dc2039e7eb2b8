"""Monocular depth: the SILog training loss and the evaluation metrics of Depth Anything's metric_depth.

Both follow the reference (LiheYoung/Depth-Anything ``metric_depth``, ZoeDepth-based):

- **Loss** (``trainers/loss.py: SILogLoss``, beta 0.15, i.e. variance focus 0.85): the prediction is
  upsampled bilinearly (align_corners) to the ground truth's size, ``g = log(pred + 1e-7) -
  log(gt + 1e-7)`` over the valid pixels of the whole batch, ``loss = 10 * sqrt(Var(g) + beta *
  mean(g)^2)`` with torch's unbiased variance, in float32 (the reference disables AMP there).
  Additions of ours, documented: predictions are clamped to >= ``min_pred`` (1e-3) before the log
  (a non-positive prediction would give NaN), an empty mask gives a zero loss (not NaN), and one
  valid pixel uses the biased variance (the unbiased one is NaN there).
- **Metrics** (``utils/misc.py: compute_metrics / compute_errors``): prediction upsampled to the
  ground truth, clamped to ``[min_depth, max_depth]`` (+inf -> max, NaN and -inf -> min); valid
  pixels are ``min_depth < gt < max_depth`` inside the evaluation crop (Eigen for NYU, Garg for KITTI
  and DIODE: ``onelora.data.crops``, the datasets' protocol). Each image gets a1/a2/a3, abs_rel, sq_rel, rmse, rmse_log, log_10, silog, and the
  evaluation set's value is the **mean over images** (ZoeDepth's ``RunningAverageDict``), not over
  pixels. Images without a valid pixel are skipped (the reference skips KITTI's missing ground
  truth; an empty mask there would give NaN).

``DepthMetrics`` is a torchmetrics ``Metric``: the per-image sums and the image count are its
states, summed across processes, so DDP evaluation gives the single-process numbers.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from ..data.crops import crop_box

#: metric names in the reference's order of definition; a1..a3 are "higher is better"
METRIC_NAMES: tuple[str, ...] = ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog")
HIGHER_IS_BETTER = frozenset({"a1", "a2", "a3"})


def resize_to(pred: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B,h,w) or (B,1,h,w) -> (B,1,H,W), bilinear with align_corners as the reference."""
    if pred.ndim == 3:
        pred = pred.unsqueeze(1)
    if tuple(pred.shape[-2:]) != tuple(size):
        pred = F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=True)
    return pred


def _as_b1hw(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.ndim == 3 else x


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def silog_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.15,
    eps: float = 1e-7,
    min_pred: float = 1e-3,
) -> torch.Tensor:
    """ZoeDepth's SILog loss over the valid pixels of the whole batch.

    pred (B,h,w) or (B,1,h,w), upsampled to target's (B,[1,]H,W); mask: bool, same shape as target.
    """
    target, mask = _as_b1hw(target), _as_b1hw(mask).bool()
    pred = resize_to(pred, target.shape[-2:])
    if pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(f"silog_loss: shapes differ: pred {tuple(pred.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)}")
    with torch.autocast(device_type=pred.device.type, enabled=False):  # the reference: AMP gives NaNs here
        p = pred.float()[mask].clamp_min(min_pred)
        if p.numel() == 0:
            return pred.float().sum() * 0.0  # no valid pixel: zero, still attached to the graph
        g = torch.log(p + eps) - torch.log(target.float()[mask] + eps)
        variance = torch.var(g, correction=1 if g.numel() > 1 else 0)
        return 10.0 * torch.sqrt(variance + beta * g.mean() ** 2)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def evaluation_mask(target: torch.Tensor, min_depth: float, max_depth: float, crop: str | None) -> torch.Tensor:
    """Valid pixels: ``min_depth < gt < max_depth`` inside the crop; target (B,[1,]H,W) -> bool same shape."""
    valid = (target > min_depth) & (target < max_depth)
    top, bottom, left, right = crop_box(target.shape[-2], target.shape[-1], crop)
    inside = torch.zeros_like(valid)
    inside[..., top:bottom, left:right] = True
    return valid & inside


def clamp_prediction(pred: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """The reference's order: < min -> min, > max -> max, inf -> max, NaN -> min (so -inf -> min)."""
    return torch.nan_to_num(pred, nan=min_depth, posinf=max_depth, neginf=min_depth).clamp(min_depth, max_depth)


def per_image_errors(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    min_depth: float,
    max_depth: float,
    crop: str | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's metrics, in float64.

    Returns ``(errors (B, 9) in METRIC_NAMES order, n_valid (B,))``; rows with ``n_valid == 0`` are
    NaN. ``valid`` (optional, bool like target) further restricts the pixels (e.g. a sensor mask).
    """
    target = _as_b1hw(target).double()
    pred = clamp_prediction(resize_to(pred.detach(), target.shape[-2:]).double(), min_depth, max_depth)
    mask = evaluation_mask(target, min_depth, max_depth, crop)
    if valid is not None:
        mask = mask & _as_b1hw(valid).bool()
    dims = (1, 2, 3)
    n = mask.sum(dims)
    gt = torch.where(mask, target, torch.ones_like(target))  # 1 where invalid: every term finite there
    pr = torch.where(mask, pred, torch.ones_like(pred))

    def mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, x, torch.zeros_like(x)).sum(dims) / n

    ratio = torch.maximum(gt / pr, pr / gt)
    diff = gt - pr
    log_err = torch.log(pr) - torch.log(gt)
    errors = torch.stack(
        [
            mean((ratio < 1.25).double()),
            mean((ratio < 1.25**2).double()),
            mean((ratio < 1.25**3).double()),
            mean(diff.abs() / gt),
            mean(diff**2 / gt),
            mean(diff**2).sqrt(),
            mean(log_err**2).sqrt(),
            mean((torch.log10(gt) - torch.log10(pr)).abs()),
            # the reference's 100 * sqrt(mean(e^2) - mean(e)^2); rounding can make it -0.0...: clamp
            100 * (mean(log_err**2) - mean(log_err) ** 2).clamp_min(0).sqrt(),
        ],
        dim=1,
    )
    return errors, n


class DepthMetrics(Metric):
    """The reference's evaluation: per-image metrics averaged over the images of the whole set.

    ``update(pred, target, valid=None)``: pred (B,[1,]h,w) any size (upsampled), target (B,[1,]H,W)
    in metres. ``compute()`` -> {name: mean over images}; ``images`` / ``skipped`` count the images
    used and those without a valid pixel.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, *, min_depth: float, max_depth: float, crop: str | None = None):
        super().__init__()
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"DepthMetrics: need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        crop_box(480, 640, crop)  # validates the name
        self.min_depth, self.max_depth, self.crop = float(min_depth), float(max_depth), crop
        self.add_state("sums", default=torch.zeros(len(METRIC_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        errors, n = per_image_errors(
            pred, target, min_depth=self.min_depth, max_depth=self.max_depth, crop=self.crop, valid=valid
        )
        used = n > 0
        self.sums += errors[used].sum(0).to(self.sums.dtype)
        self.images += used.sum()
        self.skipped += (~used).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        if int(self.images) == 0:
            raise RuntimeError(
                f"DepthMetrics: no image with a valid pixel ({int(self.skipped)} skipped): check the ground truth's "
                f"units and the range [{self.min_depth}, {self.max_depth}] m"
            )
        means = self.sums / self.images
        return {name: means[i] for i, name in enumerate(METRIC_NAMES)}
