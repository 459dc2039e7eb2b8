"""The depth datasets' evaluation crops: where on a ground truth the metrics are computed.

Part of a dataset's evaluation protocol (Depth Anything's ``metric_depth``, ZoeDepth-based):
Eigen's crop for NYU, Garg's for KITTI and DIODE outdoor (Eigen's KITTI crop as an option). The
data modules check a crop's name when they are built; ``onelora.metrics.depth`` applies it.
"""

from __future__ import annotations

#: evaluation crops as fractions of the ground truth's height / width (top, bottom, left, right)
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
EIGEN_KITTI_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
#: NYU's Eigen crop is fixed pixels on 480 x 640: rows 45:471, cols 41:601
EIGEN_NYU_PIXELS = (45, 471, 41, 601)
EIGEN_NYU_SIZE = (480, 640)
CROPS = ("eigen", "garg", "eigen_kitti")


def crop_box(height: int, width: int, crop: str | None) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the evaluation crop on a ``height x width`` ground truth.

    ``garg`` / ``eigen_kitti``: the reference's fractions, truncated with ``int`` as it does.
    ``eigen`` (NYU): rows 45:471, cols 41:601 on 480 x 640; on other sizes the same box scaled
    (rounded), so a synthetic NYU-layout set at 56 x 56 gets the proportional crop.
    """
    if crop in (None, "none"):
        return 0, height, 0, width
    if crop == "eigen":
        (t, b, l, r), (h0, w0) = EIGEN_NYU_PIXELS, EIGEN_NYU_SIZE
        return round(t * height / h0), round(b * height / h0), round(l * width / w0), round(r * width / w0)
    fractions = {"garg": GARG_CROP, "eigen_kitti": EIGEN_KITTI_CROP}.get(crop)
    if fractions is None:
        raise ValueError(f"evaluation crop must be one of {list(CROPS)} or None, got {crop!r}")
    t, b, l, r = fractions
    return int(t * height), int(b * height), int(l * width), int(r * width)
