"""Synthetic RGB-D scenes, ray-cast in numpy, written in NYU / KITTI / DIODE's on-disk layouts.

Why: the real depth datasets cannot be fetched on a laptop, yet the depth transfer should run for
real, through the same loaders (``onelora.data.depth``) that read the real data. Two domains:

- **indoor**: a box room 3-7 (wide) x 4-9.5 (deep) x 2.4-3.4 m (high), 1-4 boxes and spheres on
  the floor, textured surfaces (plain, checker, stripes, waves, grain), a ceiling point light plus
  ambient. Depth beyond 10 m (NYU's range) is written as 0 (invalid).
- **outdoor**: a ground plane to the horizon with a road (lane dashes) through grass, box
  buildings on both sides out to ~110 m, cars, trees, a sun plus ambient and distance fog. Sky and
  depth beyond 80 m (KITTI's range) are written as 0 (invalid).

Depth is the z-depth along the optical axis (as the datasets store it). Each image comes from its
own random stream ``(seed, split, index)``, so a set is deterministic and its first images do not
depend on how many are drawn. ``ensure_synthetic_depth`` writes a set once per settings, atomically
(a temporary folder renamed into place, under a file lock, so parallel runs write it once), and
returns the folder the data module's ``root`` points at.

Layouts (what the real loaders read; see onelora.data.depth):
- ``nyu``: ``sync/<scene>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (uint16 mm; test images under
  ``official_splits/test/<scene>/``, as BTS's extraction that the reference reads) and the split files
  ``train_test_inputs/nyudepthv2_{train,test}_files_with_gt.txt`` (``rgb depth focal`` lines).
- ``kitti``: ``raw_data/<date>/<drive>/image_02/data/<frame>.png`` + ``data_depth_annotated_zoedepth/
  <drive>/proj_depth/groundtruth/image_02/<frame>.png`` (uint16, metres x 256), split files
  ``train_test_inputs/kitti_eigen_{train,test}_files_with_gt.txt``.
- ``diode``: ``{train,val}/{outdoor,indoors}/scene_X/scan_Y/<name>.png`` + ``<name>_depth.npy``
  (H,W,1 float32 metres) + ``<name>_depth_mask.npy`` (H,W float32, 1 = valid).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from ...cache import build_once

#: bump when the renderer or the writers change: a new version is a new folder
GENERATOR_VERSION = 2  # 2: NYU in BTS's sync/ + official_splits/test/ folders
MARKER = "synthetic_depth.json"
EPS = 1e-4


@dataclass(frozen=True)
class Domain:
    name: str
    max_depth: float  # beyond this the ground truth is written as 0 (invalid)
    hfov_deg: float  # horizontal field of view of the camera


DOMAINS = {"indoor": Domain("indoor", 10.0, 63.3), "outdoor": Domain("outdoor", 80.0, 75.0)}
LAYOUTS = ("nyu", "kitti", "diode")
#: the split files each split-file layout writes, relative to the returned root
SPLIT_FILES = {
    "nyu": ("train_test_inputs/nyudepthv2_train_files_with_gt.txt", "train_test_inputs/nyudepthv2_test_files_with_gt.txt"),
    "kitti": ("train_test_inputs/kitti_eigen_train_files_with_gt.txt", "train_test_inputs/kitti_eigen_test_files_with_gt.txt"),
}
SPLIT_IDS = {"train": 0, "test": 1}


# ----------------------------------------------------------------------------------------------
# Ray casting
# ----------------------------------------------------------------------------------------------


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def camera_rays(height: int, width: int, hfov_deg: float, yaw: float, pitch: float) -> tuple[np.ndarray, float]:
    """World ray directions (N,3) whose camera-forward component is 1, so a hit's ``t`` is its z-depth."""
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    rows, cols = np.mgrid[0:height, 0:width]
    x = (cols + 0.5 - width / 2) / focal
    y = -(rows + 0.5 - height / 2) / focal
    d = np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3)
    return d @ (_rot_y(yaw) @ _rot_x(pitch)).T, focal


