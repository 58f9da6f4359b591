"""ClassificationAdapter: what the core needs to know about image classification."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tavaal_seg.core.adapter import Pool, Prediction, batch_slices, check_new_ids, contiguous_part
from tavaal_seg.core.errors import DataError
from tavaal_seg.core.steps import to_device_once
from tavaal_seg.core.tasks import Accuracy, count_entropy, per_sample_cross_entropy, predictive_entropy

from .config import ClsConfig
from .data import ClassificationData, DataRequest, ImageSet, decode_images, load_dataset
from .models import build_cls_model, fetch_pretrained


def crop_flip_draws(sizes: Sequence[int], height: int, width: int, crop: int, pad: int,
                    generator: torch.Generator) -> torch.Tensor:
    """The random crop offsets and flips of consecutive batches of ``sizes`` images, drawn on the
    host from ``generator`` batch by batch (row offset, column offset, flip for each batch in
    turn, so an epoch drawn at once equals one drawn batch by batch): int64, 3 × sum(sizes)."""
    h, w = height + 2 * pad, width + 2 * pad
    parts = []
    for b in sizes:
        oy = torch.randint(0, h - crop + 1, (b,), generator=generator)
        ox = torch.randint(0, w - crop + 1, (b,), generator=generator)
        flip = (torch.rand(b, generator=generator) < 0.5).long()
        parts.append(torch.stack([oy, ox, flip]))
    return torch.cat(parts, dim=1) if parts else torch.empty(3, 0, dtype=torch.long)


def crop_flip(x: torch.Tensor, draws: torch.Tensor, crop: int, pad: int) -> torch.Tensor:
    """Batched crop (after zero padding) + horizontal flip of uint8 B×3×H×W by ``draws`` (3 × B,
    on x's device, from :func:`crop_flip_draws`): gathers on the device, nothing read back."""
    b = x.shape[0]
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    oy, ox, flip = draws[0], draws[1], draws[2].bool()
    ar = torch.arange(crop, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]                    # B×crop×1
    cols = ox[:, None] + ar
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # B×1×crop
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top:top + crop, left:left + crop]


