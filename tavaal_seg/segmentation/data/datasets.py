"""Finding image/mask pairs on disk, decoding them safely, and a torch Dataset over them.

Discovery returns plain, sorted, frozen :class:`SegItem` records (image id + paths) so that the
active-learning state can refer to images by a stable id and map selections back to files.
Every failure names the exact path and what was expected, because "index out of range" three
layers down is how broken dataset layouts usually show up.
"""
from __future__ import annotations

import io
import os
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ...core.errors import DataError, InputNotFound
from .classes import ClassTable, camvid_table, cityscapes_table

__all__ = [
    "SegItem",
    "DatasetSpec",
    "SEG_DATASETS",
    "discover_cityscapes",
    "discover_camvid",
    "discover_folder",
    "read_image",
    "read_mask",
    "SegmentationDataset",
    "resized_uint8",
    "collate_same_size",
    "relative_posix",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class SegItem:
    """One image and (optionally) its mask.

    ``mask`` is None for images that have no label yet (an unlabelled pool waiting for humans);
    ``label_target`` is where the dataset layout puts this image's mask, present or not (where
    people deliver it). ``image_id`` is stable across runs and unique within a dataset split.
    """

    image_id: str
    image: Path
    mask: Path | None
    label_target: Path | None = None

    @property
    def mask_location(self) -> Path | None:
        """The mask file if found, else where it is expected."""
        return self.mask if self.mask is not None else self.label_target

    def rel_path(self, root: str | Path) -> str:
        """Image path relative to ``root`` as a POSIX string (for exports that must not leak
        absolute paths of the machine that ran selection)."""
        return relative_posix(self.image, root, "image")


def relative_posix(path: str | Path, root: str | Path, what: str) -> str:
    """``path`` relative to ``root``, as a POSIX string, taken from the paths as written (symlinks
    are not resolved: a tree of links into other disks stays under its root)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise DataError(f"{what} {path} is not under the data root {root}; every image and mask must be inside "
                        "the data root (links are fine)")
    return Path(rel).as_posix()


def _check_root(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputNotFound(f"{what} root {root} does not exist or is not a directory")
    return root


def _walk_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, following symlinked folders (each real folder visited once,
    so a link cycle ends), as paths under ``folder``."""
    files, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        files += [Path(dirpath) / name for name in sorted(filenames)]
    return files


def _unique_sorted(items: list[SegItem], where: str) -> list[SegItem]:
    items.sort(key=lambda it: it.image_id)
    for a, b in zip(items, items[1:]):
        if a.image_id == b.image_id:
            raise DataError(
                f"{where}: duplicate image id {a.image_id!r} for {a.image} and {b.image}; ids must be unique"
            )
    return items


# --------------------------------------------------------------------------- discovery

def discover_cityscapes(root: str | Path, split: str) -> list[SegItem]:
    """Items of one split in the official Cityscapes layout.

    Images ``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png``; masks
    ``gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png`` (raw labelIds, mapped to
    trainIds by :func:`~tavaal_seg.segmentation.data.classes.cityscapes_table`). A missing mask gives
    ``mask=None`` (an image awaiting labels). Note the official *test* split ships dummy masks.
    """
    root = _check_root(root, "Cityscapes")
    split_dir = root / "leftImg8bit" / split
    pattern = f"{split_dir}/*/*_leftImg8bit.png"
    expected = (
        "expected the official Cityscapes layout leftImg8bit/{split}/{city}/"
        "{city}_{seq}_{frame}_leftImg8bit.png with masks in gtFine/{split}/{city}/"
        "{city}_{seq}_{frame}_gtFine_labelIds.png"
    )
    if not split_dir.is_dir():
        raise InputNotFound(f"split directory {split_dir} does not exist — {expected}")
    items = []
    for image in split_dir.glob("*/*_leftImg8bit.png"):
        image_id = image.name[: -len("_leftImg8bit.png")]
        mask = root / "gtFine" / split / image.parent.name / f"{image_id}_gtFine_labelIds.png"
        items.append(SegItem(image_id, image, mask if mask.is_file() else None, mask))
    if not items:
        raise InputNotFound(f"no images found under {pattern} — {expected}")
    return _unique_sorted(items, str(split_dir))


def _list_path(root: Path, token: str) -> Path:
    """A path from a CamVid list file: relative to root, or the SegNet tutorial's absolute
    ``/SegNet/CamVid/train/x.png`` form, of which only ``train/x.png`` is kept."""
    p = Path(token)
    if p.is_absolute():
        p = Path(*p.parts[-2:])
    return root / p


def discover_camvid(root: str | Path, split: str) -> list[SegItem]:
    """Items listed in ``{root}/{split}.txt`` (SegNet CamVid layout), one ``image mask`` per line.

    Paths are relative to ``root``; absolute SegNet-style paths keep their last two components.
    A listed mask that is not there yet, or a line with only an image, gives ``mask=None`` (an
    image awaiting labels; its mask is expected at the listed path, or SegNet-style at
    ``{image folder}annot/{image name}``). image_id = image file stem.
    """
    root = _check_root(root, "CamVid")
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        raise InputNotFound(
            f"split list {list_file} does not exist — expected {split}.txt with one "
            f"'image_path mask_path' pair per line, relative to {root} (SegNet CamVid layout)"
        )
    items = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) > 2:
            raise DataError(
                f"{list_file}:{lineno}: expected 'image_path mask_path', got {len(tokens)} fields: {line!r}"
            )
        image = _list_path(root, tokens[0])
        target = _list_path(root, tokens[1]) if len(tokens) == 2 else \
            image.parent.with_name(image.parent.name + "annot") / image.name
        if not image.is_file():
            raise InputNotFound(f"{list_file}:{lineno}: image {image} does not exist")
        items.append(SegItem(image.stem, image, target if target.is_file() else None, target))
    if not items:
        raise InputNotFound(f"{list_file} lists no images — expected 'image_path mask_path' lines")
    return _unique_sorted(items, str(list_file))


