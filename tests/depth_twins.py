"""Small synthetic copies of NYU, KITTI and DIODE outdoor in their real on-disk layouts, for the tiny
twins of the paper's depth transfers (conf/twin/depth.yaml): rendered by the project's generator and
written by its layout writers, so the real loaders read them as they read the datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onelora.data.synthetic.depth import WRITERS, render_scene

#: the dataset each depth transfer fine-tunes on: (generator layout, scene domain)
TARGETS = {
    "nyu_to_kitti": ("kitti", "outdoor"),
    "kitti_to_nyu": ("nyu", "indoor"),
    "kitti_to_diode_outdoor": ("diode", "outdoor"),
    "nyu_to_diode_outdoor": ("diode", "outdoor"),
}
#: KITTI's KB crop is fixed pixels (352 x 1216): its twin's images are rendered small and enlarged
#: 16x to 384 x 1248, so the crop runs as on the real frames
KITTI_RENDER, KITTI_SCALE = (24, 78), 16
SIZE = (42, 56)


def write_depth_twin(task: str, root: Path, *, n_train: int = 12, n_test: int = 4, seed: int = 0) -> Path:
    """The target dataset of ``task``, tiny, under ``root`` (the twin's ``task.data.root``); written once."""
    layout, domain = TARGETS[task]
    root = Path(root)
    marker = root / ".written"
    if marker.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    size = KITTI_RENDER if layout == "kitti" else SIZE
    width = size[1] * (KITTI_SCALE if layout == "kitti" else 1)
    writer = WRITERS[layout](root, domain, width)
    for split, n in (("train", n_train), ("test", n_test)):
        for index in range(n):
            rgb, depth = render_scene(domain, seed, split, index, size)
            if layout == "kitti":
                rgb, depth = (np.repeat(np.repeat(a, KITTI_SCALE, 0), KITTI_SCALE, 1) for a in (rgb, depth))
            writer.write(split, index, rgb, depth)
    writer.finish()
    marker.touch()
    return root
