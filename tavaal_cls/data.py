"""Classification datasets, decoded once into uint8 tensors.

Every dataset becomes an :class:`ImageSet` per split: stable ids, paths relative to the data
root, labels and an N×3×H×W uint8 tensor. Keeping the decoded images as uint8 (on the GPU when
training there) lets random crop + flip run batched on the device with no per-sample Python
work; images larger than the working size are resized once at load time (short side to
``data.resize``, centre square).
"""
from __future__ import annotations

import pickle
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tavaal_seg.core import errors

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class DataError(errors.InputNotFound):
    """The data root does not hold what the config says; the message says where to put what."""


@dataclass
class ImageSet:
    ids: list[str]
    paths: list[str]
    labels: np.ndarray            # int64, N
    images: torch.Tensor          # uint8, N×3×H×W

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: Sequence[int]) -> "ImageSet":
        keep = list(keep)
        return ImageSet([self.ids[i] for i in keep], [self.paths[i] for i in keep], self.labels[keep],
                        self.images[torch.as_tensor(keep, dtype=torch.long)])


@dataclass
class ClassificationData:
    classes: list[str]
    train: ImageSet
    test: ImageSet
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: int                     # training/test crop size
    pad: int                      # zero padding before the random crop (CIFAR: 4)


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _load_rgb(path: Path, resize: int | None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # Caltech101 holds greyscale images
            if resize is not None and (im.width != resize or im.height != resize):
                scale = resize / min(im.width, im.height)
                w, h = max(resize, round(im.width * scale)), max(resize, round(im.height * scale))
                im = im.resize((w, h), Image.BILINEAR)
                left, top = (w - resize) // 2, (h - resize) // 2
                im = im.crop((left, top, left + resize, top + resize))
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise errors.DataError(f"cannot read image {path}: {err}") from err


def decode_images(files: list[Path], resize: int | None) -> torch.Tensor:
    """N×3×H×W uint8 of image files (short side to ``resize``, centre square), decoded in threads."""
    if not files:
        return torch.empty(0, 3, resize or 32, resize or 32, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL releases the GIL while decoding
        arrays = list(pool.map(lambda p: _load_rgb(p, resize), files, chunksize=64))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise errors.DataError(f"images differ in size {sorted(shapes)[:3]}; set data.resize to load them at one size")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _folder_entries(split_dir: Path, root: Path, classes: list[str] | None = None,
                    per_class: int | Callable[[int, str], int | None] | None = None) -> tuple[list[str], list[tuple[str, Path, int]]]:
    if not split_dir.is_dir():
        raise DataError(f"expected a folder of class subfolders at {split_dir}")
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    classes = classes or found
    if not classes:
        raise DataError(f"{split_dir} has no class subfolders (expected {split_dir}/<class>/<image>)")
    entries = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) \
            if (split_dir / name).is_dir() else []
        limit = per_class(label, name) if callable(per_class) else per_class
        for p in files[:limit] if limit is not None else files:
            entries.append((f"{name}/{p.stem}", p, label))
    return classes, entries


def _folder_set(entries: list[tuple[str, Path, int]], root: Path, resize: int | None) -> ImageSet:
    if not entries:
        raise DataError(f"no images found under {root}")
    ids = [e[0] for e in entries]
    paths = [e[1].relative_to(root).as_posix() for e in entries]
    labels = np.asarray([e[2] for e in entries], dtype=np.int64)
    return ImageSet(ids, paths, labels, decode_images([e[1] for e in entries], resize))


@dataclass(frozen=True)
class DataRequest:
    """What the dataset builders need from the config."""

    root: Path
    download: bool = False
    train_per_class: int | None = None      # keep the first N train images per class (CPU studies)
    test_per_class: int | None = None
    imbalance_ratio: int = 1                 # cifar10_imbalanced: even classes keep 5000/ratio
    resize: int | None = None                # image_folder/caltech101: working size (short side, centre square)
    crop: int | None = None
    split_seed: int = 0
    test_fraction: float = 0.1
    train_dir: str = "train"
    test_dir: str = "test"
    unlabeled_dir: str | None = None         # image_folder: an unlabeled pool (labels -1, human mode)


def _cap(n: int | None, cap: int | None) -> int | None:
    if n is None:
        return cap
    return n if cap is None else min(n, cap)


def _cifar(req: DataRequest, variant: str, per_class_train: Callable[[int, str], int | None] | None = None) -> ClassificationData:
    """CIFAR-10/100 from torchvision's pickles (``cifar-10-batches-py/``) or an image-folder tree
    (``train/<class>/*``, ``test/<class>/*``, as the JPEG release is laid out)."""
    root = req.root
    pickle_dir = root / ("cifar-10-batches-py" if variant == "cifar10" else "cifar-100-python")
    train_cap = per_class_train or (lambda label, name: req.train_per_class)
    if not pickle_dir.is_dir() and not (root / "train").is_dir() and req.download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if variant == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    if pickle_dir.is_dir():
        return _cifar_pickles(req, variant, pickle_dir, train_cap)
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train = _folder_entries(root / "train", root, per_class=train_cap)
        _, test = _folder_entries(root / "test", root, classes, per_class=req.test_per_class)
        return ClassificationData(classes, _folder_set(train, root, None), _folder_set(test, root, None),
                                  CIFAR_MEAN, CIFAR_STD, crop=32, pad=4)
    raise DataError(
        f"no {variant.upper()} data under {root}: expected torchvision's {pickle_dir.name}/ folder or an "
        f"image-folder tree {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg. Download it with "
        "--set data.download=true (needs internet) or extract an archive there, and pass --data-root.")


def _cifar_pickles(req: DataRequest, variant: str, folder: Path, train_cap: Callable[[int, str], int | None]) -> ClassificationData:
    def read(name: str) -> dict:
        path = folder / name
        if not path.is_file():
            raise DataError(f"missing {path} (torchvision's {folder.name} layout)")
        with path.open("rb") as fh:
            return pickle.load(fh, encoding="latin1")

    if variant == "cifar10":
        meta, label_key = read("batches.meta")["label_names"], "labels"
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        meta, label_key = read("meta")["fine_label_names"], "fine_labels"
        train_files, test_files = ["train"], ["test"]

    def build(files: list[str], cap: Callable[[int, str], int | None]) -> ImageSet:
        ids, paths, labels, chunks = [], [], [], []
        counts: dict[int, int] = {}
        for name in files:
            batch = read(name)
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            keep = []
            for j, label in enumerate(batch[label_key]):
                limit = cap(label, meta[label])
                if limit is not None and counts.get(label, 0) >= limit:
                    continue
                counts[label] = counts.get(label, 0) + 1
                keep.append(j)
                ids.append(f"{name}_{j:05d}")
                paths.append(f"{folder.name}/{name}#{j}")
                labels.append(label)
            chunks.append(data[keep])
        return ImageSet(ids, paths, np.asarray(labels, dtype=np.int64), torch.from_numpy(np.concatenate(chunks)))

    test = build(test_files, lambda label, name: req.test_per_class)
    return ClassificationData(list(meta), build(train_files, train_cap), test, CIFAR_MEAN, CIFAR_STD, crop=32, pad=4)


def cifar10(req: DataRequest) -> ClassificationData:
    return _cifar(req, "cifar10")


def cifar100(req: DataRequest) -> ClassificationData:
    return _cifar(req, "cifar100")


def imbalanced_keep(label: int, ratio: int, per_class: int = 5000) -> int | None:
    """The reference's imbalance: even classes keep their first per_class/ratio images, odd keep all."""
    return per_class // ratio if label % 2 == 0 else None


def cifar10_imbalanced(req: DataRequest) -> ClassificationData:
    if req.imbalance_ratio < 1:
        raise errors.ConfigError(f"data.imbalance_ratio must be >= 1, got {req.imbalance_ratio}")
    # with data.train_per_class (scaled-down studies) the ratio holds at that scale: odd classes
    # keep train_per_class, even classes train_per_class / ratio
    per_class = req.train_per_class or 5000
    return _cifar(req, "cifar10", lambda label, name: _cap(imbalanced_keep(label, req.imbalance_ratio, per_class),
                                                           req.train_per_class))


def _split_per_class(entries: list[tuple[str, Path, int]], fraction: float, seed: int) -> tuple[list, list]:
    """A seeded per-class split: every class keeps at least one training and one test image."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list] = {}
    for e in entries:
        by_class.setdefault(e[2], []).append(e)
    train, test = [], []
    for label in sorted(by_class):
        items = by_class[label]
        order = rng.permutation(len(items))
        n_test = min(len(items) - 1, max(1, round(len(items) * fraction))) if len(items) > 1 else 0
        test += [items[i] for i in sorted(order[:n_test])]
        train += [items[i] for i in sorted(order[n_test:])]
    return train, test


def caltech101(req: DataRequest) -> ClassificationData:
    """Caltech101: ``101_ObjectCategories/<class>/*.jpg`` (BACKGROUND_Google dropped, 101 classes),
    a seeded per-class 90/10 split, images resized to 256 and cropped to 224."""
    candidates = [req.root / "101_ObjectCategories", req.root / "caltech101" / "101_ObjectCategories"]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise DataError(f"no Caltech101 data under {req.root}: expected {candidates[0]}/<class>/*.jpg "
                        "(the official 101_ObjectCategories folder)")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name != "BACKGROUND_Google")
    _, entries = _folder_entries(folder, req.root, classes)
    train, test = _split_per_class(entries, req.test_fraction, req.split_seed)
    resize = req.resize or 256
    return ClassificationData(classes, _folder_set(_limit(train, req.train_per_class), req.root, resize),
                              _folder_set(_limit(test, req.test_per_class), req.root, resize),
                              IMAGENET_MEAN, IMAGENET_STD, crop=req.crop or 224, pad=0)


def _limit(entries: list, per_class: int | None) -> list:
    if per_class is None:
        return entries
    counts: dict[int, int] = {}
    out = []
    for e in entries:
        if counts.get(e[2], 0) < per_class:
            counts[e[2]] = counts.get(e[2], 0) + 1
            out.append(e)
    return out


def image_folder(req: DataRequest) -> ClassificationData:
    """Any ``<root>/<train_dir>/<class>/*`` + ``<root>/<test_dir>/<class>/*`` tree; with no test
    folder, a seeded per-class split of the train folder."""
    resize = req.resize
    if req.unlabeled_dir is not None:
        return _unlabeled_folder(req)
    classes, train = _folder_entries(req.root / req.train_dir, req.root, per_class=None)
    if (req.root / req.test_dir).is_dir():
        _, test = _folder_entries(req.root / req.test_dir, req.root, classes)
    else:
        train, test = _split_per_class(train, req.test_fraction, req.split_seed)
    crop = req.crop or resize or 32
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if crop >= 64 else (CIFAR_MEAN, CIFAR_STD)
    return ClassificationData(classes, _folder_set(_limit(train, req.train_per_class), req.root, resize),
                              _folder_set(_limit(test, req.test_per_class), req.root, resize),
                              mean, std, crop=crop, pad=0 if (resize and crop < resize) else max(0, crop // 8))


def _unlabeled_folder(req: DataRequest) -> ClassificationData:
    """``<root>/<unlabeled_dir>/**/*`` as a pool with unknown labels (-1; people label what the
    run selects) and ``<root>/<test_dir>/<class>/*`` as the labeled test set that names the classes."""
    pool_dir = req.root / str(req.unlabeled_dir)
    if not pool_dir.is_dir():
        raise DataError(f"data.unlabeled_dir: expected a folder of unlabeled images at {pool_dir}")
    if not (req.root / req.test_dir).is_dir():
        raise DataError(f"data.unlabeled_dir needs a labeled test set at {req.root / req.test_dir}/<class>/* "
                        "(its class folders name the classes)")
    classes, test = _folder_entries(req.root / req.test_dir, req.root)
    files = sorted(p for p in pool_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    pool = [(p.relative_to(pool_dir).with_suffix("").as_posix(), p, -1) for p in files]
    crop = req.crop or req.resize or 32
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if crop >= 64 else (CIFAR_MEAN, CIFAR_STD)
    return ClassificationData(classes, _folder_set(pool, req.root, req.resize),
                              _folder_set(_limit(test, req.test_per_class), req.root, req.resize),
                              mean, std, crop=crop, pad=0 if (req.resize and crop < req.resize) else max(0, crop // 8))


CLS_DATASETS: types.MappingProxyType[str, Callable[[DataRequest], ClassificationData]] = types.MappingProxyType({
    "cifar10": cifar10,
    "cifar100": cifar100,
    "cifar10_imbalanced": cifar10_imbalanced,
    "caltech101": caltech101,
    "image_folder": image_folder,
})


def load_dataset(name: str, req: DataRequest) -> ClassificationData:
    if name not in CLS_DATASETS:
        raise errors.ConfigError(f"data.name: unknown dataset {name!r}; choose one of {', '.join(sorted(CLS_DATASETS))}")
    if not req.root.exists():
        raise DataError(f"data root {req.root} does not exist; pass --data-root DIR (or set data.root / TAVAAL_DATA_ROOT)")
    return CLS_DATASETS[name](req)