def discover_folder(
    root: str | Path,
    img_dir: str = "images",
    ann_dir: str | None = "masks",
    img_suffix: str | None = None,
    seg_map_suffix: str = ".png",
) -> list[SegItem]:
    """A user's own dataset in mmsegmentation's folder convention: images
    ``root/img_dir/**/<stem><img_suffix>`` and their masks at the same relative folder under
    ``root/ann_dir`` as ``<stem><seg_map_suffix>`` (e.g. ``_leftImg8bit.png`` /
    ``_gtFine_labelIds.png``). ``img_suffix=None`` takes any ``.png``/``.jpg``/``.jpeg`` (the stem
    is the name without its extension). A missing mask gives ``mask=None`` (an image awaiting
    labels; ``ann_dir=None``: all of them). Symlinked files and folders are followed.
    image_id = relative folder + stem, '/'-joined.
    """
    root = _check_root(root, "folder dataset")
    image_root = root / img_dir
    wanted = f"*{img_suffix}" if img_suffix else "*.{png,jpg,jpeg}"
    if not image_root.is_dir():
        raise InputNotFound(f"image directory {image_root} does not exist — expected images under "
                            f"{root}/{img_dir}/**/{wanted}")
    mask_root = root / ann_dir if ann_dir is not None else None
    items = []
    for image in _walk_files(image_root):
        if img_suffix:
            if not image.name.endswith(img_suffix) or image.name == img_suffix:
                continue
            stem = image.name[: -len(img_suffix)]
        elif image.suffix.lower() in IMAGE_EXTENSIONS:
            stem = image.stem
        else:
            continue
        rel_dir = image.parent.relative_to(image_root)
        target = mask_root / rel_dir / (stem + seg_map_suffix) if mask_root is not None else None
        items.append(SegItem((rel_dir / stem).as_posix(), image,
                             target if target is not None and target.is_file() else None, target))
    if not items:
        raise InputNotFound(
            f"no images found under {image_root}/**/{wanted} — expected a folder of images"
            + (f" with masks at the same relative path under {mask_root} ending in {seg_map_suffix}"
               if mask_root is not None else "")
        )
    return _unique_sorted(items, str(image_root))


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset kind: how to discover items, and its default class table (None: the user must
    give class names, e.g. via :func:`~tavaal_seg.segmentation.data.classes.folder_table`)."""

    discover: Callable[..., list[SegItem]]
    default_table: Callable[[], ClassTable] | None
    description: str


SEG_DATASETS: Mapping[str, DatasetSpec] = types.MappingProxyType({
    "cityscapes": DatasetSpec(discover_cityscapes, cityscapes_table,
                              "official Cityscapes layout, labelIds -> 19 trainIds"),
    "camvid": DatasetSpec(discover_camvid, camvid_table,
                          "SegNet CamVid layout ({split}.txt lists), 11 classes, 11 = void"),
    "folder": DatasetSpec(discover_folder, None,
                          "img_dir/**/<stem><img_suffix> with masks ann_dir/**/<stem><seg_map_suffix>"),
})


# --------------------------------------------------------------------------- decoding

def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise InputNotFound(f"cannot read {path}: {e}") from e
    if data.size == 0:
        raise DataError(f"cannot read image {path}: file is empty")
    return data


def _check_not_truncated(path: Path, data: np.ndarray) -> None:
    """Raise if a JPEG is truncated.

    cv2.imdecode returns ``None`` for truncated PNGs, but for a truncated JPEG it returns a
    full-size array (the missing part grey/garbage) and only prints "Premature end of JPEG
    file" to stderr. A complete JPEG ends with the EOI marker FF D9; only when it does not
    (truncation, or harmless trailing bytes) do we pay for a full PIL decode, which raises
    ``OSError: image file is truncated`` on real truncation.
    """
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return  # not a JPEG
    tail = data[-64:]
    tail = tail[: len(tail) - int(np.argmax(tail[::-1] != 0))] if tail.any() else tail  # strip 0-pad
    if tail.size >= 2 and tail[-2] == 0xFF and tail[-1] == 0xD9:
        return
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone enabled lenient PIL globally: cannot verify
        raise DataError(f"cannot read image {path}: JPEG has no end-of-image marker (truncated?)")
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure means a broken file
        raise DataError(f"cannot read image {path}: truncated or corrupt JPEG ({e})") from e


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an H×W×3 uint8 RGB array (grey and RGBA are converted).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: ``cannot read image {path}: ...`` if it cannot be decoded or is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"image {path} does not exist")
    data = _read_bytes(path)
    _check_not_truncated(path, data)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # always 3-channel BGR, 8-bit
    if img is None:
        raise DataError(f"cannot read image {path}: not a decodable image or truncated/corrupt file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path, table: ClassTable) -> np.ndarray:
    """Decode a label image and map it to train ids (H×W uint8).

    Without a palette in ``table`` the file must be a single-channel label image, read unchanged
    (no colour conversion); palette ("P" mode) PNGs, which OpenCV expands to colour, are read as
    their palette indices (the usual VOC-style convention). With a palette (``data.palette``)
    the file must be a colour image (RGB, RGBA or a "P" mode PNG, read as its colours) and every
    colour must be in the palette. Every value is validated through the table.

    Raises:
        InputNotFound: the file does not exist.
        DataError: undecodable/truncated file, wrong kind of image, or unknown values/colours.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"mask {path} does not exist")
    data = _read_bytes(path)
    _check_not_truncated(path, data)
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"cannot read mask {path}: not a decodable image or truncated/corrupt file")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if table.palette is not None:
        if mask.ndim != 3 or mask.dtype != np.uint8:
            raise DataError(f"mask {path}: data.palette is set, so masks must be 8-bit colour (RGB) images; got "
                            f"shape {mask.shape} ({mask.dtype})")
        return table.encode_colors(cv2.cvtColor(mask[:, :, :3], cv2.COLOR_BGR2RGB), str(path))
    if mask.ndim != 2:
        indices = _palette_indices(data) if mask.ndim == 3 else None
        if indices is None:
            raise DataError(
                f"mask {path}: expected a 2-D single-channel label image, got shape {mask.shape}; "
                f"for colour-coded (RGB) masks set data.palette (the colour of each class)"
            )
        mask = indices
    return table.encode(mask, str(path))


