"""Segmentation task models. Every model's ``forward(x)`` returns ``(logits, feats)``:
logits B×C×H×W at the input resolution, and ``feats`` the tapped feature maps a loss-ranking
head reads; ``model.tap_channels`` lists their channels without a forward pass."""
from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from .deeplab import (DEEPLAB_DEFAULT_TAPS, DeepLabSeg, deeplabv3, deeplabv3plus, load_deeplab_weights,
                      smp_encoder_file, smp_weight_names)
from .drn import (DRN, DRN_DEFAULT_TAPS, DRN_IMAGENET_URLS, DRN_LAYER_NAMES, DRNSeg, drn_d_22, drn_d_38,
                  drn_imagenet_file, load_drn_weights)

__all__ = [
    "SegModel", "SEG_MODELS", "build_seg_model",
    "DeepLabSeg", "deeplabv3", "deeplabv3plus", "load_deeplab_weights", "smp_encoder_file", "smp_weight_names",
    "DEEPLAB_DEFAULT_TAPS", "DRN", "DRNSeg", "drn_d_22", "drn_d_38", "drn_imagenet_file", "load_drn_weights",
    "DRN_DEFAULT_TAPS", "DRN_IMAGENET_URLS", "DRN_LAYER_NAMES", "fetch_pretrained",
]


@runtime_checkable
class SegModel(Protocol):
    """What the rest of the package relies on from a segmentation model."""

    num_classes: int
    tap_names: tuple[str, ...]

    @property
    def tap_channels(self) -> list[int]: ...

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


SEG_MODELS: Mapping[str, Callable[..., Any]] = types.MappingProxyType({
    "deeplabv3": deeplabv3,
    "deeplabv3plus": deeplabv3plus,
    "drn_d_22": drn_d_22,
    "drn_d_38": drn_d_38,
})


def build_seg_model(name: str, num_classes: int, **kwargs: Any) -> torch.nn.Module:
    """Build a registered model by name; kwargs go to the builder (see each model's docs)."""
    try:
        builder = SEG_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown segmentation model {name!r}; valid names: {sorted(SEG_MODELS)}") from None
    return builder(num_classes, **kwargs)


def fetch_pretrained(name: str, encoder: str, encoder_weights: str | None, width: float = 1.0) -> None:
    """Bring the pretrained file ``model.encoder_weights`` names into its cache now, so that a run
    without it fails before it writes anything (offline: a WeightsError naming the file)."""
    if encoder_weights is None:
        return
    if name in DRN_IMAGENET_URLS:
        drn_imagenet_file(name, encoder_weights, width)
    else:
        smp_encoder_file(encoder, encoder_weights)
