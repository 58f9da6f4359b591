"""A procedurally generated, *synthetic* street-scene set in the official Cityscapes layout.

This is NOT real data. It exists so the package's demo config, tests and CI can run the whole
Cityscapes pipeline (discovery, labelIds -> trainIds, training, selection, export) on a machine
without the registration-only Cityscapes download. Scenes are drawn from simple shapes (sky,
buildings with windows, trees, road with lane marks, sidewalks, poles, cars, pedestrians, an ego
vehicle hood) with per-image random layout, colours, texture and noise, so images differ and a
small model can learn a non-trivial mapping -- but numbers measured on it say nothing about
real Cityscapes performance.

Masks use the real Cityscapes labelIds (road 7, sidewalk 8, building 11, pole 17, vegetation
21, sky 23, person 24, car 26, unlabeled 0, ego vehicle 1, static 4).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

__all__ = ["write_street_scenes", "street_scene"]

UNLABELED, EGO, STATIC = 0, 1, 4
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = 7, 8, 11, 17, 21, 23, 24, 26

_MARKER = ".tavaal_synthetic.json"
_FORMAT_VERSION = 1


def _jitter(rng: np.random.Generator, base: Sequence[int], spread: int) -> np.ndarray:
    return np.clip(np.asarray(base, dtype=np.int64) + rng.integers(-spread, spread + 1, 3), 0, 255)


def street_scene(rng: np.random.Generator, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: returns (RGB uint8 H×W×3 image, uint8 H×W Cityscapes labelIds)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    label = np.zeros((h, w), np.uint8)
    img = np.zeros((h, w, 3), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]

    def paint(region: np.ndarray, label_id: int, colour: np.ndarray) -> None:
        label[region] = label_id
        img[region] = colour

    horizon = int(h * rng.uniform(0.35, 0.55))
    vp_x = w * rng.uniform(0.3, 0.7)  # vanishing point

    # sky: vertical gradient
    sky_top, sky_bottom = _jitter(rng, (70, 130, 200), 30), _jitter(rng, (170, 200, 230), 25)
    t = (yy / max(horizon, 1))[..., None]
    img[:] = sky_top * (1 - t) + sky_bottom * t
    label[:] = SKY

    # buildings: rectangles standing on the horizon, with window grids
    x = int(rng.integers(-w // 8, w // 10))
    while x < w:
        bw = int(rng.integers(w // 10, w // 4))
        top = int(horizon - rng.uniform(0.15, 0.9) * horizon)
        colour = _jitter(rng, rng.choice([(120, 110, 100), (90, 90, 95), (150, 130, 110), (110, 80, 70)]), 25)
        region = (xx >= x) & (xx < x + bw) & (yy >= top) & (yy < horizon + 2)
        paint(region, BUILDING, colour)
        win = max(3, bw // int(rng.integers(4, 8)))
        windows = region & ((xx - x) % win >= win // 3) & ((yy - top) % win >= win // 3) & (yy < horizon - 2)
        img[windows] = colour * rng.uniform(0.4, 0.7)  # texture only, still "building"
        x += bw + int(rng.integers(0, w // 12))

    # trees: noisy ellipses over the buildings
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, w), horizon - rng.uniform(0.05, 0.45) * horizon
        rx, ry = rng.uniform(0.05, 0.15) * w, rng.uniform(0.1, 0.3) * h
        region = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1.0 + 0.3 * rng.standard_normal((h, w))
        paint(region & (yy < horizon + 2), VEGETATION, _jitter(rng, (70, 120, 40), 20))

    # ground: sidewalk everywhere below the horizon, road as a trapezoid to the vanishing point
    ground = yy >= horizon
    paint(ground, SIDEWALK, _jitter(rng, (175, 160, 170), 20))
    half_bottom = w * rng.uniform(0.35, 0.6)
    frac = np.clip((yy - horizon) / max(h - horizon, 1), 0, 1)
    left = vp_x - frac * half_bottom
    right = vp_x + frac * half_bottom * rng.uniform(0.8, 1.2)
    road = ground & (xx >= left) & (xx <= right)
    paint(road, ROAD, _jitter(rng, (100, 95, 105), 15))
    centre = (left + right) / 2
    marks = road & (np.abs(xx - centre) < 0.5 + 0.02 * frac * w) & (((yy - horizon) // 4) % 3 == 0)
    img[marks] = _jitter(rng, (230, 230, 230), 10)
    # a terrain-like unlabeled patch at the image border, sometimes
    if rng.random() < 0.5:
        side = xx < w * rng.uniform(0.03, 0.1) if rng.random() < 0.5 else xx > w * rng.uniform(0.9, 0.97)
        paint(ground & side & ~road, UNLABELED, _jitter(rng, (60, 70, 50), 15))

    # poles along the sidewalk edges
    for _ in range(int(rng.integers(1, 4))):
        base_y = int(rng.uniform(horizon + 0.1 * (h - horizon), h - 1))
        f = (base_y - horizon) / max(h - horizon, 1)
        px = vp_x + (-1 if rng.random() < 0.5 else 1) * f * half_bottom * rng.uniform(1.05, 1.4)
        pw = max(1.0, 0.012 * w * (0.5 + f))
        top = base_y - (0.3 + 0.7 * f) * h * 0.6
        paint((np.abs(xx - px) < pw) & (yy >= top) & (yy <= base_y), POLE, _jitter(rng, (150, 150, 150), 20))

    # cars on the road, nearer = bigger, drawn far to near
    for f in sorted(rng.uniform(0.1, 0.9, int(rng.integers(1, 4)))):
        base_y = horizon + f * (h - horizon)
        cw, chh = (0.15 + 0.35 * f) * w * 0.6, (0.15 + 0.35 * f) * h * 0.35
        cx = vp_x + rng.uniform(-0.8, 0.8) * f * half_bottom
        body = (np.abs(xx - cx) < cw / 2) & (yy <= base_y) & (yy >= base_y - chh * 0.6)
        cabin = (np.abs(xx - cx) < cw / 3) & (yy < base_y - chh * 0.6) & (yy >= base_y - chh)
        colour = _jitter(rng, rng.choice([(20, 30, 140), (160, 20, 20), (200, 200, 200), (30, 30, 30)]), 30)
        paint(body | cabin, CAR, colour)
        img[cabin & (np.abs(xx - cx) < cw / 3.5) & (yy > base_y - chh * 0.95)] = (60, 80, 100)  # windows
        for sx in (-1, 1):
            wheel = ((xx - (cx + sx * cw / 3)) ** 2 + (yy - base_y) ** 2) < (chh * 0.15) ** 2
            paint(wheel & (yy <= base_y), CAR, np.array((15, 15, 15)))

    # pedestrians on the sidewalk
    for _ in range(int(rng.integers(0, 4))):
        f = rng.uniform(0.15, 0.9)
        base_y = horizon + f * (h - horizon)
        px = vp_x + (-1 if rng.random() < 0.5 else 1) * f * half_bottom * rng.uniform(1.1, 1.6)
        ph, pw = (0.1 + 0.4 * f) * h * 0.7, (0.1 + 0.4 * f) * h * 0.12
        torso = (np.abs(xx - px) < pw) & (yy <= base_y) & (yy >= base_y - ph * 0.8)
        head = ((xx - px) ** 2 + (yy - (base_y - ph * 0.88)) ** 2) < (pw * 0.8) ** 2
        paint(torso | head, PERSON, _jitter(rng, (200, 40, 70), 50))

    # static clutter (a box) and the ego vehicle hood
    if rng.random() < 0.3:
        bx, by = rng.uniform(0, w), rng.uniform(horizon, h)
        paint((np.abs(xx - bx) < 0.03 * w) & (np.abs(yy - by) < 0.03 * h), STATIC, _jitter(rng, (120, 90, 50), 20))
    if rng.random() < 0.6:
        hood = yy > h * (1 - rng.uniform(0.05, 0.12)) + 0.02 * h * np.cos((xx - w / 2) / w * np.pi)
        paint(hood, EGO, _jitter(rng, (40, 40, 45), 10))

    # lighting, texture noise, slight blur (a camera, not a paint program)
    img *= rng.uniform(0.7, 1.2)
    img += rng.normal(0, rng.uniform(3, 10), img.shape)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8), label


def _expected_files(n: int, city_count: int) -> list[tuple[int, int]]:
    """(city index, sequence number) per image: images are spread round-robin over cities."""
    return [(k % city_count, k // city_count) for k in range(n)]


def write_street_scenes(
    root: str | Path,
    n_train: int,
    n_val: int,
    size_hw: tuple[int, int] = (128, 256),
    cities: Sequence[str] = ("aachen", "bochum", "cologne"),
    seed: int = 0,
) -> Path:
    """Write a SYNTHETIC street-scene set in the official Cityscapes layout under ``root``.

    ``leftImg8bit/{train,val}/{city}/{city}_{seq:06d}_000019_leftImg8bit.png`` and
    ``gtFine/.../{city}_{seq:06d}_000019_gtFine_labelIds.png`` (real Cityscapes labelIds), images
    spread round-robin over ``cities``. Deterministic per ``seed`` (and the other arguments).

    Atomic: everything is written into a temporary sibling directory which is renamed to
    ``root`` at the end, so an interrupted run never leaves a half-written tree. If ``root``
    already holds a complete set made with the same arguments it is reused as is; if it holds
    anything else, ``FileExistsError`` (nothing is overwritten). Returns ``root``.
    """
    root = Path(root)
    h, w = int(size_hw[0]), int(size_hw[1])
    cities = tuple(str(c) for c in cities)
    if n_train < 0 or n_val < 0 or not cities or h < 16 or w < 16:
        raise ValueError(f"need n_train, n_val >= 0, at least one city and size >= 16x16; got "
                         f"{n_train}, {n_val}, {cities}, {size_hw}")
    params = {"version": _FORMAT_VERSION, "n_train": int(n_train), "n_val": int(n_val), "size_hw": [h, w],
              "cities": list(cities), "seed": int(seed), "synthetic": True}
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):  # an empty dir is replaced
        return _reuse(root, params)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split_index, (split, n) in enumerate((("train", n_train), ("val", n_val))):
            for k, (ci, seq) in enumerate(_expected_files(n, len(cities))):
                rng = np.random.default_rng([int(seed), split_index, k])
                image, label = street_scene(rng, (h, w))
                stem = f"{cities[ci]}_{seq:06d}_000019"
                img_dir = tmp / "leftImg8bit" / split / cities[ci]
                gt_dir = tmp / "gtFine" / split / cities[ci]
                img_dir.mkdir(parents=True, exist_ok=True)
                gt_dir.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"cv2.imwrite failed for {img_dir / stem}")
                if not cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), label):
                    raise OSError(f"cv2.imwrite failed for {gt_dir / stem}")
        (tmp / "README.txt").write_text(
            "SYNTHETIC procedurally generated street scenes in the Cityscapes layout (tavaal_seg.segmentation.data."
            "synthetic). Not real data; not Cityscapes.\n")
        (tmp / _MARKER).write_text(json.dumps(params, sort_keys=True))
        try:
            os.rename(tmp, root)
        except OSError:
            if root.exists() and any(root.iterdir()):  # another process finished first
                return _reuse(root, params)
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _reuse(root: Path, params: dict) -> Path:
    marker = root / _MARKER
    if not marker.is_file():
        raise FileExistsError(
            f"{root} exists but is not a complete synthetic street-scene set (no {_MARKER}); "
            f"refusing to write into it — choose an empty path")
    found = json.loads(marker.read_text())
    if found != params:
        raise FileExistsError(
            f"{root} holds a synthetic set made with different arguments {found}, not {params}; "
            f"delete it or choose another path")
    return root
