"""Classification task models whose forward returns ``(logits, tapped feature maps)``."""
from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tavaal_seg.core.errors import ConfigError
from tavaal_seg.core.registry import Registry
from tavaal_seg.core.weights import hub_file, load_fitted, read_state_dict


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 for 32×32 inputs (3×3 stride-1 stem, no max-pool), as in the TA-VAAL and
    Learning Loss reference code. ``width`` scales every stage (1.0 = 64/128/256/512 channels);
    smaller widths make CPU runs affordable. Taps: the four residual stages."""

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        widths = [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, prev = [], widths[0]
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(prev, c, stride), BasicBlock(c, c, 1)))
            prev = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(widths[-1], num_classes)
        self.tap_channels = tuple(widths)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(out)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        logits = self.linear(torch.flatten(F.adaptive_avg_pool2d(f4, 1), 1))
        return logits, [f1, f2, f3, f4]


class TorchvisionResNet18(nn.Module):
    """torchvision's ImageNet-style ResNet-18 (7×7 stem + max-pool) for 224-pixel inputs, with
    the four stages tapped. ``encoder_weights="imagenet"`` passes torchvision's
    ``ResNet18_Weights.IMAGENET1K_V1`` to torchvision (fetched into the torch hub cache first,
    so that offline the error names the file and where to put it); the classifier is then a
    fresh layer for ``num_classes``."""

    def __init__(self, num_classes: int, width: float = 1.0, encoder_weights: str | None = None) -> None:
        super().__init__()
        if width != 1.0:
            raise ConfigError("model.width: torchvision's resnet18 has a fixed width; use 1.0 or model resnet18_cifar")
        if encoder_weights is None:
            self.net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
        else:
            weights = TORCHVISION_WEIGHTS[encoder_weights]
            hub_file(weights.url, f"model.encoder_weights={encoder_weights} (torchvision resnet18)")
            self.net = torchvision.models.resnet18(weights=weights)
            self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)
        self.tap_channels = (64, 128, 256, 512)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        f1 = n.layer1(x)
        f2 = n.layer2(f1)
        f3 = n.layer3(f2)
        f4 = n.layer4(f3)
        return n.fc(torch.flatten(n.avgpool(f4), 1)), [f1, f2, f3, f4]


# builder(num_classes, width) -> a model whose forward returns (logits, tapped feature maps) and
# whose tap_channels lists their channels
ClsModelBuilder = Callable[[int, float], nn.Module]
CLS_MODELS: Registry[ClsModelBuilder] = Registry("classification model", "model.name", "register_cls_model", (
    ("resnet18_cifar", CifarResNet18),
    ("resnet18", TorchvisionResNet18),
))

# smp's names for pretrained weights -> torchvision's (the same ImageNet checkpoint smp's resnet18 uses)
TORCHVISION_WEIGHTS = types.MappingProxyType({"imagenet": torchvision.models.ResNet18_Weights.IMAGENET1K_V1})
# which models take model.encoder_weights (the others, registered ones included, have no published
# pretrained weights: a registered builder loads its own, or model.weights loads a local file)
PRETRAINED = types.MappingProxyType({"resnet18": TORCHVISION_WEIGHTS})
# the classifier of each model: shaped by the number of classes, so a file for other classes leaves it at init
HEADS = ("linear.", "net.fc.")


def register_cls_model(name: str, builder: ClsModelBuilder | None = None, *,
                       replace: bool = False) -> ClsModelBuilder | Callable[[ClsModelBuilder], ClsModelBuilder]:
    """Add a classification model: ``builder(num_classes, width)`` returns an ``nn.Module`` whose
    forward gives ``(logits B×C, [tapped feature maps])`` and whose ``tap_channels`` lists the maps'
    channels (wrap any classifier with :func:`tavaal_seg.tap_layers`). Usable as a decorator;
    ``model.name: NAME`` then builds it (``model.weights`` loads a local state dict into it)."""
    return CLS_MODELS.register(name, builder, replace=replace)


def load_local_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local weights file (``weights_only`` or ``.safetensors``): this package's run
    checkpoint ``checkpoints/cycle_NN.pt``, a ``state_dict()`` of the model, or a torchvision
    ResNet state dict (into ``resnet18``). A classifier shaped for another number of classes, or
    absent (an encoder-only file), keeps its initialisation (logged); anything else that does not
    fit raises a WeightsError naming the keys."""
    state = read_state_dict(path, "model.weights file")
    own = model.state_dict()
    prefix = "net." if any(k.startswith("net.") for k in own) and not any(k.startswith("net.") for k in state) else ""
    load_fitted(model, {prefix + k: v for k, v in state.items()}, what=f"model.weights file {path}",
                kind=f"a {type(model).__name__} state dict", optional=HEADS)


def fetch_pretrained(name: str, encoder_weights: str | None) -> None:
    """Bring the file ``model.encoder_weights`` names into the torch hub cache now, so that a run
    without it fails before it writes anything (offline: a WeightsError naming the file)."""
    if encoder_weights is not None and encoder_weights in PRETRAINED.get(name, {}):
        hub_file(PRETRAINED[name][encoder_weights].url, f"model.encoder_weights={encoder_weights} ({name})")


def build_cls_model(name: str, num_classes: int, width: float = 1.0, weights: str | None = None,
                    encoder_weights: str | None = None) -> nn.Module:
    builder = CLS_MODELS.lookup(name)
    if encoder_weights is not None:
        if encoder_weights not in PRETRAINED.get(name, {}):
            raise ConfigError(f"model.encoder_weights: {name} has no pretrained weights {encoder_weights!r} "
                              f"(models with weights: {', '.join(f'{k}: {sorted(v)}' for k, v in PRETRAINED.items())})")
        model = builder(num_classes, width, encoder_weights=encoder_weights)
    else:
        model = builder(num_classes, width)
    if weights:
        load_local_weights(model, weights)
    return model
