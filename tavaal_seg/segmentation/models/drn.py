"""DRN-D-22 / DRN-D-38 segmentation networks with tapped features for a loss-ranking head.

Dilated Residual Networks (Yu, Koltun, Funkhouser, CVPR 2017), variant D, as used by the VAAL
line of active-learning work for Cityscapes. Layout (channels 16, 32, 64, 128, 256, 512, 512,
512; output stride 8):

* layer0: conv 7×7 (3->16) + BN + ReLU
* layer1, layer2: plain conv blocks (16, stride 1; 32, stride 2)
* layer3, layer4: residual BasicBlocks, stride 2 each (64, 128)
* layer5, layer6: residual BasicBlocks with dilation 2 and 4 instead of striding (256, 512)
* layer7, layer8: plain conv blocks, dilation 2 then 1, no residual (removes gridding artefacts)

Module names follow the authors' public implementation (``layer0.0.weight``,
``layer3.0.conv1.weight``, ``layer3.0.downsample.0.weight``, ...), so their ImageNet
checkpoints (``fc.*`` dropped) and DRNSeg checkpoints (``base.N.*`` + ``seg.*``) load here.
The segmentation head is a 1×1 conv to the classes followed by bilinear upsampling to the input
size (DRNSeg uses a fixed bilinear transposed conv, which only fits sizes divisible by 8).
"""
from __future__ import annotations

import math
import re
import types
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import ConfigError
from ...core.weights import hub_file, load_fitted, read_state_dict

__all__ = ["DRN", "DRNSeg", "drn_d_22", "drn_d_38", "DRN_LAYER_NAMES", "DRN_DEFAULT_TAPS", "DRN_IMAGENET_URLS",
           "drn_imagenet_file", "load_drn_weights"]