@dataclass
class Materials:
    """Per material: texture kind (0 plain, 1 checker, 2 stripes, 3 waves, 4 grain), scale, two colours."""

    kind: list[int]
    scale: list[float]
    c1: list[np.ndarray]
    c2: list[np.ndarray]

    @classmethod
    def empty(cls) -> "Materials":
        return cls([], [], [], [])

    def add(self, kind: int, scale: float, c1: Sequence[float], c2: Sequence[float]) -> int:
        self.kind.append(kind)
        self.scale.append(scale)
        self.c1.append(np.asarray(c1, dtype=np.float64))
        self.c2.append(np.asarray(c2, dtype=np.float64))
        return len(self.kind) - 1

    def random(self, rng: np.random.Generator, base: Sequence[float] | None = None, kinds=(0, 1, 2, 3, 4)) -> int:
        c1 = np.clip((rng.uniform(0.15, 0.9, 3) if base is None else np.asarray(base)) + rng.normal(0, 0.05, 3), 0, 1)
        c2 = np.clip(c1 * rng.uniform(0.4, 0.9) + rng.normal(0, 0.08, 3), 0, 1)
        return self.add(int(rng.choice(kinds)), float(rng.uniform(0.15, 0.8)), c1, c2)

    def albedo(self, uv: np.ndarray, mat: np.ndarray) -> np.ndarray:
        kind = np.asarray(self.kind)[mat]
        scale = np.asarray(self.scale)[mat]
        u, v = uv[:, 0] / scale, uv[:, 1] / scale
        checker = (np.floor(u) + np.floor(v)) % 2
        stripes = np.floor(u) % 2
        waves = 0.5 + 0.5 * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v)
        grain = np.modf(np.abs(np.sin(np.floor(u * 4) * 12.9898 + np.floor(v * 4) * 78.233)) * 43758.5453)[0]
        mix = np.select([kind == 1, kind == 2, kind == 3, kind == 4], [checker, stripes, waves, grain], 0.0)[:, None]
        return np.stack(self.c1)[mat] * (1 - mix) + np.stack(self.c2)[mat] * mix


class Hits:
    """The nearest hit per ray so far: t (z-depth), normal, surface coordinates, material."""

    def __init__(self, n: int):
        self.t = np.full(n, np.inf)
        self.normal = np.zeros((n, 3))
        self.uv = np.zeros((n, 2))
        self.mat = np.zeros(n, dtype=np.int64)

    def offer(self, t: np.ndarray, normal: np.ndarray, uv: np.ndarray, mat: np.ndarray | int) -> None:
        better = t < self.t
        self.t = np.where(better, t, self.t)
        self.normal[better] = normal[better]
        self.uv[better] = uv[better]
        self.mat = np.where(better, mat, self.mat)


OTHER_AXES = np.array([[1, 2], [0, 2], [0, 1]])


def hit_boxes(o: np.ndarray, d: np.ndarray, centers, halves, yaws, mats, hits: Hits) -> None:
    """Boxes rotated about the vertical axis (slab test in each box's frame), seen from outside."""
    if not len(centers):
        return
    centers, halves, yaws, mats = (np.asarray(a, dtype=float) for a in (centers, halves, yaws, mats))
    n, k = len(d), len(centers)
    c, s = np.cos(yaws), np.sin(yaws)
    rel = o[None] - centers
    o_local = np.stack([c * rel[:, 0] - s * rel[:, 2], rel[:, 1], s * rel[:, 0] + c * rel[:, 2]], -1)  # (K,3)
    dx, dy, dz = d[:, None, 0], d[:, None, 1], d[:, None, 2]
    d_local = np.stack([dx * c - dz * s, np.broadcast_to(dy, (n, k)), dx * s + dz * c], -1)  # (N,K,3)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d_local
        t1, t2 = (-halves - o_local) * inv, (halves - o_local) * inv
    near, far = np.fmin(t1, t2), np.fmax(t1, t2)
    t_enter, axis, t_exit = near.max(-1), near.argmax(-1), far.min(-1)
    t = np.where((t_exit >= t_enter) & (t_enter > EPS), t_enter, np.inf)
    best = t.argmin(1)
    rows = np.arange(n)
    t_best, ax = t[rows, best], axis[rows, best]
    d_best = d_local[rows, best]
    normal_local = np.zeros((n, 3))
    normal_local[rows, ax] = -np.sign(d_best[rows, ax])
    cb, sb = c[best], s[best]
    normal = np.stack([cb * normal_local[:, 0] + sb * normal_local[:, 2], normal_local[:, 1],
                       -sb * normal_local[:, 0] + cb * normal_local[:, 2]], -1)
    p_local = o_local[best] + np.where(np.isfinite(t_best), t_best, 0)[:, None] * d_best + halves[best]
    uv = np.take_along_axis(p_local, OTHER_AXES[ax], 1)
    hits.offer(t_best, normal, uv, mats[best].astype(np.int64))


