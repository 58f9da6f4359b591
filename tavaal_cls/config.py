"""The classification adapter's config: the core sections plus ``data`` and ``model``."""
from __future__ import annotations

from dataclasses import dataclass, field

from tavaal_seg.core.config import BaseConfig, require


@dataclass
class ClsDataConfig:
    name: str = "cifar10"             # cifar10 | cifar100 | cifar10_imbalanced | caltech101 | image_folder
    root: str | None = None           # --data-root; else $TAVAAL_DATA_ROOT
    download: bool = False            # torchvision download of CIFAR when the root is empty (needs internet)
    imbalance_ratio: int = 10         # cifar10_imbalanced: even classes keep 5000/ratio images
    train_per_class: int | None = None  # keep only the first N training images per class
    test_per_class: int | None = None
    resize: int | None = None         # caltech101/image_folder: working size (short side, centre square)
    crop: int | None = None           # training/test crop (default: 224 caltech101, else resize)
    split_seed: int = 0               # caltech101/image_folder without test folder: per-class split
    test_fraction: float = 0.1
    train_dir: str = "train"          # image_folder
    test_dir: str = "test"
    unlabeled_dir: str | None = None  # image_folder, labels.mode human: a pool of unlabeled images <root>/<dir>/**


@dataclass
class ClsModelConfig:
    name: str = "resnet18_cifar"      # resnet18_cifar | resnet18 (torchvision, 224 px)
    width: float = 1.0                # channel multiplier (resnet18_cifar); < 1 for CPU runs
    weights: str | None = None        # local state-dict file; nothing is downloaded


@dataclass
class ClsConfig(BaseConfig):
    data: ClsDataConfig = field(default_factory=ClsDataConfig)
    model: ClsModelConfig = field(default_factory=ClsModelConfig)

    def validate_sections(self) -> None:
        from .data import CLS_DATASETS
        from .models import CLS_MODELS

        require(self.data.name in CLS_DATASETS, "data.name", "one of " + ", ".join(sorted(CLS_DATASETS)), self.data.name)
        require(self.model.name in CLS_MODELS, "model.name", "one of " + ", ".join(sorted(CLS_MODELS)), self.model.name)
        require(self.model.width > 0, "model.width", "a positive multiplier", self.model.width)
        require(self.data.unlabeled_dir is None or (self.data.name == "image_folder" and self.labels.mode == "human"),
                "data.unlabeled_dir", "null, or a folder with data.name image_folder and labels.mode human",
                self.data.unlabeled_dir)
        require(0.0 < self.data.test_fraction < 1.0, "data.test_fraction", "a fraction in (0, 1)", self.data.test_fraction)
