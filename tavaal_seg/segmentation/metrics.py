"""Confusion-matrix mIoU for semantic segmentation."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ConfusionMatrixIoU:
    """Accumulates a C×C confusion matrix (rows: target, columns: prediction) over batches.

    Pixels whose target is ``ignore_index`` (or any value outside 0..C-1) are excluded.
    ``compute()`` gives ``mIoU`` (mean over classes present in the target or the prediction:
    a class absent from both has an undefined IoU and is left out of the mean), ``pixel_acc``
    and ``IoU/<class name>`` per class (nan where undefined).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """``logits`` B×C×H×W (or predictions B×H×W as an integer tensor), ``target`` B×H×W."""
        pred = logits.argmax(dim=1) if logits.dim() == target.dim() + 1 else logits
        n = self.num_classes
        target = target.long()
        valid = (target != self.ignore_index) & (target >= 0) & (target < n)
        codes = target[valid] * n + pred[valid].long()
        self.matrix += torch.bincount(codes, minlength=n * n).reshape(n, n).cpu()

    def merge(self, other: "ConfusionMatrixIoU") -> None:
        if other.matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot merge a {other.num_classes}-class confusion matrix into a {self.num_classes}-class one")
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        m = self.matrix.double().numpy()
        inter = np.diag(m)
        union = m.sum(0) + m.sum(1) - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, inter / np.maximum(union, 1e-300), np.nan)

    def compute(self) -> dict[str, float]:
        iou = self.iou()
        total = float(self.matrix.sum())
        present = ~np.isnan(iou)
        out = {
            "mIoU": float(iou[present].mean()) if present.any() else float("nan"),
            "pixel_acc": float(self.matrix.diag().sum()) / total if total else float("nan"),
        }
        for name, value in zip(self.class_names, iou):
            out[f"IoU/{name}"] = float(value)
        return out
