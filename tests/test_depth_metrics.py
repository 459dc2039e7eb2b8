"""Depth loss and metrics against values computed by hand (numpy) on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from onelora.metrics.depth import (
    METRIC_NAMES,
    DepthMetrics,
    clamp_prediction,
    crop_box,
    evaluation_mask,
    per_image_errors,
    silog_loss,
)


def numpy_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The metric definitions, written out on the valid pixels only (1-D arrays)."""
    gt, pred = gt.astype(np.float64), pred.astype(np.float64)
    ratio = np.maximum(gt / pred, pred / gt)
    e = np.log(pred) - np.log(gt)
    return {
        "a1": np.mean(ratio < 1.25),
        "a2": np.mean(ratio < 1.25**2),
        "a3": np.mean(ratio < 1.25**3),
        "abs_rel": np.mean(np.abs(gt - pred) / gt),
        "sq_rel": np.mean((gt - pred) ** 2 / gt),
        "rmse": np.sqrt(np.mean((gt - pred) ** 2)),
        "rmse_log": np.sqrt(np.mean(e**2)),
        "log_10": np.mean(np.abs(np.log10(gt) - np.log10(pred))),
        "silog": 100 * np.sqrt(max(np.mean(e**2) - np.mean(e) ** 2, 0.0)),
    }


def as_dict(errors: torch.Tensor) -> dict[str, float]:
    return {name: float(errors[i]) for i, name in enumerate(METRIC_NAMES)}


# ---------------------------------------------------------------------------- loss


def test_silog_by_hand():
    pred = torch.tensor([[[1.0, 2.0], [4.0, 8.0]]])
    gt = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # the last pixel is invalid
    mask = gt > 0
    g = np.log(np.array([1.0, 2.0, 4.0]) + 1e-7) - np.log(np.array([1.0, 1.0, 1.0]) + 1e-7)
    expected = 10 * math.sqrt(np.var(g, ddof=1) + 0.15 * np.mean(g) ** 2)  # torch.var is unbiased
    loss = silog_loss(pred, gt, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # perfect prediction: zero; a global scale only costs beta * mean^2 (scale invariance 0.85)
    assert silog_loss(gt.clamp_min(1.0), gt.clamp_min(1.0), mask).item() == pytest.approx(0.0, abs=1e-4)
    scaled = silog_loss(2 * gt.clamp_min(1.0), gt.clamp_min(1.0), mask).item()
    assert scaled == pytest.approx(10 * math.sqrt(0.15) * math.log(2), rel=1e-5)


def test_silog_upsamples_the_prediction_bilinearly():
    pred = torch.tensor([[[1.0, 3.0]]])  # 1 x 2 -> 1 x 3 with align_corners: 1, 2, 3
    gt = torch.tensor([[[1.0, 2.0, 3.0]]])
    loss = silog_loss(pred, gt, gt > 0)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    assert silog_loss(pred[:, None], gt[:, None], gt[:, None] > 0).item() == pytest.approx(0.0, abs=1e-4)


def test_silog_empty_mask_single_pixel_and_non_positive_predictions():
    pred = torch.full((2, 4, 4), 3.0, requires_grad=True)
    gt = torch.zeros(2, 4, 4)
    loss = silog_loss(pred, gt, gt > 0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    gt[0, 1, 1] = 2.0
    one = silog_loss(pred, gt, gt > 0)  # one pixel: biased variance 0, only the mean term
    assert one.item() == pytest.approx(10 * math.sqrt(0.15) * abs(math.log(3.0 / 2.0)), rel=1e-5)
    neg = torch.tensor([[[-1.0, 0.0]]], requires_grad=True)
    out = silog_loss(neg, torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[True, True]]]))
    assert torch.isfinite(out)  # clamped to 1e-3 before the log
    assert out.item() == pytest.approx(10 * math.sqrt(0.15) * abs(math.log(1e-3 + 1e-7)), rel=1e-4)


def test_silog_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="shapes differ"):
        silog_loss(torch.ones(1, 4, 4), torch.ones(1, 4, 4), torch.ones(1, 3, 4, dtype=torch.bool))


# ---------------------------------------------------------------------------- crops and masks