DRN_LAYER_NAMES: tuple[str, ...] = tuple(f"layer{i}" for i in range(9))
DRN_DEFAULT_TAPS: tuple[str, ...] = ("layer3", "layer4", "layer6", "layer8")
_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
_DEPTHS = {"drn_d_22": (1, 1, 2, 2, 2, 2, 1, 1), "drn_d_38": (1, 1, 3, 4, 6, 3, 1, 1)}
# the authors' ImageNet checkpoints (github.com/fyu/drn, drn.py model_urls); the name carries
# torch hub's sha256 prefix, so a download is checked
DRN_IMAGENET_URLS = types.MappingProxyType({"drn_d_22": "http://dl.yf.io/drn/drn_d_22-4bd2f8ea.pth",
                                           "drn_d_38": "http://dl.yf.io/drn/drn_d_38-eebb45f0.pth"})


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual; the first conv strides, dilations per conv."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, dilation[0])
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout, 1, dilation[1])
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _conv_layers(cin: int, cout: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """n × [conv3×3 + BN + ReLU] in one flat Sequential (key names as in the reference)."""
    mods: list[nn.Module] = []
    for k in range(n):
        mods += [_conv3x3(cin if k == 0 else cout, cout, stride if k == 0 else 1, dilation),
                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*mods)


def _res_layer(cin: int, cout: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # The reference's new_level=False for the dilated stages: the first block already uses the
    # full dilation (d, d); stride-2 stages use (1, 1).
    blocks = [BasicBlock(cin, cout, stride, (dilation, dilation))]
    blocks += [BasicBlock(cout, cout, 1, (dilation, dilation)) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class DRN(nn.Module):
    """DRN-D backbone (no classifier). ``forward`` returns the output of every layer0..layer8.

    ``width`` scales all channel counts (1.0 = the paper); smaller widths are for CPU tests and
    studies and cannot load the published checkpoints.
    """

    def __init__(self, depths: Sequence[int], width: float = 1.0) -> None:
        super().__init__()
        if len(depths) != 8:
            raise ValueError(f"DRN-D needs 8 stage depths, got {depths}")
        ch = [max(4, int(round(c * width))) for c in _CHANNELS]
        self.channels: tuple[int, ...] = (ch[0], *ch)  # per layer0..layer8
        self.layer0 = nn.Sequential(nn.Conv2d(3, ch[0], 7, padding=3, bias=False), nn.BatchNorm2d(ch[0]),
                                    nn.ReLU(inplace=True))
        self.layer1 = _conv_layers(ch[0], ch[0], depths[0])
        self.layer2 = _conv_layers(ch[0], ch[1], depths[1], stride=2)
        self.layer3 = _res_layer(ch[1], ch[2], depths[2], stride=2)
        self.layer4 = _res_layer(ch[2], ch[3], depths[3], stride=2)
        self.layer5 = _res_layer(ch[3], ch[4], depths[4], dilation=2)
        self.layer6 = _res_layer(ch[4], ch[5], depths[5], dilation=4)
        self.layer7 = _conv_layers(ch[5], ch[6], depths[6], dilation=2)
        self.layer8 = _conv_layers(ch[6], ch[7], depths[7], dilation=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init as in the reference: N(0, sqrt(2 / (k*k*out)))
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for name in DRN_LAYER_NAMES:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs


class DRNSeg(nn.Module):
    """DRN-D backbone + 1×1 classifier + bilinear upsampling to the input size.

    ``forward(x) -> (logits B×C×H×W, feats)`` where ``feats`` are the outputs of the layers named
    in ``taps`` (in that order); ``tap_channels`` gives their channel counts without a
    forward pass. Any input size works (odd sizes are fine; logits always match the input).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        taps: Sequence[str] = DRN_DEFAULT_TAPS,
        weights: str | Path | None = None,
        width: float = 1.0,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        if arch not in _DEPTHS:
            raise ValueError(f"unknown DRN architecture {arch!r}; valid: {sorted(_DEPTHS)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        taps = tuple(taps)
        bad = [t for t in taps if t not in DRN_LAYER_NAMES]
        if bad or not taps or len(set(taps)) != len(taps):
            raise ConfigError(f"model.taps: taps must be distinct names from {DRN_LAYER_NAMES}, got {taps}")
        self.arch = arch
        self.num_classes = int(num_classes)
        self.tap_names: tuple[str, ...] = taps
        self._tap_index = [DRN_LAYER_NAMES.index(t) for t in taps]
        self.backbone = DRN(_DEPTHS[arch], width=width)
        self.seg = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=True)
        n = self.seg.out_channels  # reference init of the classifier
        nn.init.normal_(self.seg.weight, 0.0, math.sqrt(2.0 / n))
        nn.init.zeros_(self.seg.bias)
        if encoder_weights is not None:
            load_drn_weights(self, drn_imagenet_file(arch, encoder_weights, width))
        if weights is not None:
            load_drn_weights(self, weights)

    @property
    def tap_channels(self) -> list[int]:
        return [self.backbone.channels[i] for i in self._tap_index]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = self.backbone(x)
        logits = F.interpolate(self.seg(outs[-1]), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, [outs[i] for i in self._tap_index]


def _remap_key(key: str) -> str | None:
    """Map checkpoint keys from the known DRN formats onto :class:`DRNSeg` names (None = drop)."""
    key = key.removeprefix("module.")
    m = re.match(r"base\.(\d)\.(.*)", key)  # authors' DRNSeg: base = children of DRN minus pool/fc
    if m:
        return f"backbone.layer{m.group(1)}.{m.group(2)}"
    if key.startswith("layer"):  # authors' ImageNet DRN
        return f"backbone.{key}"
    if key.startswith(("fc.", "up.")):  # ImageNet classifier / DRNSeg's fixed bilinear deconv
        return None
    return key


def drn_imagenet_file(arch: str, encoder_weights: str = "imagenet", width: float = 1.0) -> Path:
    """The authors' ImageNet checkpoint of ``arch`` in the torch hub cache (fetched on first use;
    offline, the error names the file and where to put it). It fits ``width`` 1.0 only."""
    if encoder_weights != "imagenet" or arch not in DRN_IMAGENET_URLS:
        raise ConfigError(f"model.encoder_weights: {arch} has ImageNet weights only ('imagenet'), "
                          f"got {encoder_weights!r}")
    url = DRN_IMAGENET_URLS[arch]
    if width != 1.0:
        raise ConfigError(f"model.encoder_weights=imagenet: {url.rsplit('/', 1)[-1]} ({arch}'s ImageNet weights) fits "
                          f"model.width 1.0 only, got {width}")
    return hub_file(url, f"model.encoder_weights=imagenet ({arch})")


def load_drn_weights(model: DRNSeg, path: str | Path) -> None:
    """Load a local checkpoint into ``model`` (``weights_only``), its layout detected by key:
    this package's ``DRNSeg.state_dict()`` or run checkpoint ``checkpoints/cycle_NN.pt``, the
    authors' DRNSeg checkpoints and their ImageNet DRN checkpoints (backbone only). The
    classifier keeps its initialisation when the file has none or one for another number of
    classes (logged); any other missing, unexpected or mis-shaped key raises
    :class:`~tavaal_seg.core.errors.WeightsError` naming the file and the keys."""
    path = Path(path)
    mapped = {}
    for k, v in read_state_dict(path, "model.weights file").items():
        nk = _remap_key(k)
        if nk is not None:
            mapped[nk] = v
    load_fitted(model, mapped, what=f"model.weights file {path}",
                kind=f"{model.arch} (num_classes={model.num_classes})", optional=("seg.",))


def drn_d_22(num_classes: int, **kwargs: object) -> DRNSeg:
    """DRN-D-22 segmentation model (kwargs: taps, weights, width, encoder_weights)."""
    return DRNSeg("drn_d_22", num_classes, **kwargs)  # type: ignore[arg-type]


def drn_d_38(num_classes: int, **kwargs: object) -> DRNSeg:
    """DRN-D-38 segmentation model (kwargs: taps, weights, width, encoder_weights)."""
    return DRNSeg("drn_d_38", num_classes, **kwargs)  # type: ignore[arg-type]