def _palette_indices(data: np.ndarray) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            if im.mode != "P":
                return None
            return np.array(im)
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- datasets

class SegmentationDataset(Dataset):
    """Image/mask pairs -> ``(image float32 C×H×W, mask int64 H×W, index)``.

    ``transform`` is an albumentations ``Compose`` called as ``transform(image=, mask=)`` that
    ends in ``ToTensorV2`` (see :mod:`tavaal_seg.segmentation.data.transforms`). Without one, the image is
    returned scaled to [0, 1]. The index is returned so that per-sample losses/scores can be
    mapped back to items.

    Items without a mask raise when requested, unless ``require_masks=False``, in which case
    their mask is all ``ignore_index`` (for scoring an unlabelled pool with the same pipeline).
    """

    def __init__(
        self,
        items: Sequence[SegItem],
        table: ClassTable,
        transform: Callable[..., Mapping[str, Any]] | None = None,
        *,
        require_masks: bool = True,
    ) -> None:
        self.items = list(items)
        self.table = table
        self.transform = transform
        self.require_masks = require_masks

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        item = self.items[i]
        image = read_image(item.image)
        if item.mask is None:
            if self.require_masks:
                raise DataError(
                    f"item {i} ({item.image_id}, {item.image}) has no mask: it is unlabelled; label it "
                    f"or build the dataset with require_masks=False"
                )
            mask = np.full(image.shape[:2], self.table.ignore_index, dtype=np.uint8)
        else:
            mask = read_mask(item.mask, self.table)
            if mask.shape != image.shape[:2]:
                raise DataError(
                    f"size mismatch: image {item.image} is {image.shape[1]}x{image.shape[0]} (WxH) but "
                    f"mask {item.mask} is {mask.shape[1]}x{mask.shape[0]}"
                )
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            img_t, mask_t = out["image"], out["mask"]
            if not isinstance(img_t, torch.Tensor):
                img_t = torch.from_numpy(np.ascontiguousarray(img_t.transpose(2, 0, 1)))
            if not isinstance(mask_t, torch.Tensor):
                mask_t = torch.from_numpy(np.ascontiguousarray(mask_t))
        else:
            img_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
            mask_t = torch.from_numpy(mask)
        return img_t.float(), mask_t.long(), i


def resized_uint8(items: Sequence[SegItem], size_hw: tuple[int, int]) -> torch.Tensor:
    """Decode each item's image once and resize to ``size_hw`` with ``INTER_AREA``.

    Returns a ``uint8`` tensor N×3×h×w (RGB). Used to cache the VAE's low-resolution view of the
    pool once per cycle instead of decoding full-size images every VAE iteration.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    out = torch.empty((len(items), 3, h, w), dtype=torch.uint8)
    for k, item in enumerate(items):
        img = read_image(item.image)
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        out[k] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return out


def collate_same_size(samples: Sequence[tuple[torch.Tensor, torch.Tensor, int]]
                      ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A batch as runs of consecutive samples of one size, each stacked, in order.

    Images of different sizes (a user's own folder with ``data.eval_size: null``) are batched by
    size rather than padded or resized: every image is scored and evaluated at its native size,
    and its score does not depend on what it was batched with. A pool of one size gives one run
    per batch; a mixed pool gives smaller batches (``data.eval_size`` resizes to one size instead).
    """
    runs: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = []
    for sample in samples:
        if runs and runs[-1][-1][0].shape == sample[0].shape:
            runs[-1].append(sample)
        else:
            runs.append([sample])
    return [default_collate(run) for run in runs]