def test_crop_boxes():
    assert crop_box(480, 640, "eigen") == (45, 471, 41, 601)  # NYU's fixed Eigen crop
    assert crop_box(56, 56, "eigen") == (round(45 * 56 / 480), round(471 * 56 / 480), round(41 * 56 / 640), round(601 * 56 / 640))
    # KITTI after the KB crop: int(0.40810811 * 352) = 143, int(0.99189189 * 352) = 349, ...
    assert crop_box(352, 1216, "garg") == (143, 349, 43, 1172)
    assert crop_box(768, 1024, "garg") == (313, 761, 36, 987)  # DIODE
    assert crop_box(352, 1216, "eigen_kitti") == (117, 321, 43, 1172)
    assert crop_box(10, 20, None) == (0, 10, 0, 20)
    with pytest.raises(ValueError, match="evaluation crop must be one of"):
        crop_box(10, 10, "eigne")


def test_evaluation_mask_range_is_strict_and_cropped():
    gt = torch.tensor([[[0.0, 1e-3, 0.5], [5.0, 10.0, 9.99]]])
    assert evaluation_mask(gt, 1e-3, 10.0, None).tolist() == [[[False, False, True], [True, False, True]]]
    big = torch.ones(1, 480, 640)
    mask = evaluation_mask(big, 1e-3, 10.0, "eigen")
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[0, 45, 41] and not mask[0, 44, 41] and not mask[0, 471, 100] and not mask[0, 100, 601]


def test_clamp_prediction_like_the_reference():
    pred = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0, 5.0, 100.0])
    assert clamp_prediction(pred, 1e-3, 80.0).tolist() == pytest.approx([80.0, 1e-3, 1e-3, 1e-3, 5.0, 80.0])


# ---------------------------------------------------------------------------- metrics


def test_per_image_errors_match_numpy_with_mask_crop_and_clamping():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 12.0, size=(2, 1, 12, 16)).astype(np.float32)
    gt[0, 0, 3, 4] = 0.0  # missing
    gt[1, 0, 5:7, 6:9] = 0.0
    pred = (gt * rng.uniform(0.7, 1.4, size=gt.shape)).astype(np.float32)
    pred[0, 0, 6, 6] = np.inf
    pred[0, 0, 7, 7] = np.nan
    pred[1, 0, 8, 8] = -3.0
    min_d, max_d = 1e-3, 10.0
    errors, n = per_image_errors(torch.from_numpy(pred), torch.from_numpy(gt), min_depth=min_d, max_depth=max_d, crop="garg")
    top, bottom, left, right = crop_box(12, 16, "garg")
    for b in range(2):
        p = pred[b, 0].astype(np.float64).copy()
        p[p < min_d] = min_d
        p[p > max_d] = max_d
        p[np.isinf(p)] = max_d
        p[np.isnan(p)] = min_d
        g = gt[b, 0].astype(np.float64)
        valid = (g > min_d) & (g < max_d)
        crop = np.zeros_like(valid)
        crop[top:bottom, left:right] = True
        valid &= crop
        assert int(n[b]) == valid.sum()
        expected = numpy_errors(g[valid], p[valid])
        got = as_dict(errors[b])
        for name in METRIC_NAMES:
            assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