def hit_spheres(o: np.ndarray, d: np.ndarray, centers, radii, mats, hits: Hits) -> None:
    if not len(centers):
        return
    centers, radii, mats = (np.asarray(a, dtype=float) for a in (centers, radii, mats))
    oc = o[None] - centers  # (K,3)
    a = (d * d).sum(-1)[:, None]
    b = 2 * d @ oc.T
    disc = b * b - 4 * a * ((oc * oc).sum(-1) - radii**2)
    t0 = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    t = np.where((disc > 0) & (t0 > EPS), t0, np.inf)
    best = t.argmin(1)
    t_best = t[np.arange(len(d)), best]
    p = o + np.where(np.isfinite(t_best), t_best, 0)[:, None] * d
    normal = (p - centers[best]) / radii[best][:, None]
    r = radii[best]
    uv = np.stack([np.arctan2(normal[:, 2], normal[:, 0]) * r, np.arcsin(np.clip(normal[:, 1], -1, 1)) * r], -1)
    hits.offer(t_best, normal, uv, mats[best].astype(np.int64))


def hit_room(o: np.ndarray, d: np.ndarray, size: np.ndarray, face_mats: Sequence[int], hits: Hits) -> None:
    """The inside of the box [0, size]: the face each ray leaves through (6 materials: -x,+x,-y,+y,-z,+z)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.fmax((0 - o) / d, (size - o) / d)
    axis = far.argmin(-1)
    rows = np.arange(len(d))
    t = far[rows, axis]
    positive = d[rows, axis] > 0
    normal = np.zeros((len(d), 3))
    normal[rows, axis] = np.where(positive, -1.0, 1.0)
    p = o + t[:, None] * d
    uv = np.take_along_axis(p, OTHER_AXES[axis], 1)
    hits.offer(t, normal, uv, np.asarray(face_mats)[axis * 2 + positive])


def hit_ground(o: np.ndarray, d: np.ndarray, mat_of_point: Callable[[np.ndarray], np.ndarray], hits: Hits) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[:, 1] < -1e-9, -o[1] / d[:, 1], np.inf)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    normal = np.broadcast_to(np.array([0.0, 1.0, 0.0]), d.shape)
    hits.offer(t, normal, p[:, [0, 2]], mat_of_point(p))


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


def render_indoor(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured box room with objects on the floor, lit from the ceiling -> (rgb (H,W,3) in [0,1], depth)."""
    room = np.array([rng.uniform(3, 7), rng.uniform(2.4, 3.4), rng.uniform(4, 9.5)])  # x wide, y high, z deep
    eye = np.array([rng.uniform(0.3, 0.7) * room[0], rng.uniform(1.0, 1.6), rng.uniform(0.2, 0.6)])
    d, _ = camera_rays(height, width, DOMAINS["indoor"].hfov_deg, rng.uniform(-0.45, 0.45), rng.uniform(-0.3, 0.08))
    mats = Materials.empty()
    wall = rng.uniform(0.35, 0.9, 3)
    faces = [mats.random(rng, base=wall if i not in (2, 3) else None) for i in range(6)]
    faces[2] = mats.random(rng, kinds=(1, 2, 4))  # the floor: a pattern
    faces[3] = mats.add(0, 1.0, [0.85, 0.85, 0.85], [0.85, 0.85, 0.85])  # a plain ceiling
    hits = Hits(len(d))
    hit_room(eye, d, room, faces, hits)
    centers, halves, yaws, box_mats, s_centers, radii, s_mats = [], [], [], [], [], [], []
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.65:
            half = rng.uniform(0.15, 0.75, 3)
            half[1] = min(half[1], room[1] / 2 - 0.1)
            centers.append([rng.uniform(0.2, room[0] - 0.2), half[1], rng.uniform(1.5, room[2] - 0.2)])
            halves.append(half)
            yaws.append(rng.uniform(0, np.pi / 2))
            box_mats.append(mats.random(rng))
        else:
            r = rng.uniform(0.2, 0.6)
            s_centers.append([rng.uniform(r, room[0] - r), r, rng.uniform(1.5, room[2] - r)])
            radii.append(r)
            s_mats.append(mats.random(rng))
    hit_boxes(eye, d, centers, halves, yaws, box_mats, hits)
    hit_spheres(eye, d, s_centers, radii, s_mats, hits)
    p = eye + hits.t[:, None] * d
    light = np.array([rng.uniform(0.25, 0.75) * room[0], room[1] - 0.05, rng.uniform(0.3, 0.7) * room[2]])
    to_light = light - p
    dist = np.linalg.norm(to_light, axis=-1)
    lambert = np.clip((hits.normal * to_light).sum(-1) / np.maximum(dist, 1e-6), 0, None)
    shade = rng.uniform(0.25, 0.4) + rng.uniform(0.9, 1.4) * lambert / (1 + (dist / 4) ** 2)
    rgb = mats.albedo(hits.uv, hits.mat) * shade[:, None]
    depth = hits.t
    depth = np.where(depth > DOMAINS["indoor"].max_depth, 0.0, depth)
    return rgb.reshape(height, width, 3), depth.reshape(height, width)


