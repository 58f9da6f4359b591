"""The loss-ranking head (Learning Loss's LossNet, as TA-VAAL uses it) and its ranking losses."""
from __future__ import annotations

import types
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LossRanker(nn.Module):
    """Predicts a per-sample score whose *order* follows the task loss.

    For each tapped feature map: adaptive global average pool -> Linear(C, hidden) -> ReLU;
    the per-map vectors are concatenated -> Linear(n * hidden, 1). Adaptive pooling (instead of
    the reference's fixed AvgPool2d) makes the head independent of the input size.
    """

    def __init__(self, in_channels: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("LossRanker needs at least one tapped feature map")
        self.heads = nn.ModuleList(nn.Linear(c, hidden) for c in in_channels)
        self.out = nn.Linear(hidden * len(in_channels), 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.heads):
            raise ValueError(f"LossRanker built for {len(self.heads)} feature maps, got {len(feats)}")
        parts = [F.relu(head(pool_features(f))) for head, f in zip(self.heads, feats)]
        return self.out(torch.cat(parts, dim=1)).squeeze(1)


def pool_features(feat: torch.Tensor) -> torch.Tensor:
    """B×C×H×W (or B×C) -> B×C by global average pooling."""
    return feat.float().mean(dim=(2, 3)) if feat.dim() == 4 else feat.float()


def _flipped_pairs(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Pair sample i with B-1-i for i < B/2 (the reference's flip). An odd batch drops its middle
    sample, which would otherwise be paired with itself; fewer than 2 samples gives no pair."""
    b = pred.shape[0]
    half = b // 2
    if half == 0:
        return None
    idx = torch.arange(half, device=pred.device)
    partner = b - 1 - idx
    d_pred = pred[idx] - pred[partner]
    target = target.detach()
    d_true = target[idx] - target[partner]
    return d_pred.float(), d_true.float()


def rank_loss_bce(pred: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """TA-VAAL eq. 2: BCE(sigmoid(l̂_i - l̂_j), 1[l_i > l_j]) over the flipped pairs (ties -> 0).
    Computed with logits for numerical safety under mixed precision."""
    pairs = _flipped_pairs(pred, target)
    if pairs is None:
        return pred.sum() * 0.0
    d_pred, d_true = pairs
    return F.binary_cross_entropy_with_logits(d_pred, (d_true > 0).float())


def rank_loss_margin(pred: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Learning Loss: mean(max(0, ξ - sign(l_i - l_j) · (l̂_i - l̂_j))), sign = +1 if l_i > l_j else -1."""
    pairs = _flipped_pairs(pred, target)
    if pairs is None:
        return pred.sum() * 0.0
    d_pred, d_true = pairs
    sign = torch.where(d_true > 0, 1.0, -1.0)
    return torch.clamp(margin - sign * d_pred, min=0).mean()


RankLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
RANK_LOSSES: types.MappingProxyType[str, RankLoss] = types.MappingProxyType(
    {"bce": rank_loss_bce, "margin": rank_loss_margin}
)
