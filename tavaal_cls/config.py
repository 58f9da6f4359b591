"""The classification adapter's config: the core sections plus ``data`` and ``model``."""
from __future__ import annotations

from dataclasses import dataclass, field

from tavaal_seg.core.config import BaseConfig, option, require


@dataclass
class ClsDataConfig:
    name: str = option("cifar10", "dataset", choices="tavaal_cls.data:CLS_DATASETS")
    root: str | None = option(None, "dataset folder (--data-root; else $TAVAAL_DATA_ROOT)")
    download: bool = option(False, "torchvision download of CIFAR when the root is empty (needs internet)")
    imbalance_ratio: int = option(10, "cifar10_imbalanced: even classes keep 5000/ratio images")
    train_per_class: int | None = option(None, "keep only the first N training images per class")
    test_per_class: int | None = option(None, "keep only the first N test images per class")
    resize: int | None = option(None, "caltech101/image_folder: working size (short side, centre square)")
    crop: int | None = option(None, "training/test crop (default: 224 caltech101, else resize)")
    split_seed: int = option(0, "caltech101/image_folder without a test folder: seed of the per-class split")
    test_fraction: float = option(0.1, "caltech101/image_folder without a test folder: test share per class")
    train_dir: str = option("train", "image_folder: training folder <root>/<train_dir>/<class>/*")
    test_dir: str = option("test", "image_folder: test folder <root>/<test_dir>/<class>/*")
    unlabeled_dir: str | None = option(None, "image_folder, labels.mode human: a pool of unlabeled images "
                                             "<root>/<dir>/**")


@dataclass
class ClsModelConfig:
    name: str = option("resnet18_cifar", "model (resnet18: torchvision's, 224 px)",
                       choices="tavaal_cls.models:CLS_MODELS")
    width: float = option(1.0, "channel multiplier (resnet18_cifar); < 1 for CPU runs")
    weights: str | None = option(None, "local weights file: a state dict of the model or a torchvision ResNet, or "
                                       "a run's checkpoints/cycle_NN.pt")
    encoder_weights: str | None = option(None, "pretrained weights by name (smp's names), fetched into the torch hub "
                                               "cache once: resnet18 imagenet (torchvision IMAGENET1K_V1)")


@dataclass
class ClsConfig(BaseConfig):
    data: ClsDataConfig = field(default_factory=ClsDataConfig)
    model: ClsModelConfig = field(default_factory=ClsModelConfig)

    def validate_sections(self) -> None:
        from .models import PRETRAINED

        m = self.model
        require(m.width > 0, "model.width", "a positive multiplier", m.width)
        require(m.weights is None or m.encoder_weights is None, "model.weights/model.encoder_weights",
                "one of them (a local file, or pretrained weights by name)", (m.weights, m.encoder_weights))
        require(m.encoder_weights is None or m.encoder_weights in PRETRAINED.get(m.name, {}), "model.encoder_weights",
                f"null or one of {sorted(PRETRAINED.get(m.name, {}))} for model {m.name}", m.encoder_weights)
        require(self.data.unlabeled_dir is None or (self.data.name == "image_folder" and self.labels.mode == "human"),
                "data.unlabeled_dir", "null, or a folder with data.name image_folder and labels.mode human",
                self.data.unlabeled_dir)
        require(0.0 < self.data.test_fraction < 1.0, "data.test_fraction", "a fraction in (0, 1)", self.data.test_fraction)