def render_outdoor(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A road to the horizon between buildings, with cars and trees, sun and fog -> (rgb, depth; sky = 0)."""
    road_x, road_half = rng.uniform(-1.5, 1.5), rng.uniform(3.0, 5.0)
    eye = np.array([road_x + rng.uniform(-1.0, 1.0), rng.uniform(1.5, 1.8), 0.0])
    d, _ = camera_rays(height, width, DOMAINS["outdoor"].hfov_deg, rng.uniform(-0.17, 0.17), rng.uniform(-0.09, 0.03))
    mats = Materials.empty()
    road = mats.add(4, 0.5, rng.uniform(0.25, 0.4) * np.ones(3), rng.uniform(0.15, 0.25) * np.ones(3))
    paint = mats.add(0, 1.0, [0.92, 0.92, 0.85], [0.92, 0.92, 0.85])
    grass = mats.add(int(rng.choice([3, 4])), float(rng.uniform(0.5, 2.0)), [0.25, rng.uniform(0.45, 0.6), 0.18], [0.18, 0.35, 0.12])

    def ground_material(p: np.ndarray) -> np.ndarray:
        off = np.abs(p[:, 0] - road_x)
        dash = (off < 0.1) & (np.mod(p[:, 2], 6.0) < 3.0)
        return np.where(off < road_half, np.where(dash, paint, road), grass)

    hits = Hits(len(d))
    hit_ground(eye, d, ground_material, hits)
    centers, halves, yaws, box_mats = [], [], [], []
    for side in (-1, 1):
        z = rng.uniform(2.0, 10.0)
        while z < 110:
            length, deep, high = rng.uniform(6, 20), rng.uniform(5, 15), rng.uniform(4, 25)
            if rng.random() < 0.8:  # a gap now and then
                setback = road_half + rng.uniform(1.5, 7.0)
                centers.append([road_x + side * (setback + deep / 2), high / 2, z + length / 2])
                halves.append([deep / 2, high / 2, length / 2])
                yaws.append(rng.normal(0, 0.05))
                box_mats.append(mats.random(rng, kinds=(0, 1, 2)))
            z += length + rng.uniform(0.5, 6.0)
    for _ in range(int(rng.integers(0, 5))):  # cars on the road
        lane = road_x + rng.choice([-1, 1]) * road_half / 2
        centers.append([lane + rng.normal(0, 0.3), 0.75, rng.uniform(6, 60)])
        halves.append([0.9, 0.75, 2.1])
        yaws.append(rng.normal(0, 0.08))
        box_mats.append(mats.random(rng, kinds=(0,)))
    s_centers, radii, s_mats = [], [], []
    for _ in range(int(rng.integers(0, 7))):  # trees between road and buildings
        x = road_x + rng.choice([-1, 1]) * (road_half + rng.uniform(0.8, 2.5))
        z, crown = rng.uniform(5, 70), rng.uniform(1.2, 2.5)
        centers.append([x, 1.5, z])
        halves.append([0.15, 1.5, 0.15])
        yaws.append(0.0)
        box_mats.append(mats.add(0, 1.0, [0.35, 0.25, 0.15], [0.35, 0.25, 0.15]))
        s_centers.append([x, 3.0 + crown * 0.8, z])
        radii.append(crown)
        s_mats.append(mats.random(rng, base=[0.15, 0.45, 0.15], kinds=(3, 4)))
    hit_boxes(eye, d, centers, halves, yaws, box_mats, hits)
    hit_spheres(eye, d, s_centers, radii, s_mats, hits)
    sky = ~np.isfinite(hits.t)
    elevation, azimuth = rng.uniform(0.35, 1.05), rng.uniform(0, 2 * np.pi)
    sun = np.array([math.cos(elevation) * math.cos(azimuth), math.sin(elevation), math.cos(elevation) * math.sin(azimuth)])
    shade = rng.uniform(0.35, 0.5) + rng.uniform(0.6, 0.9) * np.clip(hits.normal @ sun, 0, None)
    rgb = mats.albedo(hits.uv, hits.mat) * shade[:, None]
    distance = np.where(sky, 0.0, hits.t) * np.linalg.norm(d, axis=-1)
    fog = np.exp(-distance / rng.uniform(90, 220))[:, None]
    haze = np.array([0.75, 0.8, 0.85])
    rgb = rgb * fog + haze * (1 - fog)
    up = np.clip(d[:, 1] / np.linalg.norm(d, axis=-1) * 3, 0, 1)[:, None]
    sky_rgb = haze * (1 - up) + np.array([0.35, 0.55, 0.9]) * up
    rgb = np.where(sky[:, None], sky_rgb, rgb)
    depth = np.where(sky | (hits.t > DOMAINS["outdoor"].max_depth), 0.0, hits.t)
    return rgb.reshape(height, width, 3), depth.reshape(height, width)


RENDERERS = {"indoor": render_indoor, "outdoor": render_outdoor}


def render_scene(domain: str, seed: int, split: str, index: int, size: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One image: (rgb uint8 (H,W,3), depth float32 (H,W) metres, 0 = invalid), from its own stream."""
    if domain not in RENDERERS:
        raise ValueError(f"synthetic depth: domain must be one of {sorted(RENDERERS)}, got {domain!r}")
    height, width = _hw(size)
    rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])
    rgb, depth = RENDERERS[domain](rng, height, width)
    rgb = rgb * rng.uniform(0.85, 1.15) + rng.normal(0, 0.01, rgb.shape)  # exposure and sensor noise
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8), depth.astype(np.float32)


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    hw = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 8:
        raise ValueError(f"synthetic depth: size must be an int or [height, width] of at least 8, got {size!r}")
    return hw  # type: ignore[return-value]


