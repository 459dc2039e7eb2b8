"""The synthetic RGB-D generator: deterministic, in range, cached once, and read by the real loaders."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

from onelora.data.depth import DIODEDepthDataModule, SplitFileDepthDataModule
from onelora.data.synthetic.depth import (
    MARKER,
    SPLIT_FILES,
    ensure_synthetic_depth,
    render_scene,
    synthetic_folder_name,
)

SIZE = 28


@pytest.mark.parametrize("domain", ["indoor", "outdoor"])
def test_render_is_deterministic_per_seed_split_and_index(domain):
    a_rgb, a_depth = render_scene(domain, 3, "train", 5, SIZE)
    b_rgb, b_depth = render_scene(domain, 3, "train", 5, SIZE)
    assert np.array_equal(a_rgb, b_rgb) and np.array_equal(a_depth, b_depth)
    assert a_rgb.shape == (SIZE, SIZE, 3) and a_rgb.dtype == np.uint8 and a_depth.dtype == np.float32
    for other in (render_scene(domain, 4, "train", 5, SIZE), render_scene(domain, 3, "test", 5, SIZE),
                  render_scene(domain, 3, "train", 6, SIZE)):
        assert not np.array_equal(a_depth, other[1])


def test_depth_ranges_per_domain():
    indoor = np.stack([render_scene("indoor", 0, "train", i, 40)[1] for i in range(12)])
    valid = indoor[indoor > 0]
    assert valid.min() > 0.3 and valid.max() <= 10.0  # rooms: up to NYU's 10 m, beyond that written as 0
    assert (indoor > 0).mean() > 0.95  # a closed room: (almost) every pixel has depth
    assert 2.0 < np.median(valid) < 6.0
    outdoor = np.stack([render_scene("outdoor", 0, "train", i, 40)[1] for i in range(12)])
    valid = outdoor[outdoor > 0]
    assert valid.min() > 1.0 and valid.max() <= 80.0  # KITTI's range; sky and farther are 0
    assert valid.max() > 40.0  # the road runs to the horizon
    sky = outdoor == 0
    assert 0.03 < sky.mean() < 0.6
    assert sky[:, 0].mean() > sky[:, -1].mean()  # sky at the top rows, ground at the bottom
    rgb, _ = render_scene("outdoor", 0, "train", 0, 40)
    assert rgb.std() > 10  # textured, not flat


def test_nyu_layout_is_read_by_the_real_loader(tmp_path):
    root = ensure_synthetic_depth(tmp_path, "indoor", "nyu", n_train=5, n_test=3, seed=1, size=SIZE)
    train_list, test_list = SPLIT_FILES["nyu"]
    assert (root / train_list).read_text().startswith("/synthetic_room_0000/rgb_00000.jpg /synthetic_room_0000/sync_depth_00000.png ")
    dm = SplitFileDepthDataModule(dataset="nyu", root=str(root), train_list=str(root / train_list),
                                  test_list=str(root / test_list), input_size=SIZE, augment=False, val_fraction=0.2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 1, 3)
    sample = dm.test_set[2]
    _, depth = render_scene("indoor", 1, "test", 2, SIZE)
    assert torch.allclose(sample["depth"][0], torch.from_numpy(depth), atol=0.5e-3 + 1e-6)  # mm precision
    assert sample["image"].shape == (3, SIZE, SIZE)


def test_kitti_layout_is_read_by_the_real_loader(tmp_path):
    root = ensure_synthetic_depth(tmp_path, "outdoor", "kitti", n_train=4, n_test=2, seed=0, size=SIZE)
    train_list, test_list = SPLIT_FILES["kitti"]
    dm = SplitFileDepthDataModule(dataset="kitti", root=str(root), train_list=train_list,  # relative: inside root
                                  test_list=test_list, input_size=SIZE, kb_crop=None, augment=False,
                                  val_fraction=0.25)
    dm.setup()
    sample = dm.test_set[1]
    _, depth = render_scene("outdoor", 0, "test", 1, SIZE)
    assert torch.allclose(sample["depth"][0], torch.from_numpy(depth), atol=0.5 / 256 + 1e-6)  # 1/256 m steps
    assert torch.equal(sample["mask"][0], torch.from_numpy((depth > 1e-3) & (depth < 80.0)))
    assert not sample["mask"].all()  # the sky


def test_diode_layout_is_read_by_the_real_loader(tmp_path):
    root = ensure_synthetic_depth(tmp_path, "outdoor", "diode", n_train=3, n_test=2, seed=0, size=SIZE)
    assert len(list((root / "val/outdoor").glob("scene_*/scan_*/*_depth_mask.npy"))) == 2
    dm = DIODEDepthDataModule(root=str(root), input_size=SIZE, augment=False, use_depth_mask=True, val_fraction=0.34)
    dm.setup()
    _, depth = render_scene("outdoor", 0, "test", 0, SIZE)
    assert torch.equal(dm.test_set[0]["depth"][0], torch.from_numpy(depth))  # float metres, exact


def test_cache_writes_once_and_keys_by_settings(tmp_path, capsys):
    first = ensure_synthetic_depth(tmp_path, "indoor", "nyu", n_train=3, n_test=2, seed=0, size=SIZE)
    marker = first / MARKER
    stamp = marker.stat().st_mtime_ns
    again = ensure_synthetic_depth(tmp_path, "indoor", "nyu", n_train=3, n_test=2, seed=0, size=SIZE)
    assert again == first and marker.stat().st_mtime_ns == stamp
    assert json.loads(marker.read_text())["seed"] == 0
    other = ensure_synthetic_depth(tmp_path, "indoor", "nyu", n_train=3, n_test=2, seed=1, size=SIZE)
    assert other != first and other.name == synthetic_folder_name("indoor", "nyu", 3, 2, 1, SIZE)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary folder left behind
    marker.write_text(json.dumps({"seed": 99}))
    with pytest.raises(RuntimeError, match="holds other settings"):
        ensure_synthetic_depth(tmp_path, "indoor", "nyu", n_train=3, n_test=2, seed=0, size=SIZE)
    marker.unlink()
    with pytest.raises(RuntimeError, match="without its marker"):
        ensure_synthetic_depth(tmp_path, "indoor", "nyu", n_train=3, n_test=2, seed=0, size=SIZE)
    with pytest.raises(ValueError, match="domain must be one of"):
        ensure_synthetic_depth(tmp_path, "underwater", "nyu", n_train=3, n_test=2)
    with pytest.raises(ValueError, match="layout must be one of"):
        ensure_synthetic_depth(tmp_path, "indoor", "sunrgbd", n_train=3, n_test=2)


def _ensure_in_child(root: str, queue) -> None:
    queue.put(str(ensure_synthetic_depth(root, "outdoor", "kitti", n_train=6, n_test=2, seed=0, size=16)))


def test_parallel_runs_write_the_set_once(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    paths = {queue.get(timeout=5) for _ in procs}
    assert len(paths) == 1
    entries = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert entries == [os.path.basename(paths.pop())]
