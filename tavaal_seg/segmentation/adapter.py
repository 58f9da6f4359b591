"""SegmentationAdapter: what the core needs to know about semantic segmentation."""
from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..core.adapter import Pool, Prediction, batch_slices, check_new_ids, contiguous_part
from ..core.errors import DataError, InputNotFound
from ..core.runtime import LOG, displayed_image_size
from ..core.tasks import count_entropy, per_sample_cross_entropy, predictive_entropy
from .config import SegConfig, SegModelConfig
from .data import (
    SEG_DATASETS,
    ClassTable,
    SegItem,
    SegmentationDataset,
    build_eval_transform,
    build_train_transform,
    class_table_for,
    collate_same_size,
    read_image,
    read_mask,
    relative_posix,
    reseed_transform,
    resized_uint8,
    seed_worker,
)
from .metrics import ConfusionMatrixIoU
from .models import DEEPLAB_MODELS, DRN_MODELS, build_seg_model, fetch_pretrained
from .palettes import PALETTES


def split_folder(value: str | dict[str, str], split: str) -> str:
    """A folder key (``data.img_dir``/``data.ann_dir``) for one split: ``{split}`` filled in, or
    the split's entry of a mapping (validated to exist)."""
    return value[split] if isinstance(value, dict) else value.replace("{split}", split)


def discover_split(cfg: SegConfig, data_root: Path, split: str) -> list[SegItem]:
    d = cfg.data
    if d.name == "folder":
        return SEG_DATASETS["folder"].discover(data_root, split_folder(d.img_dir, split),
                                               split_folder(d.ann_dir, split), d.img_suffix, d.seg_map_suffix)
    return SEG_DATASETS[d.name].discover(data_root, split)


def discover_pool(cfg: SegConfig, data_root: Path) -> list[SegItem]:
    """The training split, plus the images of ``data.unlabeled_dir`` (ids relative to that
    folder; their masks, once made, go under the training split's ``ann_dir``)."""
    d = cfg.data
    items = discover_split(cfg, data_root, d.train_split)[: d.limit_train]
    if d.unlabeled_dir is None:
        return items
    extra = SEG_DATASETS["folder"].discover(data_root, d.unlabeled_dir, split_folder(d.ann_dir, d.train_split),
                                            d.img_suffix, d.seg_map_suffix)
    ids = {it.image_id for it in items}
    clash = [it for it in extra if it.image_id in ids]
    if clash:
        raise DataError(f"data.unlabeled_dir {d.unlabeled_dir!r}: image id {clash[0].image_id!r} ({clash[0].image}) is "
                        f"also a {d.train_split!r} image; ids (relative path without suffix) must be unique, since "
                        f"both folders' masks go under {split_folder(d.ann_dir, d.train_split)!r}")
    return sorted(items + extra, key=lambda it: it.image_id)


def class_table(cfg: SegConfig) -> ClassTable:
    d = cfg.data
    return class_table_for(d.name, SEG_DATASETS[d.name].default_table, d.classes, d.ignore_index, d.label_map,
                           d.palette)


def _deeplab_kwargs(m: SegModelConfig) -> dict[str, Any]:
    return {"encoder_name": m.encoder, "encoder_output_stride": m.output_stride,
            "decoder_channels": m.decoder_channels, "weights": m.weights, "encoder_weights": m.encoder_weights}


def _drn_kwargs(m: SegModelConfig) -> dict[str, Any]:
    return {"width": m.width, "weights": m.weights, "encoder_weights": m.encoder_weights}


def _generic_kwargs(m: SegModelConfig) -> dict[str, Any]:
    return {"width": m.width, "weights": m.weights}


# The model section as builder keywords: DeepLab takes its encoder keys, DRN its width, both
# model.weights and model.encoder_weights; every registered model takes width and weights
# (plus taps when set, for all).
MODEL_KWARGS: Mapping[str, Callable[[SegModelConfig], dict[str, Any]]] = types.MappingProxyType({
    **dict.fromkeys(DEEPLAB_MODELS, _deeplab_kwargs), **dict.fromkeys(DRN_MODELS, _drn_kwargs)})


