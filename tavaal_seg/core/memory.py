"""A task adapter over data held in memory: tensors, or any map-style dataset whose items are an
image tensor or an ``(image, target)`` pair. It serves :func:`tavaal_seg.select` (a trained
model, labeled and unlabeled data, no run directory) and :class:`core.loop.ActiveLearningRun`
alike. Targets are class indices (B) or dense maps (B×H×W); losses, entropy and accuracy are the
shared ones of :mod:`core.tasks`. Items are used as given: no augmentation, no resizing (except
for the VAE's view)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapter import Pool, Prediction, batch_slices, contiguous_part
from .tasks import IGNORE_NONE, Accuracy, per_sample_cross_entropy, predictive_entropy

VAEView = Callable[[torch.Tensor], torch.Tensor]  # a batch as stored -> uint8 N×3×H×W


class _Source:
    """Items of a tensor (N×…) or a map-style dataset (items: an image, ``(image,)`` or
    ``(image, target, ...)``), with targets from a tensor, from the items, or none (unlabeled)."""

    def __init__(self, images: Any, targets: Any = None) -> None:
        if not hasattr(images, "__getitem__") or not hasattr(images, "__len__"):
            raise TypeError(f"expected a tensor or a map-style dataset (len and [i]), got {type(images).__name__}")
        self.images, self.targets = images, None if targets is None else torch.as_tensor(targets)
        if self.targets is not None and len(self.targets) != len(images):
            raise ValueError(f"{len(self.targets)} targets for {len(images)} images")
        first = images[0] if not isinstance(images, torch.Tensor) and len(images) > 0 else None
        self.tupled = isinstance(first, (tuple, list))  # (image,) or (image, target, ...) items
        self.paired = self.tupled and len(first) >= 2  # type: ignore[arg-type]
        if self.paired and self.targets is not None:
            raise ValueError("targets: the dataset's items already carry (image, target)")
        self.has_targets = self.paired or self.targets is not None

    def __len__(self) -> int:
        return len(self.images)

    def fetch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.images, torch.Tensor):
            x = self.images[torch.as_tensor(idx)]
        else:
            items = [self.images[int(i)] for i in idx]
            if self.paired:
                return (torch.stack([torch.as_tensor(item[0]) for item in items]),
                        torch.stack([torch.as_tensor(item[1]) for item in items]))
            x = torch.stack([torch.as_tensor(item[0] if self.tupled else item) for item in items])
        return x, None if self.targets is None else self.targets[torch.as_tensor(idx)]


class InMemoryData:
    """One index space over one or more sources (e.g. the labeled data, then the unlabeled)."""

    def __init__(self, *sources: _Source) -> None:
        self.sources = sources
        self.offsets = np.cumsum([0, *(len(s) for s in sources)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def has_targets(self, indices: np.ndarray) -> np.ndarray:
        part = np.searchsorted(self.offsets, np.asarray(indices, dtype=np.int64), side="right") - 1
        return np.array([self.sources[k].has_targets for k in part], dtype=bool)

    def fetch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (stacked, in order) and targets (None unless every item has one)."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"item indices must be in 0..{len(self) - 1}, got {idx.min()}..{idx.max()}")
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        if len(set(part.tolist())) <= 1:
            k = int(part[0]) if len(part) else 0
            return self.sources[k].fetch(idx - self.offsets[k])
        xs, ys, order = [], [], []
        for k in sorted(set(part.tolist())):
            where = np.flatnonzero(part == k)
            x, y = self.sources[k].fetch(idx[where] - self.offsets[k])
            xs.append(x)
            ys.append(y)
            order.append(where)
        inverse = torch.as_tensor(np.argsort(np.concatenate(order), kind="stable"))
        targets = None if any(y is None for y in ys) else torch.cat(ys)[inverse]  # type: ignore[arg-type]
        return torch.cat(xs)[inverse], targets


class InMemoryAdapter:
    """The :class:`~core.adapter.TaskAdapter` protocol over in-memory data.

    ``pool`` (with ``targets``, or a dataset of ``(image, target)`` items) holds the training pool;
    ``unlabeled`` adds items without targets after it (pool indices ``len(pool)`` on); ``test``
    (with ``test_targets``) is the evaluation data; ``model`` builds a fresh task model
    for a run (a callable returning a model whose forward gives ``(logits, feats)``, e.g. a
    :func:`tavaal_seg.tap_layers` wrapper). ``vae_view`` turns a batch into the VAE's uint8
    N×3×H×W images; by default uint8 images are used as they are, float images are scaled by the
    pool's global minimum and maximum, and one-channel images are repeated to three.
    """

    metric_name = "accuracy"

    def __init__(self, pool: Any, targets: Any = None, *, unlabeled: Any = None, test: Any = None,
                 test_targets: Any = None, model: Callable[[], nn.Module] | None = None,
                 num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 ignore_index: int = IGNORE_NONE, vae_view: VAEView | None = None,
                 ids: Sequence[str] | None = None) -> None:
        self.data = InMemoryData(_Source(pool, targets), *(() if unlabeled is None else (_Source(unlabeled),)))
        self.test = None if test is None else _Source(test, test_targets)
        self._model = model
        self.class_names = tuple(class_names) if class_names is not None else \
            tuple(str(i) for i in range(num_classes or 0))
        self.num_classes = num_classes if num_classes is not None else len(self.class_names)
        self.ignore_index, self._vae_view = ignore_index, vae_view
        self.data_root = Path(".")  # in memory: paths are the ids
        self.label_help = "pass the labels as targets (a tensor, or (image, target) dataset items)"
        self.ids = tuple(ids) if ids is not None else tuple(f"{i}" for i in range(len(self.data)))
        if len(self.ids) != len(self.data):
            raise ValueError(f"{len(self.ids)} ids for {len(self.data)} pool items")
        self._assigned: dict[int, int] = {}  # labels that arrived as class names (assign_labels)
        self._range: tuple[float, float] | None = None

    # ------------------------------------------------------------------ pool and model

    def pool(self) -> Pool:
        return Pool(self.ids, self.ids)

    def build_model(self) -> nn.Module:
        if self._model is None:
            raise ValueError("InMemoryAdapter(model=...): no model builder was given")
        return self._model()

    # ------------------------------------------------------------------ batches

    def _labeled(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and targets of labeled items: the data's targets, or class names assigned later."""
        idx = np.asarray(indices, dtype=np.int64)
        x, y = self.data.fetch(idx)
        if y is not None:
            return x, y
        missing = self.missing_labels(idx)
        if missing:
            raise ValueError(f"pool items {missing[:5]} have no targets; labeled items need them ({self.label_help})")
        y = torch.as_tensor([self._assigned.get(int(i), 0) for i in idx])
        has = self.data.has_targets(idx)
        if has.any():
            y[torch.as_tensor(has)] = self.data.fetch(idx[has])[1].to(y.dtype)  # type: ignore[union-attr]
        return x, y

    def train_batches(self, batches: Sequence[np.ndarray], generator: torch.Generator,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batches:
            x, y = self._labeled(np.asarray(batch))
            yield x.to(device), y.to(device)

    def pool_batches(self, indices: np.ndarray, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
        for batch in batch_slices(np.asarray(indices), batch_size):
            yield self.data.fetch(batch)[0].to(device)

    def labeled_pool_batches(self, indices: np.ndarray, batch_size: int,
                             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batch_slices(np.asarray(indices), batch_size):
            x, y = self._labeled(batch)
            yield x.to(device), y.to(device)

    def test_batches(self, batch_size: int, device: torch.device,
                     shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.test is None or not self.test.has_targets:
            raise ValueError("InMemoryAdapter(test=...): evaluation needs test images with targets")
        part = contiguous_part(len(self.test), shard)
        for i in range(0, len(part), batch_size):
            x, y = self.test.fetch(part[i:i + batch_size])
            yield x.to(device), y.to(device)  # type: ignore[union-attr]

    def labeled_stats(self, indices: np.ndarray) -> dict[str, float]:
        return {}

    # ------------------------------------------------------------------ losses and scores

    def per_sample_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return per_sample_cross_entropy(logits, target, self.ignore_index)

    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        return predictive_entropy(logits)

    def new_metric(self) -> Accuracy:
        if not self.num_classes:
            raise ValueError("InMemoryAdapter(num_classes=... or class_names=...): accuracy needs the class count")
        return Accuracy(self.num_classes, self.ignore_index)

    def predict(self, logits: torch.Tensor, indices: np.ndarray, full_size: bool) -> list[Prediction]:
        """Argmax per item: a class (logits B×C) or a mask at the logits' size (B×C×H×W; items are
        used as given, so that is the item's size)."""
        out = []
        for lg in logits.float():
            confidence, label = torch.softmax(lg, dim=0).max(dim=0)
            if label.dim() == 0:
                share = np.eye(max(self.num_classes, logits.shape[1]))[int(label)]
                out.append(Prediction(share, float(confidence), label=int(label)))
                continue
            mask = label.to(torch.uint8).cpu().numpy()
            share = np.bincount(mask.ravel(), minlength=max(self.num_classes, logits.shape[1])) / mask.size
            out.append(Prediction(share, float(confidence.mean()), mask=mask if full_size else None))
        return out

    def preview_image(self, index: int) -> np.ndarray:
        """The VAE's uint8 view of the item (H×W×3): what a thumbnail can show of a tensor."""
        return self._as_uint8(self.data.fetch(np.asarray([index]))[0])[0].permute(1, 2, 0).cpu().numpy()

    def extend_pool(self, files: Sequence[Path], ids: Sequence[str], paths: Sequence[str]) -> np.ndarray:
        raise ValueError("in-memory data has no image files to add: pass the new items as `unlabeled` "
                         "(InMemoryAdapter(..., unlabeled=...), or tavaal_seg.select(model, unlabeled, ...))")

    def vae_images(self, indices: np.ndarray, size: Sequence[int]) -> torch.Tensor:
        chunks = [self._as_uint8(self.data.fetch(batch)[0]) for batch in batch_slices(np.asarray(indices), 256, 1)]
        x = torch.cat(chunks) if chunks else torch.empty((0, 3, *size), dtype=torch.uint8)
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x.float(), size=tuple(size), mode="area").round().clamp(0, 255).to(torch.uint8)

    def _as_uint8(self, x: torch.Tensor) -> torch.Tensor:
        if self._vae_view is not None:
            x = self._vae_view(x)
        elif x.dtype != torch.uint8:
            low, high = self._value_range()
            x = ((x.float() - low) * (255.0 / max(high - low, 1e-12))).round().clamp(0, 255).to(torch.uint8)
        if x.dim() == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.dim() != 4 or x.shape[1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"the VAE sees uint8 N×3×H×W images, got {x.dtype} {tuple(x.shape)}; "
                             "pass vae_view= to turn your images into that")
        return x

    def _value_range(self) -> tuple[float, float]:
        if self._range is None:
            low, high = float("inf"), float("-inf")
            for batch in batch_slices(np.arange(len(self.data)), 256, 1):
                x = self.data.fetch(batch)[0].float()
                low, high = min(low, float(x.min())), max(high, float(x.max()))
            self._range = (low, high)
        return self._range

    # ------------------------------------------------------------------ labels

    def missing_labels(self, indices: np.ndarray) -> list[int]:
        indices = np.asarray(indices, dtype=np.int64)
        return [int(i) for i, known in zip(indices, self.data.has_targets(indices)) if not known
                and int(i) not in self._assigned]

    def label_path(self, index: int) -> str:
        return ""  # labels arrive as targets or class names, not as files

    def assign_labels(self, labels: Mapping[int, str], source: str) -> None:
        index_of = {name: k for k, name in enumerate(self.class_names)}
        bad = {self.ids[i]: v for i, v in labels.items() if v not in index_of}
        if bad or not index_of:
            raise ValueError(f"{source}: {len(bad)} labels are not class names, e.g. {dict(list(bad.items())[:3])}; "
                             f"expected one of {', '.join(self.class_names[:20]) or '(no class_names given)'}")
        self._assigned.update({int(i): index_of[v] for i, v in labels.items()})