class ClassificationAdapter:
    metric_name = "accuracy"

    def __init__(self, cfg: ClsConfig, data_root: Path, data: ClassificationData | None = None) -> None:
        self.cfg = cfg
        self.data_root = Path(data_root)
        d = cfg.data
        self.data = data or load_dataset(d.name, DataRequest(
            root=self.data_root, download=d.download, train_per_class=d.train_per_class,
            test_per_class=d.test_per_class, imbalance_ratio=d.imbalance_ratio, resize=d.resize, crop=d.crop,
            split_seed=d.split_seed, test_fraction=d.test_fraction, train_dir=d.train_dir, test_dir=d.test_dir,
            unlabeled_dir=d.unlabeled_dir))
        if len(self.data.train) == 0 or len(self.data.test) == 0:
            raise DataError(f"{self.data_root}: the {d.name} train or test split is empty")
        self.num_classes = len(self.data.classes)
        self.class_names = tuple(self.data.classes)
        # human mode: the pool's labels are unknown (-1) until people deliver them, whatever the
        # dataset ships with; oracle mode reveals the dataset's labels
        self._labels = self.data.train.labels.copy() if cfg.labels.mode == "oracle" \
            else np.full(len(self.data.train), -1, dtype=np.int64)
        unknown = np.flatnonzero(self._labels < 0)
        if cfg.labels.mode == "oracle" and len(unknown):
            raise DataError(f"{self.data_root}: {len(unknown)} training images have no label "
                            f"(e.g. {self.data.train.paths[int(unknown[0])]}); labels.mode oracle needs a labeled "
                            "pool; use labels.mode human to have them labeled")
        self.label_help = ("write a CSV with header image_id,label (label = class name: "
                           + ", ".join(self.class_names[:10]) + (", ..." if self.num_classes > 10 else "")
                           + ") and pass it with --labels FILE")
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        fetch_pretrained(cfg.model.name, cfg.model.encoder_weights)  # offline: stop before anything is written

    # -- data on the device, uint8, moved once
    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on_device:
            self._on_device.clear()
            self._on_device[key] = (self.data.train.images.to(device), torch.as_tensor(self._labels, device=device),
                                    self.data.test.images.to(device))
        return self._on_device[key]

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.data.mean, device=x.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.data.std, device=x.device).view(1, 3, 1, 1) * 255
        x = (x.float() - mean) / std
        # the batched crop's gather leaves NHWC strides; hand the model one explicit layout
        # (CPU convolutions on accidental NHWC strides were measured 60x slower here)
        fmt = torch.channels_last if x.is_cuda and self.cfg.train.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def pool(self) -> Pool:
        return Pool(tuple(self.data.train.ids), tuple(self.data.train.paths))

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return build_cls_model(m.name, self.num_classes, m.width, m.weights, m.encoder_weights)

    def train_batches(self, batches: Sequence[np.ndarray], generator: torch.Generator,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's indices and augmentation draws go to the device in one copy; each batch is
        then gathered, cropped, flipped and normalised there without a read-back."""
        images, labels, _ = self._tensors(device)
        sizes = [len(b) for b in batches]
        draws = crop_flip_draws(sizes, images.shape[-2], images.shape[-1], self.data.crop, self.data.pad, generator)
        order = torch.as_tensor(np.concatenate(batches) if sizes else np.zeros(0, dtype=np.int64), dtype=torch.long)
        plan = to_device_once(torch.cat([order[None], draws]), device)
        start = 0
        for size in sizes:
            part = plan[:, start:start + size]
            start += size
            x = crop_flip(images[part[0]], part[1:], self.data.crop, self.data.pad)
            yield self._normalize(x), labels[part[0]]

    def pool_batches(self, indices: np.ndarray, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        images, _, _ = self._tensors(device)
        for batch in batch_slices(np.asarray(indices), batch_size):
            yield self._normalize(center_crop(images[torch.as_tensor(batch, device=device)], self.data.crop))

    def labeled_pool_batches(self, indices: np.ndarray, batch_size: int,
                             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels, _ = self._tensors(device)
        for batch in batch_slices(np.asarray(indices), batch_size):
            idx = torch.as_tensor(batch, device=device)
            yield self._normalize(center_crop(images[idx], self.data.crop)), labels[idx]

    def labeled_stats(self, indices: np.ndarray) -> dict[str, float]:
        """Entropy (nats) of the labeled set's class counts: how balanced the selection is
        (the TA-VAAL paper's Fig. 7a for imbalanced CIFAR-10)."""
        labels = self._labels[np.asarray(indices)]
        counts = np.bincount(labels[labels >= 0], minlength=self.num_classes).astype(np.float64)
        return {"labeled_class_entropy": count_entropy(counts)}

    def test_size(self) -> int:
        return len(self.data.test)

    def test_batches(self, batch_size: int, device: torch.device,
                     shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _, _, test = self._tensors(device)
        labels = torch.as_tensor(self.data.test.labels, device=device)
        part = contiguous_part(len(test), shard)
        for i in range(0, len(part), batch_size):
            idx = torch.as_tensor(part[i:i + batch_size], device=device)
            yield self._normalize(center_crop(test[idx], self.data.crop)), labels[idx]

    def per_sample_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return per_sample_cross_entropy(logits, target)

    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        return predictive_entropy(logits)

    def new_metric(self) -> Accuracy:
        return Accuracy(self.num_classes, class_names=self.class_names)

    def vae_images(self, indices: np.ndarray, size: Sequence[int]) -> torch.Tensor:
        x = center_crop(self.data.train.images[torch.as_tensor(np.asarray(indices), dtype=torch.long)], self.data.crop)
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x.float(), size=tuple(size), mode="area").round().clamp(0, 255).to(torch.uint8)

    def labels_of(self, indices: np.ndarray) -> np.ndarray:
        return self._labels[np.asarray(indices)]

    def predict(self, logits: torch.Tensor, indices: np.ndarray, full_size: bool) -> list[Prediction]:
        confidence, label = torch.softmax(logits.float(), dim=1).max(dim=1)
        one_hot = np.eye(self.num_classes)
        return [Prediction(one_hot[k], float(c), label=int(k)) for c, k in zip(confidence.tolist(), label.tolist())]

    def preview_image(self, index: int) -> np.ndarray:
        return self.data.train.images[index].permute(1, 2, 0).numpy()

    def extend_pool(self, files: Sequence[Path], ids: Sequence[str], paths: Sequence[str]) -> np.ndarray:
        """Unlabeled image files join the pool at the pool's image size (square pools: short side
        resized and centre-cropped, as the dataset's own images were)."""
        train = self.data.train
        check_new_ids(ids, train.ids)
        h, w = train.images.shape[-2:]
        images = decode_images([Path(f) for f in files], h if h == w else None)
        if tuple(images.shape[-2:]) != (h, w):
            raise DataError(f"images are {images.shape[-1]}x{images.shape[-2]}, the pool's {w}x{h}; "
                            "set data.resize for a square working size")
        start = len(train)
        new = np.full(len(ids), -1, dtype=np.int64)
        self.data.train = ImageSet([*train.ids, *ids], [*train.paths, *paths], np.concatenate([train.labels, new]),
                                   torch.cat([train.images, images]))
        self._labels = np.concatenate([self._labels, new])
        self._on_device.clear()
        return np.arange(start, len(self.data.train), dtype=np.int64)

    # ------------------------------------------------------------------ labels from people

    def missing_labels(self, indices: np.ndarray) -> list[int]:
        return [int(i) for i in np.asarray(indices) if self._labels[i] < 0]

    def label_path(self, index: int) -> str:
        return ""  # labels arrive as a CSV, not as files

    def assign_labels(self, labels: Mapping[int, str], source: str) -> None:
        index_of = {name: k for k, name in enumerate(self.class_names)}
        bad = {self.data.train.ids[i]: v for i, v in labels.items() if v not in index_of}
        if bad:
            raise DataError(f"{source}: {len(bad)} labels are not class names, e.g. {dict(list(bad.items())[:3])}; "
                            f"expected one of {', '.join(self.class_names[:20])}"
                            + (", ..." if self.num_classes > 20 else ""))
        for i, v in labels.items():
            self._labels[i] = index_of[v]
        self._on_device.clear()  # the device copy of the labels is stale now