def focal_length(domain: str, width: int) -> float:
    return (width / 2) / math.tan(math.radians(DOMAINS[domain].hfov_deg) / 2)


# ----------------------------------------------------------------------------------------------
# Writers (one per layout)
# ----------------------------------------------------------------------------------------------


def _save_png16(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values.astype(np.uint16)).save(path)


class NYUWriter:
    """BTS's extraction of NYU: ``sync/<scene>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (mm) for training,
    ``official_splits/test/<scene>/...`` for test; train lines begin with '/' as NYU's do."""

    per_scene = 100
    folders = {"train": "sync", "test": "official_splits/test"}

    def __init__(self, root: Path, domain: str, width: int):
        self.root, self.focal = root, focal_length(domain, width)
        self.lines: dict[str, list[str]] = {"train": [], "test": []}

    def write(self, split: str, index: int, rgb: np.ndarray, depth: np.ndarray) -> None:
        scene = f"synthetic_{'room' if split == 'train' else 'test'}_{index // self.per_scene:04d}"
        folder = self.root / self.folders[split]
        (folder / scene).mkdir(parents=True, exist_ok=True)
        image, gt = f"{scene}/rgb_{index:05d}.jpg", f"{scene}/sync_depth_{index:05d}.png"
        Image.fromarray(rgb).save(folder / image, quality=95)
        _save_png16(folder / gt, np.round(np.clip(depth, 0, 65.535) * 1000))
        lead = "/" if split == "train" else ""
        self.lines[split].append(f"{lead}{image} {lead}{gt} {self.focal:.4f}")

    def finish(self) -> None:
        for split, name in zip(("train", "test"), SPLIT_FILES["nyu"]):
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            (self.root / name).write_text("\n".join(self.lines[split]) + "\n")