def test_metric_values_by_hand():
    # gt 1, 2, 4, 1.5; pred 2 everywhere: ratios 2, 1, 2, 4/3; |gt - pred| 1, 0, 2, 0.5
    gt = torch.tensor([[[1.0, 2.0, 4.0, 1.5]]])
    pred = torch.full((1, 1, 4), 2.0)
    errors, n = per_image_errors(pred, gt, min_depth=1e-3, max_depth=10.0)
    got = as_dict(errors[0])
    assert int(n[0]) == 4
    # delta thresholds 1.25, 1.5625, 1.953: 2 passes none of them
    assert (got["a1"], got["a2"], got["a3"]) == pytest.approx((1 / 4, 2 / 4, 2 / 4))
    assert got["abs_rel"] == pytest.approx((1 / 1 + 0 / 2 + 2 / 4 + 0.5 / 1.5) / 4)
    assert got["sq_rel"] == pytest.approx((1 / 1 + 0 + 4 / 4 + 0.25 / 1.5) / 4)
    assert got["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4 + 0.25) / 4))
    e = [math.log(2), 0.0, -math.log(2), math.log(4 / 3)]
    mean_e, mean_e2 = sum(e) / 4, sum(x * x for x in e) / 4
    assert got["rmse_log"] == pytest.approx(math.sqrt(mean_e2))
    assert got["log_10"] == pytest.approx((2 * math.log10(2) + math.log10(4 / 3)) / 4)
    assert got["silog"] == pytest.approx(100 * math.sqrt(mean_e2 - mean_e**2))


def test_depth_metrics_average_over_images_not_pixels_and_skip_empty_ones():
    metric = DepthMetrics(min_depth=1e-3, max_depth=10.0)
    gt1 = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # 1 valid pixel
    gt2 = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # 3 valid pixels
    metric.update(torch.full((1, 2, 2), 3.0), gt1)  # error 2 m
    metric.update(torch.full((1, 2, 2), 2.0), gt2)  # error 1 m on each
    metric.update(torch.ones(2, 2, 2), torch.zeros(2, 2, 2))  # no valid pixel: skipped, as KITTI's None lines
    out = metric.compute()
    assert out["rmse"].item() == pytest.approx((2.0 + 1.0) / 2)  # per image, then the mean over images
    assert out["rmse"].item() != pytest.approx(math.sqrt((4 + 3 * 1) / 4))  # not pooled over pixels
    assert out["abs_rel"].item() == pytest.approx((2.0 + 1.0) / 2)
    assert out["a1"].item() == pytest.approx(0.0)
    assert int(metric.images) == 2 and int(metric.skipped) == 2
    metric.reset()
    assert int(metric.images) == 0


def test_depth_metrics_batches_equal_single_images_and_upsample():
    rng = np.random.default_rng(1)
    gt = torch.from_numpy(rng.uniform(0.5, 9.0, size=(3, 1, 14, 14)).astype(np.float32))
    pred = torch.from_numpy(rng.uniform(0.5, 9.0, size=(3, 7, 7)).astype(np.float32))
    batched = DepthMetrics(min_depth=1e-3, max_depth=10.0, crop="eigen")
    batched.update(pred, gt)
    single = DepthMetrics(min_depth=1e-3, max_depth=10.0, crop="eigen")
    for i in range(3):
        single.update(pred[i : i + 1], gt[i : i + 1])
    a, b = batched.compute(), single.compute()
    for name in METRIC_NAMES:
        assert a[name].item() == pytest.approx(b[name].item(), rel=1e-12)
    up = torch.nn.functional.interpolate(pred[:, None], size=(14, 14), mode="bilinear", align_corners=True)
    errors, _ = per_image_errors(up, gt, min_depth=1e-3, max_depth=10.0, crop="eigen")
    assert a["rmse"].item() == pytest.approx(errors[:, METRIC_NAMES.index("rmse")].mean().item(), rel=1e-12)


def test_depth_metrics_valid_mask_restricts_pixels_and_errors():
    metric = DepthMetrics(min_depth=1e-3, max_depth=80.0)
    gt = torch.tensor([[[1.0, 1.0]]])
    valid = torch.tensor([[[True, False]]])
    metric.update(torch.tensor([[[1.0, 5.0]]]), gt, valid)
    assert metric.compute()["rmse"].item() == pytest.approx(0.0)
    empty = DepthMetrics(min_depth=1e-3, max_depth=80.0)
    empty.update(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(RuntimeError, match="no image with a valid pixel"):
        empty.compute()
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        DepthMetrics(min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="evaluation crop"):
        DepthMetrics(min_depth=0.0, max_depth=1.0, crop="eigne")


def test_depth_metrics_states_merge_like_ddp_ranks():
    """Two ranks' states summed (what DDP sync does) give the single-process result."""
    rng = np.random.default_rng(2)
    gt = torch.from_numpy(rng.uniform(0.0, 12.0, size=(5, 8, 8)).astype(np.float32))
    pred = torch.from_numpy(rng.uniform(0.5, 9.0, size=(5, 8, 8)).astype(np.float32))
    full = DepthMetrics(min_depth=1e-3, max_depth=10.0)
    full.update(pred, gt)
    rank0, rank1 = (DepthMetrics(min_depth=1e-3, max_depth=10.0) for _ in range(2))
    rank0.update(pred[:2], gt[:2])
    rank1.update(pred[2:], gt[2:])
    rank0.merge_state(rank1)
    a, b = full.compute(), rank0.compute()
    for name in METRIC_NAMES:
        assert a[name].item() == pytest.approx(b[name].item(), rel=1e-12)
