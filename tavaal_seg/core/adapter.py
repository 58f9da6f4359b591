"""The seam between the task-agnostic core and a task (classification, segmentation).

The core never knows what it is classifying or segmenting: everything task-specific comes
through this protocol.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .errors import DataError


@dataclass(frozen=True)
class Pool:
    """The unlabeled-and-labeled training pool: stable ids and paths relative to the data root."""

    ids: tuple[str, ...]
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.paths):
            raise ValueError("pool ids and paths differ in length")
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            dupes = [i for i in self.ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
            raise DataError(f"duplicate image ids in the pool: {dupes[:5]}")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Prediction:
    """The task model's prediction for one image (selection previews, Label Studio pre-annotations)."""

    class_share: np.ndarray         # (C,) share of each class: predicted pixels (segmentation), one-hot (classification)
    confidence: float               # the mean top softmax probability (over pixels for segmentation)
    label: int | None = None        # classification: the predicted class
    mask: np.ndarray | None = None  # segmentation: H×W uint8 class indices at the image's own size (when asked)


class TappedModel(Protocol):
    """A task model whose forward returns ``(logits, feats)``; ``tap_channels`` lists the
    channel count of each tapped feature map (the ranker is built from it)."""

    tap_channels: Sequence[int]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


class Metric(Protocol):
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None: ...

    def merge(self, other: "Metric") -> None:
        """Add another metric's counts (the same metric over other test images, e.g. another rank's)."""

    def compute(self) -> dict[str, float]: ...


class TaskAdapter(Protocol):
    metric_name: str          # the headline metric's key in Metric.compute() (accuracy, mIoU)
    data_root: Path
    class_names: Sequence[str]
    label_help: str           # how people deliver labels (human mode), shown when the run waits for them

    def pool(self) -> Pool: ...

    def build_model(self) -> nn.Module: ...

    def train_batches(self, batches: Sequence[np.ndarray], generator: torch.Generator,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Augmented training batches of the given pool items, in the given order (the core
        shuffles and shards); augmentation draws its randomness from ``generator``."""

    def pool_batches(self, indices: np.ndarray, batch_size: int,
                     device: torch.device) -> Iterator[torch.Tensor]:
        """Pool images in order with the test-time transform (no labels needed)."""

    def test_size(self) -> int:
        """The number of test images (what one evaluation reads)."""

    def test_batches(self, batch_size: int, device: torch.device,
                     shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Test images with targets; ``shard = (k, n)``: only the k-th of n contiguous parts."""

    def labeled_pool_batches(self, indices: np.ndarray, batch_size: int,
                             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Pool images in order with the test-time transform and their targets (oracle mode)."""

    def labeled_stats(self, indices: np.ndarray) -> dict[str, float]:
        """Extra per-cycle numbers about the labeled set (classification: class-count entropy)."""

    def per_sample_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Task loss per sample (B,), the ranker's target."""

    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictive entropy per sample (B,)."""

    def new_metric(self) -> Metric: ...

    def vae_images(self, indices: np.ndarray, size: Sequence[int]) -> torch.Tensor:
        """uint8 N×3×H×W: the VAE's view of pool items at the configured VAE resolution."""

    def missing_labels(self, indices: np.ndarray) -> list[int]:
        """The pool items among ``indices`` whose label has not arrived. Labels that did arrive
        are validated first (``ValueError`` naming the file or id) and used for training from then on."""

    def label_path(self, index: int) -> str:
        """Where pool item ``index``'s label goes, relative to the data root ('' when labels
        arrive as an ``image_id,label`` CSV instead of files)."""

    def assign_labels(self, labels: Mapping[int, str], source: str) -> None:
        """Take labels given as text (a class name) for pool items; ``ValueError`` naming
        ``source`` for a value the task cannot use (or a task whose labels are files)."""

    def predict(self, logits: torch.Tensor, indices: np.ndarray, full_size: bool) -> list[Prediction]:
        """Per-image predictions from the logits of :meth:`pool_batches` over ``indices``;
        ``full_size``: segmentation masks at each image's own size (else none: shares only)."""

    def preview_image(self, index: int) -> np.ndarray:
        """Pool item ``index`` as H×W×3 uint8 RGB at its own size (thumbnails)."""

    def extend_pool(self, files: Sequence[Path], ids: Sequence[str], paths: Sequence[str]) -> np.ndarray:
        """Append unlabeled image files to the pool (``ids`` unique, ``paths`` what exports show)
        and return their pool indices: how images outside the dataset are scored."""


def check_new_ids(ids: Sequence[str], known: Iterable[str]) -> None:
    """What :meth:`TaskAdapter.extend_pool` requires of the ids it is given: unique, and none
    already in the pool (a selection names its images by id)."""
    clash = sorted(set(ids) & set(known))
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if clash or repeated:
        raise ValueError(f"extend_pool: ids must be new and unique; already in the pool: {clash[:5]}, "
                         f"given more than once: {repeated[:5]}")


def batch_slices(order: np.ndarray, batch_size: int, min_size: int = 2) -> list[np.ndarray]:
    """Split an index order into batches; a trailing batch smaller than ``min_size`` joins the
    previous batch (a single sample can form no ranking pair and breaks batch-norm statistics;
    under DDP every rank needs two samples of each global batch, so ``min_size`` = 2 x ranks)."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_size:
        batches[-2] = np.concatenate([batches[-2], batches[-1]])
        batches.pop()
    return batches


def shuffled_batches(indices: np.ndarray, batch_size: int, generator: torch.Generator,
                     min_size: int = 2) -> list[np.ndarray]:
    order = np.asarray(indices)[torch.randperm(len(indices), generator=generator).numpy()]
    return batch_slices(order, batch_size, min_size)


def contiguous_part(n: int, shard: tuple[int, int]) -> np.ndarray:
    """Positions 0..n-1 of the ``shard = (k, parts)``-th contiguous part."""
    k, parts = shard
    return np.array_split(np.arange(n), parts)[k]


@dataclass(frozen=True)
class TaskSpec:
    """What tools working across runs (the studies runner) need to know of a task adapter
    package, which exposes one as ``TASK``."""

    name: str                   # the --task name: cls, seg
    metric_name: str            # the adapter's headline metric (metrics.csv's third column)
    datasets: Mapping[str, object]  # the data.name registry
    cli: str                    # module with main(argv) -> exit code
    tool: str                   # its script under tools/ in a checkout
    config_cls: type                                # its BaseConfig subclass (reading a run's config)
    make_adapter: Callable[[Any, Path], TaskAdapter]  # (config, data root) -> adapter
