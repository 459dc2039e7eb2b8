"""Depth data: small files written exactly as NYU, KITTI and DIODE ship them, read by the real loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onelora.data.depth import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    DIODEDepthDataModule,
    SplitFileDepthDataModule,
    augment_pair,
    collate_depth,
    read_split_file,
    snap_size,
)
from onelora.data.errors import MissingDataError


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(path)


def save_png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)  # 16-bit grayscale, as NYU / KITTI ship


def rgb_pattern(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- NYU


def write_nyu(root: Path, n_train: int = 3, n_test: int = 2, size=(480, 640)) -> dict[str, np.ndarray]:
    """NYU: <scene>/rgb_XXXXX.jpg + sync_depth_XXXXX.png (uint16 mm); train lines start with '/'."""
    depths = {}
    lines = {"train": [], "test": []}
    for split, n, scene in (("train", n_train, "kitchen_0028b"), ("test", n_test, "bathroom")):
        for i in range(n):
            idx = 45 + i
            rgb, dep = f"{scene}/rgb_{idx:05d}.jpg", f"{scene}/sync_depth_{idx:05d}.png"
            save_rgb(root / rgb, rgb_pattern(*size, seed=idx))
            mm = np.random.default_rng(idx).integers(500, 9000, size=size).astype(np.uint16)
            mm[:10] = 0  # missing depth at the top, as NYU's borders
            save_png16(root / dep, mm)
            depths[f"{split}{i}"] = mm
            lead = "/" if split == "train" else ""
            lines[split].append(f"{lead}{rgb} {lead}{dep} 518.8579")
    (root / "lists").mkdir()
    (root / "lists/nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "lists/nyudepthv2_test_files_with_gt.txt").write_text("\n".join(lines["test"]))  # no final newline, as shipped
    return depths


def nyu_module(root: Path, **over) -> SplitFileDepthDataModule:
    kwargs = dict(
        dataset="nyu",
        root=str(root),
        train_list=str(root / "lists/nyudepthv2_train_files_with_gt.txt"),
        test_list=str(root / "lists/nyudepthv2_test_files_with_gt.txt"),
        batch_size=2,
        input_size=[392, 518],
        model_input={"size": 518, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        val_fraction=0.34,
    )
    kwargs.update(over)
    return SplitFileDepthDataModule(**kwargs)


def test_nyu_reads_the_shipped_layout(tmp_path):
    depths = write_nyu(tmp_path)
    dm = nyu_module(tmp_path, augment=False)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (2, 1, 2)
    assert dm.eval_settings == {"min_depth": 1e-3, "max_depth": 10.0, "crop": "eigen"}
    sample = dm.test_set[0]
    assert sample["image"].shape == (3, 392, 518)  # resized to the model input, multiples of 14
    assert sample["depth"].shape == (1, 480, 640)  # ground truth at its own resolution
    assert torch.allclose(sample["depth"][0], torch.from_numpy(depths["test0"] / 1000.0).float())
    assert not sample["mask"][0, :10].any() and sample["mask"][0, 10:].all()  # 0 mm is invalid
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 3, 392, 518) and batch["mask"].dtype == torch.bool


def test_nyu_validation_split_is_seeded_and_can_be_the_test_list(tmp_path):
    write_nyu(tmp_path, n_train=6)
    a, b = nyu_module(tmp_path, val_fraction=0.5), nyu_module(tmp_path, val_fraction=0.5)
    a.setup(), b.setup()
    assert [s.image for s in a.val_set.samples] == [s.image for s in b.val_set.samples]
    assert not {s.image for s in a.val_set.samples} & {s.image for s in a.train_set.samples}
    c = nyu_module(tmp_path, val_fraction=0.5, split_seed=1)
    c.setup()
    assert len(c.val_set) == 3
    ref = nyu_module(tmp_path, val_from="test")  # the reference validates on the test list
    ref.setup()
    assert ref.val_set.samples == ref.test_set.samples and len(ref.train_set) == 6


def test_nyu_errors_name_the_file(tmp_path):
    write_nyu(tmp_path)
    with pytest.raises(MissingDataError, match="nope.txt"):
        nyu_module(tmp_path, train_list=str(tmp_path / "nope.txt")).setup()
    (tmp_path / "bathroom/rgb_00046.jpg").unlink()
    with pytest.raises(MissingDataError, match=r"1 file\(s\) listed in .*nyudepthv2_test_files_with_gt.txt.*rgb_00046.jpg"):
        nyu_module(tmp_path).setup()
    bad = tmp_path / "bad_list.txt"
    bad.write_text("a.jpg b.png\n")
    with pytest.raises(ValueError, match=r"bad_list.txt:1: expected `rgb depth focal`"):
        nyu_module(tmp_path, test_list=str(bad)).setup()


def test_depth_png_of_the_wrong_type_is_an_error_naming_it(tmp_path):
    write_nyu(tmp_path, n_test=2)
    depth = tmp_path / "bathroom/sync_depth_00045.png"
    Image.fromarray(np.zeros((480, 640), dtype=np.uint8)).save(depth)  # 8-bit: not NYU's format
    dm = nyu_module(tmp_path, augment=False)
    dm.setup()
    with pytest.raises(ValueError, match=r"sync_depth_00045.png: expected a 16-bit single-channel PNG"):
        dm.test_set[0]
    save_png16(depth, np.zeros((240, 320)))  # wrong size for its image
    with pytest.raises(ValueError, match=r"rgb_00045.jpg is 480x640 but its depth .*sync_depth_00045.png is 240x320"):
        dm.test_set[0]


# ---------------------------------------------------------------------------- KITTI


def write_kitti(root: Path, size=(375, 1242)) -> dict[str, np.ndarray]:
    """KITTI: raw_data/<date>/<drive>/image_02/data/*.png, gt uint16 /256 with 0 = no return."""
    date, drive = "2011_09_26", "2011_09_26_drive_0002_sync"
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]]
    gts = {}
    lines = {"train": [], "test": []}
    for split, frames in (("train", (0, 1, 2)), ("test", (3, 4))):
        for f in frames:
            rgb = f"{date}/{drive}/image_02/data/{f:010d}.png"
            gt = f"{drive}/proj_depth/groundtruth/image_02/{f:010d}.png"
            save_rgb(root / "raw_data" / rgb, rgb_pattern(*size, seed=f))
            # depth encodes the pixel's row and column, so a crop's position can be read back
            metres = 1.0 + rows * 0.1 + cols * 0.001
            raw = np.round(metres * 256).astype(np.uint16)
            raw[::3] = 0  # sparse LiDAR: no return on every third row
            save_png16(root / "data_depth_annotated_zoedepth" / gt, raw)
            gts[f"{split}{f}"] = raw
            lines[split].append(f"{rgb} {gt} 721.5377")
    lines["test"].append(f"{date}/{drive}/image_02/data/0000000005.png None 721.5377")  # as 45 shipped lines
    (root / "kitti_eigen_train_files_with_gt.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "kitti_eigen_test_files_with_gt.txt").write_text("\n".join(lines["test"]) + "\n")
    return gts


def test_kitti_reads_the_shipped_layout_with_kb_crop_and_skips_none(tmp_path):
    gts = write_kitti(tmp_path)
    dm = SplitFileDepthDataModule(
        dataset="kitti",
        root=str(tmp_path),
        train_list=str(tmp_path / "kitti_eigen_train_files_with_gt.txt"),
        test_list=str(tmp_path / "kitti_eigen_test_files_with_gt.txt"),
        batch_size=2,
        input_size=[352, 1216],
        augment=False,
        val_fraction=0.34,
    )
    dm.setup()
    assert dm.skipped_lines == {"train": 0, "test": 1}
    assert len(dm.test_set) == 2
    assert dm.eval_settings == {"min_depth": 1e-3, "max_depth": 80.0, "crop": "garg"}
    sample = dm.test_set[0]
    assert sample["depth"].shape == (1, 352, 1216) and sample["image"].shape == (3, 350, 1218)  # snapped to 14
    top, left = 375 - 352, (1242 - 1216) // 2  # KB crop: bottom rows, centred columns
    expected = gts["test3"][top : top + 352, left : left + 1216] / 256.0
    assert torch.allclose(sample["depth"][0], torch.from_numpy(expected).float())
    assert torch.equal(sample["mask"][0], torch.from_numpy((expected > 1e-3) & (expected < 80.0)))
    assert not sample["mask"].all()  # the zero rows are invalid
    with pytest.raises(ValueError, match="smaller than the KB crop"):
        small = SplitFileDepthDataModule(
            dataset="kitti", root=str(tmp_path), train_list=str(tmp_path / "kitti_eigen_train_files_with_gt.txt"),
            test_list=str(tmp_path / "kitti_eigen_test_files_with_gt.txt"), input_size=56, kb_crop=[400, 1216],
        )
        small.setup()
        small.test_set[0]


# ---------------------------------------------------------------------------- DIODE


def write_diode(root: Path, split: str, n: int, size=(56, 70)) -> list[np.ndarray]:
    """DIODE: <split>/outdoor/scene_X/scan_Y/<name>.png, <name>_depth.npy (H,W,1), <name>_depth_mask.npy."""
    depths = []
    for i in range(n):
        scan = root / split / "outdoor" / f"scene_{i // 2:05d}" / f"scan_{i:05d}"
        name = f"{i // 2:05d}_{i:05d}_outdoor_000_{i:03d}"
        save_rgb(scan / f"{name}.png", rgb_pattern(*size, seed=100 + i))
        depth = np.random.default_rng(i).uniform(2.0, 120.0, size=(*size, 1)).astype(np.float32)
        depth[:5] = 0.0  # sky
        mask = (depth[..., 0] > 0).astype(np.float32)
        mask[-1] = 0.0  # one more row the sensor flagged
        np.save(scan / f"{name}_depth.npy", depth)
        np.save(scan / f"{name}_depth_mask.npy", mask)
        depths.append(depth)
    return depths


def test_diode_reads_the_shipped_layout(tmp_path):
    write_diode(tmp_path, "train", 4)
    val = write_diode(tmp_path, "val", 2)
    model_input = {"size": 56, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    dm = DIODEDepthDataModule(root=str(tmp_path), batch_size=2, model_input=model_input, input_size=[56, 70], augment=False, val_fraction=0.25)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (3, 1, 2)
    sample = dm.test_set[0]
    assert torch.allclose(sample["depth"][0], torch.from_numpy(val[0][..., 0]))
    expected_mask = (val[0][..., 0] > 1e-3) & (val[0][..., 0] < 80.0)  # the reference: the range only
    assert torch.equal(sample["mask"][0], torch.from_numpy(expected_mask))
    rgb = np.asarray(Image.open(sorted((tmp_path / "val/outdoor").glob("*/*/*.png"))[0]), dtype=np.float32) / 255
    assert torch.allclose(sample["image"], torch.from_numpy((rgb - 0.5) / 0.25).permute(2, 0, 1), atol=1e-5)
    masked = DIODEDepthDataModule(root=str(tmp_path), input_size=[56, 70], augment=False, use_depth_mask=True, val_fraction=0.25)
    masked.setup()
    assert not masked.test_set[0]["mask"][0, -1].any() and sample["mask"][0, -1].any()


def test_diode_errors_name_the_file(tmp_path):
    with pytest.raises(MissingDataError, match="train/outdoor is not a folder"):
        DIODEDepthDataModule(root=str(tmp_path), input_size=56, val_fraction=0.25).setup()
    write_diode(tmp_path, "train", 2)
    write_diode(tmp_path, "val", 1)
    depth = next((tmp_path / "val/outdoor").glob("*/*/*_depth.npy"))
    np.save(depth, np.zeros((56, 70, 3), dtype=np.float32))
    dm = DIODEDepthDataModule(root=str(tmp_path), input_size=[56, 70], val_fraction=0.5)
    dm.setup()
    with pytest.raises(ValueError, match=rf"{depth.name}: expected \(H, W, 1\) float metres, got shape \(56, 70, 3\)"):
        dm.test_set[0]
    depth.with_name(depth.name.replace("_depth.npy", "_depth_mask.npy")).unlink()
    with pytest.raises(MissingDataError, match="_depth_mask.npy"):
        DIODEDepthDataModule(root=str(tmp_path), input_size=56, val_fraction=0.5).setup()


# ---------------------------------------------------------------------------- pieces


def test_snap_size_to_the_patch_grid():
    assert snap_size([392, 518], 14) == (392, 518)
    assert snap_size([480, 640], 14) == (476, 644)
    assert snap_size(56, 7) == (56, 56)
    assert snap_size([3, 60], 14) == (14, 56)
    dm = DIODEDepthDataModule(root="/nowhere", input_size=None, model_input={"size": 60, "patch_size": 7})
    assert dm.input_size == (63, 63)  # the model's own patch, from its input block
    assert DIODEDepthDataModule(root="/nowhere", model_input={"size": 60}).input_size == (56, 56)  # 14 by default
    assert DIODEDepthDataModule(root="/nowhere", model_input={"size": 60}, patch_size=10).input_size == (60, 60)


def test_split_file_parsing(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("/a/rgb.jpg /a/d.png 518.8579\n\nb.png None 721.5\n")
    assert read_split_file(path) == [("/a/rgb.jpg", "/a/d.png", 518.8579), ("b.png", None, 721.5)]


def test_augmentation_keeps_image_and_depth_aligned():
    torch.manual_seed(0)
    depth = torch.arange(1.0, 1.0 + 12 * 16).view(1, 12, 16)
    image = (depth / depth.max()).expand(3, -1, -1).clone()
    flips = 0
    for _ in range(20):
        img, dep = augment_pair(image, depth, Augment(rotate_degrees=0.0, colour_p=0.0))
        assert torch.allclose(img[0] * depth.max(), dep[0])  # flipped together
        flips += bool(dep[0, 0, 0] != depth[0, 0, 0])
    assert 3 <= flips <= 17  # p = 0.5
    _, rotated = augment_pair(image, depth, Augment(rotate_degrees=1.0, flip_p=0.0, colour_p=0.0))
    assert set(rotated.unique().tolist()) <= set(depth.unique().tolist()) | {0.0}  # nearest: no new depths
    img, dep = augment_pair(image, depth, Augment(rotate_degrees=0.0, flip_p=0.0, colour_p=1.0, brightness=(0.75, 1.25)))
    assert torch.equal(dep, depth) and not torch.equal(img, image) and img.min() >= 0 and img.max() <= 1


def test_collate_names_the_fix_for_ragged_depths():
    items = [{"image": torch.zeros(3, 4, 4), "depth": torch.zeros(1, s, s), "mask": torch.zeros(1, s, s, dtype=torch.bool)} for s in (4, 5)]
    with pytest.raises(ValueError, match="KB crop"):
        collate_depth(items)


def test_bad_settings_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match="must be one of"):
        nyu_module(tmp_path, dataset="nyuv2")
    with pytest.raises(ValueError, match="val_from"):
        nyu_module(tmp_path, val_from="val")
    with pytest.raises(ValueError, match="evaluation crop"):
        nyu_module(tmp_path, eval_crop="eigne")
    dm = nyu_module(tmp_path, eval_crop=None, max_depth=8.0, kb_crop=None)
    assert dm.eval_settings == {"min_depth": 1e-3, "max_depth": 8.0, "crop": None}
