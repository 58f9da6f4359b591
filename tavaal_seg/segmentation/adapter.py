"""SegmentationAdapter: what the core needs to know about semantic segmentation."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .config import SegConfig
from ..core.adapter import Pool, batch_slices, contiguous_part
from ..core.runtime import displayed_image_size
from .data import (SEG_DATASETS, ClassTable, SegItem, SegmentationDataset, build_eval_transform,
                   build_train_transform, folder_table, read_mask, reseed_transform, resized_uint8, seed_worker)
from .metrics import ConfusionMatrixIoU
from .models import build_seg_model


def discover_split(cfg: SegConfig, data_root: Path, split: str) -> list[SegItem]:
    d = cfg.data
    if d.name == "folder":
        return SEG_DATASETS["folder"].discover(Path(data_root) / split, d.images_dir, d.masks_dir)
    return SEG_DATASETS[d.name].discover(data_root, split)


def class_table(cfg: SegConfig) -> ClassTable:
    d = cfg.data
    spec = SEG_DATASETS[d.name]
    if spec.default_table is None or d.classes:
        if not d.classes:
            raise ValueError(f"data.classes: the {d.name} dataset needs a list of class names")
        return folder_table(d.classes, ignore_index=d.ignore_index)
    return spec.default_table(ignore_index=d.ignore_index)  # type: ignore[call-arg]


class SegmentationAdapter:
    metric_name = "mIoU"

    def __init__(self, cfg: SegConfig, data_root: Path) -> None:
        self.cfg = cfg
        self.data_root = Path(data_root)
        d = cfg.data
        if not self.data_root.is_dir():
            raise FileNotFoundError(f"data root {self.data_root} does not exist or is not a directory")
        self.table = class_table(cfg)
        self.num_classes = self.table.num_classes
        self.ignore_index = self.table.ignore_index
        self.class_names = tuple(self.table.names)
        self.train_items = discover_split(cfg, self.data_root, d.train_split)[: d.limit_train]
        self.test_items = discover_split(cfg, self.data_root, d.test_split)[: d.limit_test]
        missing = [it.image_id for it in self.test_items if it.mask is None]
        if missing:
            raise ValueError(f"data.test_split {d.test_split!r}: {len(missing)} test images have no mask, "
                             f"e.g. {missing[:3]}; evaluation needs labeled images")
        if cfg.labels.mode == "oracle":
            unlabeled = [it for it in self.train_items if it.mask is None]
            if unlabeled:
                raise ValueError(
                    f"data.train_split {d.train_split!r}: {len(unlabeled)} of {len(self.train_items)} training images "
                    f"have no mask (e.g. {unlabeled[0].image_id}: expected {unlabeled[0].mask_location}); "
                    "labels.mode oracle needs a fully labeled pool; use labels.mode human to have it labeled")
        self.label_help = (f"save each mask at its label_path under {self.data_root}: a single-channel PNG the size of "
                           f"its image whose values are {self.table.describe_values()}")
        self._validated: set[int] = set()
        self._train_tf = build_train_transform(tuple(d.crop), tuple(d.scale_range), self.ignore_index)
        eval_tf = build_eval_transform(tuple(d.eval_size) if d.eval_size else None)
        self._train_set = SegmentationDataset(self.train_items, self.table, self._train_tf)
        self._pool_set = SegmentationDataset(self.train_items, self.table, eval_tf, require_masks=False)
        self._train_set.items = self._pool_set.items = self.train_items  # one list: arriving masks reach both
        self._test_set = SegmentationDataset(self.test_items, self.table, eval_tf)
        self._vae_cache: dict[tuple[int, int], tuple[torch.Tensor, np.ndarray]] = {}

    # ------------------------------------------------------------------ pool and model

    def pool(self) -> Pool:
        return Pool(tuple(it.image_id for it in self.train_items),
                    tuple(it.rel_path(self.data_root) for it in self.train_items))

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        kwargs: dict = {}
        if m.name.startswith("drn"):
            kwargs.update(width=m.width, weights=m.weights)
        else:
            kwargs.update(encoder_name=m.encoder, encoder_output_stride=m.output_stride,
                          decoder_channels=m.decoder_channels, encoder_weights_path=m.weights)
        if m.taps is not None:
            kwargs["taps"] = list(m.taps)
        return build_seg_model(m.name, self.num_classes, **kwargs)

    # ------------------------------------------------------------------ batches

    def _loader(self, dataset: SegmentationDataset, batches: list[np.ndarray], device: torch.device,
                seed: int = 0) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=workers,
                          worker_init_fn=seed_worker if workers else None, pin_memory=device.type == "cuda",
                          generator=torch.Generator().manual_seed(seed))

    def train_batches(self, batches: Sequence[np.ndarray], generator: torch.Generator,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        reseed_transform(self._train_tf, seed)  # the main-process stream (num_workers 0)
        for x, y, _ in self._loader(self._train_set, list(batches), device, seed):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def pool_batches(self, indices: np.ndarray, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        batches = batch_slices(np.asarray(indices), batch_size)
        for x, _, _ in self._loader(self._pool_set, batches, device):
            yield x.to(device, non_blocking=True)

    def labeled_pool_batches(self, indices: np.ndarray, batch_size: int,
                             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = batch_slices(np.asarray(indices), batch_size)
        for x, y, _ in self._loader(self._pool_set, batches, device):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def labeled_stats(self, indices: np.ndarray) -> dict[str, float]:
        return {}  # pixel-class balance would need every mask decoded; not tracked

    def test_size(self) -> int:
        return len(self.test_items)

    def test_batches(self, batch_size: int, device: torch.device,
                     shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = contiguous_part(len(self.test_items), shard)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for x, y, _ in self._loader(self._test_set, batches, device):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    # ------------------------------------------------------------------ losses and scores

    def per_sample_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over each image's valid (non-ignore) pixels; 0 for an image
        with no valid pixel."""
        pixel = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        valid = (target != self.ignore_index).flatten(1).sum(1)
        return pixel.flatten(1).sum(1) / valid.clamp(min=1).to(pixel.dtype)

    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean pixel entropy of the softmax per image."""
        logp = F.log_softmax(logits.float(), dim=1)
        return -(logp.exp() * logp).sum(dim=1).flatten(1).mean(1)

    def new_metric(self) -> ConfusionMatrixIoU:
        return ConfusionMatrixIoU(self.num_classes, self.ignore_index, self.table.names)

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
                raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {item.image} is "
                                 f"{width}x{height}; a mask must have its image's size")
            self.train_items[i] = dataclasses.replace(item, mask=path)
            self._validated.add(i)
        return missing

    def label_path(self, index: int) -> str:
        target = self.train_items[index].mask_location
        if target is None:
            return ""
        try:
            return target.resolve().relative_to(self.data_root.resolve()).as_posix()
        except ValueError:
            return str(target)

    def assign_labels(self, labels: Mapping[int, str], source: str) -> None:
        raise ValueError(f"{source}: segmentation labels are mask files, not a CSV; {self.label_help}")

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