class KITTIWriter:
    """``raw_data/<date>/<drive>/image_02/data/*.png`` + annotated depth (uint16, x256)."""

    date, per_drive = "2000_01_01", 100

    def __init__(self, root: Path, domain: str, width: int):
        self.root, self.focal = root, focal_length(domain, width)
        self.lines: dict[str, list[str]] = {"train": [], "test": []}

    def write(self, split: str, index: int, rgb: np.ndarray, depth: np.ndarray) -> None:
        drive_number = index // self.per_drive + (0 if split == "train" else 1000)
        drive = f"{self.date}_drive_{drive_number:04d}_sync"
        image = f"{self.date}/{drive}/image_02/data/{index:010d}.png"
        gt = f"{drive}/proj_depth/groundtruth/image_02/{index:010d}.png"
        for folder, rel in (("raw_data", image), ("data_depth_annotated_zoedepth", gt)):
            (self.root / folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(self.root / "raw_data" / image)
        _save_png16(self.root / "data_depth_annotated_zoedepth" / gt, np.round(np.clip(depth, 0, 255.99) * 256))
        self.lines[split].append(f"{image} {gt} {self.focal:.4f}")

    def finish(self) -> None:
        for split, name in zip(("train", "test"), SPLIT_FILES["kitti"]):
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            (self.root / name).write_text("\n".join(self.lines[split]) + "\n")


class DIODEWriter:
    """``{train,val}/<outdoor|indoors>/scene_X/scan_Y/<name>.png`` + ``_depth.npy`` + ``_depth_mask.npy``."""

    per_scan, per_scene = 20, 5

    def __init__(self, root: Path, domain: str, width: int):
        self.root, self.kind = root, "outdoor" if domain == "outdoor" else "indoors"

    def write(self, split: str, index: int, rgb: np.ndarray, depth: np.ndarray) -> None:
        scan = index // self.per_scan
        scene = scan // self.per_scene
        folder = self.root / ("train" if split == "train" else "val") / self.kind / f"scene_{scene:05d}" / f"scan_{scan:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{scene:05d}_{scan:05d}_{self.kind}_000_{index % self.per_scan:03d}"
        Image.fromarray(rgb).save(folder / f"{name}.png")
        np.save(folder / f"{name}_depth.npy", depth[..., None].astype(np.float32))
        np.save(folder / f"{name}_depth_mask.npy", (depth > 0).astype(np.float32))

    def finish(self) -> None:
        pass


WRITERS = {"nyu": NYUWriter, "kitti": KITTIWriter, "diode": DIODEWriter}


def write_synthetic_depth(
    folder: Path, *, domain: str, layout: str, n_train: int, n_test: int, seed: int, size: int | Sequence[int],
    progress: bool = True,
) -> None:
    """Render and write a whole set into ``folder`` (which must exist)."""
    height, width = _hw(size)
    writer = WRITERS[layout](folder, domain, width)
    total, done, start = n_train + n_test, 0, time.perf_counter()
    step = max(1, total // 10)
    for split, n in (("train", n_train), ("test", n_test)):
        for index in range(n):
            rgb, depth = render_scene(domain, seed, split, index, (height, width))
            writer.write(split, index, rgb, depth)
            done += 1
            if progress and total >= 200 and (done % step == 0 or done == total):
                rate = done / (time.perf_counter() - start)
                print(f"synthetic depth ({domain}, {layout} layout): {done}/{total} images, {rate:.0f}/s", flush=True)
    writer.finish()


def synthetic_folder_name(domain: str, layout: str, n_train: int, n_test: int, seed: int, size: int | Sequence[int]) -> str:
    height, width = _hw(size)
    return f"{domain}-{layout}-train{n_train}-test{n_test}-seed{seed}-{height}x{width}-v{GENERATOR_VERSION}"


def ensure_synthetic_depth(
    root: str | Path,
    domain: str,
    layout: str,
    n_train: int,
    n_test: int,
    seed: int = 0,
    size: int | Sequence[int] = 56,
) -> Path:
    """The folder of a synthetic set with these settings, written once (atomically, under a lock).

    ``root`` holds one folder per settings (its name encodes them); the folder's marker file
    records them. Returns the folder: the ``root`` of the matching data module (split-file layouts:
    the lists are ``SPLIT_FILES[layout]`` inside it).
    """
    if domain not in DOMAINS:
        raise ValueError(f"synthetic depth: domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"synthetic depth: layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"synthetic depth: n_train and n_test must be >= 1, got {n_train}, {n_test}")
    height, width = _hw(size)
    settings = {
        "domain": domain, "layout": layout, "n_train": int(n_train), "n_test": int(n_test), "seed": int(seed),
        "size": [height, width], "version": GENERATOR_VERSION,
    }
    root = Path(root).expanduser()
    name = synthetic_folder_name(domain, layout, n_train, n_test, seed, (height, width))
    final = root / name

    def write(final: Path) -> None:
        tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            write_synthetic_depth(tmp, progress=True, **{k: v for k, v in settings.items() if k != "version"})
            (tmp / MARKER).write_text(json.dumps(settings, indent=1) + "\n")
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # a complete set is only read (a teammate's read-only data folder serves as it is)
    return build_once(final, write, complete=lambda folder: _complete(folder, settings), what="the synthetic depth set",
                      place="paths.data_dir=<dir> (or ONELORA_DATA=<dir>)")


def _complete(folder: Path, settings: dict) -> bool:
    """True when ``folder`` holds this set; an error when it holds something else."""
    if not folder.exists():
        return False
    marker = folder / MARKER
    if not marker.is_file():
        raise RuntimeError(f"synthetic depth: {folder} exists without its marker {MARKER} (not written by this "
                           f"generator, or damaged): delete it and run again")
    found = json.loads(marker.read_text())
    if found != settings:
        raise RuntimeError(f"synthetic depth: {folder} holds other settings {found}, expected {settings}: delete it")
    return True


def iter_scenes(domain: str, seed: int, split: str, n: int, size: int | Sequence[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The images a set holds, rendered in memory (for probes and tests)."""
    for index in range(n):
        yield render_scene(domain, seed, split, index, size)
