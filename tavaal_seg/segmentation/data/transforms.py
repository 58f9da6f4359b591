"""Paired image/mask transforms (albumentations 2.0.8) and DataLoader worker seeding.

Two albumentations 2.0.8 behaviours shape this module:

* ``Compose(seed=s)`` / ``Compose.set_random_seed(s)`` give *every child transform its own
  generator seeded with the same s*. Their draws are then identical streams: with
  ``RandomScale`` followed by ``HorizontalFlip`` the image is flipped exactly when the sampled
  scale is in the lower half of the range. :func:`reseed_transform` instead installs one shared
  generator pair (``Compose.set_random_state``), so draws are independent and still
  reproducible. Never pass ``seed=`` to the Compose directly; use this module's ``seed``.
* With DataLoader ``num_workers > 0`` every forked worker inherits the same generator state and
  repeats the same augmentations. :func:`seed_worker` reseeds each worker's copy.

Masks are resized with ``cv2.INTER_NEAREST_EXACT``: OpenCV's plain ``INTER_NEAREST`` (the
albumentations default) samples without the half-pixel offset that bilinear image resizing
uses, shifting the mask up to half a source pixel against the image.
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

# albumentations checks for a newer release over the network when it is imported, unless told not
# to: a training run (often offline, on a cluster node) should not, whichever way it was started
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_train_transform",
    "build_eval_transform",
    "reseed_transform",
    "seed_worker",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MASK_INTERP = cv2.INTER_NEAREST_EXACT


def reseed_transform(transform: Any, seed: int) -> None:
    """Reseed an albumentations Compose with one generator pair shared by all its transforms.

    (``Compose.set_random_seed`` would give each child an identically seeded generator, which
    correlates their random decisions; see the module docstring.)
    """
    seed = int(seed) % 2**32
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    elif hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def build_train_transform(
    crop_hw: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    ignore_index: int = 255,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    jitter: bool = True,
    seed: int | None = None,
) -> A.Compose:
    """Random scale -> pad -> random crop -> flip -> (colour jitter) -> normalize -> tensor.

    The usual Cityscapes recipe (mmsegmentation: scale 0.5-2.0, crop, flip). Padding fills the
    image with 0 and the mask with ``ignore_index`` so padded pixels never count in the loss.
    ``mean=None`` skips normalisation (the image tensor is then float 0..255, for tests and
    visualisation). ``seed`` makes the sequence reproducible (see :func:`reseed_transform`).
    """
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    transforms: list[Any] = []
    if (lo, hi) != (1.0, 1.0):
        # RandomScale's limit is biased by 1: factor ~ U(1 + low, 1 + high); default p is 0.5.
        transforms.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                                        mask_interpolation=_MASK_INTERP, p=1.0))
    transforms += [
        A.PadIfNeeded(min_height=ch, min_width=cw, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=ignore_index, p=1.0),
        A.RandomCrop(height=ch, width=cw, p=1.0),
        A.HorizontalFlip(p=0.5),
    ]
    if jitter:
        # ColorJitter's default hue range (-0.5, 0.5) recolours the whole scene; keep it small.
        transforms.append(A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.02, p=0.8))
    if mean is not None:
        transforms.append(A.Normalize(mean=tuple(mean), std=tuple(std if std is not None else (1.0, 1.0, 1.0)),
                                      max_pixel_value=255.0))
    transforms.append(ToTensorV2())
    compose = A.Compose(transforms, mask_interpolation=_MASK_INTERP)
    if seed is not None:
        reseed_transform(compose, seed)
    return compose


def build_eval_transform(
    size_hw: tuple[int, int] | None = None,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> A.Compose:
    """Deterministic whole-image transform: optional resize (image area/bilinear, mask
    nearest) -> normalize -> tensor. ``size_hw=None`` keeps the native resolution."""
    transforms: list[Any] = []
    if size_hw is not None:
        transforms.append(A.Resize(height=int(size_hw[0]), width=int(size_hw[1]), interpolation=cv2.INTER_LINEAR,
                                   mask_interpolation=_MASK_INTERP, area_for_downscale="image", p=1.0))
    if mean is not None:
        transforms.append(A.Normalize(mean=tuple(mean), std=tuple(std if std is not None else (1.0, 1.0, 1.0)),
                                      max_pixel_value=255.0))
    transforms.append(ToTensorV2())
    return A.Compose(transforms, mask_interpolation=_MASK_INTERP, seed=0)


def _unwrap_dataset(dataset: Any) -> Any:
    """Follow ``Subset``-style ``.dataset`` links to the object that owns ``.transform``."""
    seen = 0
    while not hasattr(dataset, "transform") and hasattr(dataset, "dataset") and seen < 16:
        dataset = dataset.dataset
        seen += 1
    return dataset


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: give each worker its own augmentation stream.

    albumentations 2.0.8 ignores global seeding and forked workers inherit one generator state,
    so all workers would repeat the same crops/flips. ``torch.initial_seed()`` inside a worker is
    ``base_seed + worker_id`` (distinct per worker, reproducible under a seeded DataLoader
    generator); it reseeds the dataset's transform, numpy and ``random``. OpenCV's own thread
    pool is switched off in workers to avoid oversubscribing the CPU.
    """
    del worker_id
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    dataset = _unwrap_dataset(info.dataset)
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        reseed_transform(transform, seed)
