"""What classification and segmentation share once their outputs are logits B×C(×H×W): the
per-sample task loss (the ranker's target), the predictive entropy and top-1 accuracy, and the
entropy of the labeled set's class counts. A sample is an image; a segmentation sample's values
average over its valid (non-ignore) pixels."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_NONE = -100  # torch's default ignore_index: no class value is ignored


def per_sample_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                             ignore_index: int = IGNORE_NONE) -> torch.Tensor:
    """Cross-entropy per sample (B,): one target per sample (logits B×C), or the mean over each
    sample's valid target positions (logits B×C×H×W); 0 for a sample with no valid position."""
    loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    if loss.dim() == 1:
        return loss
    valid = (target != ignore_index).flatten(1).sum(1)
    return loss.flatten(1).sum(1) / valid.clamp(min=1).to(loss.dtype)


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over dim 1 per sample (B,); averaged over positions for dense logits."""
    logp = F.log_softmax(logits.float(), dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    return entropy if entropy.dim() == 1 else entropy.flatten(1).mean(1)


def count_entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of the distribution ``counts`` (per class: images, or pixels) describes;
    0 for no counts. How balanced a labeled set is (the TA-VAAL paper's Fig. 7a)."""
    share = counts / max(counts.sum(), 1.0)
    p = share[share > 0]
    return float(-(p * np.log(p)).sum())


class Accuracy:
    """Top-1 accuracy over valid targets (per image for classification, per pixel for dense
    targets), counted per class so that ranks' counts merge exactly."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_NONE,
                 class_names: Sequence[str] | None = None) -> None:
        self.ignore_index = ignore_index
        self.class_names = None if class_names is None else tuple(class_names)
        self.correct = torch.zeros(num_classes, dtype=torch.long)
        self.total = torch.zeros(num_classes, dtype=torch.long)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred = logits.argmax(dim=1).cpu().flatten()
        target = target.cpu().flatten()
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        n = len(self.total)
        self.total += torch.bincount(target, minlength=n)
        self.correct += torch.bincount(target[pred == target], minlength=n)

    def merge(self, other: Accuracy) -> None:
        self.correct += other.correct
        self.total += other.total

    def compute(self) -> dict[str, float]:
        out = {"accuracy": float(self.correct.sum()) / max(1, int(self.total.sum()))}
        if self.class_names is not None:  # per-class accuracy (like IoU/<class>); absent classes left out
            out.update({f"acc/{name}": int(c) / int(t)
                        for name, c, t in zip(self.class_names, self.correct, self.total) if int(t) > 0})
        return out