class SegmentationAdapter:
    metric_name = "mIoU"

    def __init__(self, cfg: SegConfig, data_root: Path) -> None:
        self.cfg = cfg
        self.data_root = Path(data_root)
        d = cfg.data
        if not self.data_root.is_dir():
            raise InputNotFound(f"data root {self.data_root} does not exist or is not a directory")
        self.table = class_table(cfg)
        self.num_classes = self.table.num_classes
        self.ignore_index = self.table.ignore_index
        self.class_names = tuple(self.table.names)
        self.train_items = discover_pool(cfg, self.data_root)
        self.test_items = discover_split(cfg, self.data_root, d.test_split)[: d.limit_test]
        missing = [it.image_id for it in self.test_items if it.mask is None]
        if missing:
            raise DataError(f"data.test_split {d.test_split!r}: {len(missing)} test images have no mask, "
                            f"e.g. {missing[:3]}; evaluation needs labeled images")
        if cfg.labels.mode == "oracle":
            unlabeled = [it for it in self.train_items if it.mask is None]
            if unlabeled:
                raise DataError(
                    f"data.train_split {d.train_split!r}: {len(unlabeled)} of {len(self.train_items)} training images "
                    f"have no mask (e.g. {unlabeled[0].image_id}: expected {unlabeled[0].mask_location}); "
                    "labels.mode oracle needs a fully labeled pool; use labels.mode human to have it labeled")
        kind = "an RGB PNG" if self.table.palette is not None else "a single-channel PNG"
        self.label_help = (f"save each mask at its label_path under {self.data_root}: {kind} the size of "
                           f"its image whose values are {self.table.describe_values()}")
        self._validated: set[int] = set()
        self._train_tf = build_train_transform(tuple(d.crop), tuple(d.scale_range), self.ignore_index)
        eval_tf = build_eval_transform(tuple(d.eval_size) if d.eval_size else None)
        self._train_set = SegmentationDataset(self.train_items, self.table, self._train_tf)
        self._pool_set = SegmentationDataset(self.train_items, self.table, eval_tf, require_masks=False)
        self._train_set.items = self._pool_set.items = self.train_items  # one list: arriving masks reach both
        self._test_set = SegmentationDataset(self.test_items, self.table, eval_tf)
        self._vae_cache: dict[tuple[int, int], tuple[torch.Tensor, np.ndarray]] = {}
        self._pixel_counts: dict[int, np.ndarray] = {}   # per labeled pool item, its mask's class histogram
        self._extra_paths: dict[int, str] = {}            # pool items added by extend_pool -> their shown path
        self.class_colors = self._class_colors()
        self._said_mixed_sizes = False
        # a pretrained file named by model.encoder_weights is fetched now: offline, the run stops
        # before it writes anything (the message says which file and where to put it)
        fetch_pretrained(cfg.model.name, cfg.model.encoder, cfg.model.encoder_weights, cfg.model.width)

    def _class_colors(self) -> tuple[tuple[int, int, int], ...] | None:
        """Preview colours per train id: the colours of ``data.palette`` (the masks' own), else the
        dataset's own palette for its own class table; None: the core's generated palette."""
        colors = self.table.palette_colors()
        if len(colors) == self.table.num_classes:
            return tuple(colors[k] for k in range(self.table.num_classes))
        return PALETTES.get(self.cfg.data.name) if not self.cfg.data.classes else None

    # ------------------------------------------------------------------ pool and model

    def pool(self) -> Pool:
        return Pool(tuple(it.image_id for it in self.train_items),
                    tuple(self._extra_paths.get(k) or it.rel_path(self.data_root)
                          for k, it in enumerate(self.train_items)))

    def extend_pool(self, files: Sequence[Path], ids: Sequence[str], paths: Sequence[str]) -> np.ndarray:
        """Unlabeled image files outside the dataset (new drives to rank) join the pool; images of
        another size than the pool's are scored at their native size too (batched by size) unless
        ``data.eval_size`` resizes all."""
        check_new_ids(ids, (it.image_id for it in self.train_items))
        start = len(self.train_items)
        self.train_items.extend(SegItem(i, Path(f), None, None) for i, f in zip(ids, files))  # shared by both sets
        self._extra_paths.update({start + k: p for k, p in enumerate(paths)})
        self._vae_cache.clear()  # sized for the old pool
        return np.arange(start, len(self.train_items), dtype=np.int64)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        kwargs = MODEL_KWARGS.get(m.name, _generic_kwargs)(m)
        if m.taps is not None:
            kwargs["taps"] = list(m.taps)
        return build_seg_model(m.name, self.num_classes, **kwargs)

    # ------------------------------------------------------------------ batches

    def _batches(self, dataset: SegmentationDataset, batches: list[np.ndarray], device: torch.device,
                 seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, masks) on ``device``, in the order of ``batches``; a batch whose images differ
        in size comes as several same-size batches (:func:`collate_same_size`)."""
        workers = self.cfg.data.num_workers
        loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=workers,
                            worker_init_fn=seed_worker if workers else None, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(seed), collate_fn=collate_same_size)
        for runs in loader:
            if len(runs) > 1 and not self._said_mixed_sizes:
                self._said_mixed_sizes = True
                LOG.info("images of several sizes (e.g. %s): each batch is split where the size changes, so every "
                         "image is scored at its native size; set data.eval_size to resize all to one size for full "
                         "batches", ", ".join(f"{x.shape[-1]}x{x.shape[-2]}" for x, _, _ in runs[:3]))
            for x, y, _ in runs:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def train_batches(self, batches: Sequence[np.ndarray], generator: torch.Generator,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        reseed_transform(self._train_tf, seed)  # the main-process stream (num_workers 0)
        yield from self._batches(self._train_set, list(batches), device, seed)

    def pool_batches(self, indices: np.ndarray, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        for x, _ in self._batches(self._pool_set, batch_slices(np.asarray(indices), batch_size), device):
            yield x

    def labeled_pool_batches(self, indices: np.ndarray, batch_size: int,
                             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self._batches(self._pool_set, batch_slices(np.asarray(indices), batch_size), device)

    def labeled_stats(self, indices: np.ndarray) -> dict[str, float]:
        """The labeled masks' pixel share per class and its entropy (nats; the same
        ``labeled_class_entropy`` classification reports): how balanced the selection is. Each
        mask is decoded once per process (here, or when missing_labels checked it); images whose
        mask has not arrived are left out."""
        counts = np.zeros(self.num_classes, dtype=np.float64)
        for i in (int(k) for k in np.asarray(indices)):
            if i not in self._pixel_counts:
                mask_path = self.train_items[i].mask
                if mask_path is None:
                    continue
                self._count_pixels(i, read_mask(mask_path, self.table))
            counts += self._pixel_counts[i]
        share = counts / max(counts.sum(), 1.0)
        return {"labeled_class_entropy": count_entropy(counts),
                **{f"labeled_pixel_share/{name}": float(v) for name, v in zip(self.table.names, share)}}

    def _count_pixels(self, index: int, mask: np.ndarray) -> None:
        self._pixel_counts[index] = np.bincount(mask[mask < self.num_classes].ravel(),
                                                minlength=self.num_classes).astype(np.float64)

    def test_size(self) -> int:
        return len(self.test_items)

    def test_batches(self, batch_size: int, device: torch.device,
                     shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = contiguous_part(len(self.test_items), shard)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        yield from self._batches(self._test_set, batches, device)

    # ------------------------------------------------------------------ losses and scores

    def per_sample_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over each image's valid (non-ignore) pixels; 0 for an image
        with no valid pixel."""
        return per_sample_cross_entropy(logits, target, self.ignore_index)

    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean pixel entropy of the softmax per image."""
        return predictive_entropy(logits)

    def new_metric(self) -> ConfusionMatrixIoU:
        return ConfusionMatrixIoU(self.num_classes, self.ignore_index, self.table.names)

    def predict(self, logits: torch.Tensor, indices: np.ndarray, full_size: bool) -> list[Prediction]:
        """Argmax masks; with ``full_size`` the logits are resized (bilinear) to each image's own
        size first, so a mask matches its image pixel for pixel (pre-annotations, thumbnails)."""
        out = []
        for b, i in enumerate(np.asarray(indices).tolist()):
            lg = logits[b:b + 1].float()
            if full_size:
                width, height = displayed_image_size(self.train_items[i].image)
                if tuple(lg.shape[-2:]) != (height, width):
                    lg = F.interpolate(lg, size=(height, width), mode="bilinear", align_corners=False)
            confidence, label = torch.softmax(lg, dim=1).max(dim=1)
            mask = label[0].to(torch.uint8).cpu().numpy()
            share = np.bincount(mask.ravel(), minlength=self.num_classes) / mask.size
            out.append(Prediction(share, float(confidence.mean()), mask=mask if full_size else None))
        return out

    def preview_image(self, index: int) -> np.ndarray:
        return read_image(self.train_items[index].image)

    # ------------------------------------------------------------------ labels from people

    def missing_labels(self, indices: np.ndarray) -> list[int]:
        """Items whose mask is not at its expected path yet; masks that are there are checked
        once per process (decodable, the image's size, values in the class table)."""
        missing = []
        for i in (int(k) for k in np.asarray(indices)):
            if i in self._validated:
                continue
            item = self.train_items[i]
            path = item.mask_location
            if path is None or not path.is_file():
                missing.append(i)
                continue
            mask = read_mask(path, self.table)
            width, height = displayed_image_size(item.image)
            if mask.shape != (height, width):
                raise DataError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {item.image} is "
                                f"{width}x{height}; a mask must have its image's size")
            self.train_items[i] = dataclasses.replace(item, mask=path)
            self._validated.add(i)
            self._count_pixels(i, mask)  # labeled_stats need not decode it again
        return missing

    def label_path(self, index: int) -> str:
        target = self.train_items[index].mask_location
        if target is None:
            return ""
        try:
            return relative_posix(target, self.data_root, "mask")
        except DataError:
            return str(target)

    def assign_labels(self, labels: Mapping[int, str], source: str) -> None:
        raise DataError(f"{source}: segmentation labels are mask files, not a CSV; {self.label_help}")

    def vae_images(self, indices: np.ndarray, size: Sequence[int]) -> torch.Tensor:
        """uint8 N×3×H×W at the VAE size; each pool image is decoded once per size and cached."""
        key = (int(size[0]), int(size[1]))
        if key not in self._vae_cache:
            self._vae_cache[key] = (torch.empty((len(self.train_items), 3, *key), dtype=torch.uint8),
                                    np.zeros(len(self.train_items), dtype=bool))
        cache, filled = self._vae_cache[key]
        indices = np.asarray(indices, dtype=np.int64)
        todo = np.unique(indices[~filled[indices]])
        if len(todo):
            cache[torch.as_tensor(todo)] = resized_uint8([self.train_items[i] for i in todo], key)
            filled[todo] = True
        return cache[torch.as_tensor(indices)]

