"""Segmentation task models. Every model's ``forward(x)`` returns ``(logits, feats)``:
logits B×C×H×W at the input resolution, and ``feats`` the tapped feature maps a loss-ranking
head reads; ``model.tap_channels`` lists their channels without a forward pass."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from ...core.registry import Registry
from .deeplab import (
    DEEPLAB_DEFAULT_TAPS,
    DeepLabSeg,
    deeplabv3,
    deeplabv3plus,
    load_deeplab_weights,
    smp_encoder_file,
    smp_weight_names,
)
from .drn import (
    DRN,
    DRN_DEFAULT_TAPS,
    DRN_IMAGENET_URLS,
    DRN_LAYER_NAMES,
    DRNSeg,
    drn_d_22,
    drn_d_38,
    drn_imagenet_file,
    load_drn_weights,
)

__all__ = [
    "SegModel", "SEG_MODELS", "build_seg_model", "register_seg_model", "DEEPLAB_MODELS", "DRN_MODELS",
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


# the built-in families: which model.* keys each takes (SegmentationAdapter.build_model) and
# where model.encoder_weights comes from (smp's encoders; DRN's ImageNet files)
DEEPLAB_MODELS = ("deeplabv3", "deeplabv3plus")
DRN_MODELS = tuple(DRN_IMAGENET_URLS)

# builder(num_classes, **kwargs) -> a SegModel; the adapter passes the model section's keys
# (see SegmentationAdapter.build_model)
SegModelBuilder = Callable[..., torch.nn.Module]
SEG_MODELS: Registry[SegModelBuilder] = Registry("segmentation model", "model.name", "register_seg_model", (
    ("deeplabv3", deeplabv3),
    ("deeplabv3plus", deeplabv3plus),
    ("drn_d_22", drn_d_22),
    ("drn_d_38", drn_d_38),
))


def register_seg_model(name: str, builder: SegModelBuilder | None = None, *,
                       replace: bool = False) -> SegModelBuilder | Callable[[SegModelBuilder], SegModelBuilder]:
    """Add a segmentation model: ``builder(num_classes, **kwargs)`` returns a :class:`SegModel`
    (forward gives ``(logits B×C×H×W at the input size, [tapped feature maps])``; ``tap_channels``
    lists the maps' channels). Usable as a decorator; ``model.name: NAME`` then builds it with
    ``width=model.width, weights=model.weights`` (and ``taps=model.taps`` when set), so a builder
    should take ``**kwargs`` for keys it ignores."""
    return SEG_MODELS.register(name, builder, replace=replace)


def build_seg_model(name: str, num_classes: int, **kwargs: Any) -> torch.nn.Module:
    """Build a registered model by name; kwargs go to the builder (see each model's docs)."""
    return SEG_MODELS.lookup(name)(num_classes, **kwargs)


def fetch_pretrained(name: str, encoder: str, encoder_weights: str | None, width: float = 1.0) -> None:
    """Bring the pretrained file ``model.encoder_weights`` names into its cache now, so that a run
    without it fails before it writes anything (offline: a WeightsError naming the file).
    Registered models take no ``model.encoder_weights`` (the config check refuses it)."""
    if encoder_weights is None:
        return
    if name in DRN_MODELS:
        drn_imagenet_file(name, encoder_weights, width)
    elif name in DEEPLAB_MODELS:
        smp_encoder_file(encoder, encoder_weights)
