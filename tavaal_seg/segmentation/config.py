"""The segmentation adapter's config: the core sections plus ``data`` and ``model``."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import BaseConfig, require


@dataclass
class SegDataConfig:
    name: str = "cityscapes"          # cityscapes | camvid | folder
    root: str | None = None           # --data-root; else $TAVAAL_DATA_ROOT
    train_split: str = "train"        # cityscapes: leftImg8bit/<split>; camvid: <split>.txt; folder: root/<split>/
    test_split: str = "val"
    crop: list[int] = field(default_factory=lambda: [512, 1024])   # training crop [H, W]
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])  # random scale before the crop
    eval_size: list[int] | None = None  # [H, W] resize for evaluation and pool scoring; null = native size
    ignore_index: int = 255           # train id of void / unlabeled pixels (excluded from loss and mIoU)
    classes: list[str] | None = None  # folder only: class names, index = value in the mask
    images_dir: str = "images"        # folder only: root/<split>/<images_dir>/**/*.png|jpg
    masks_dir: str = "masks"          # folder only: masks at the same relative path, .png
    num_workers: int = 0              # DataLoader workers (0 = decode in the main process)
    limit_train: int | None = None    # use only the first N training items (CPU runs, tests)
    limit_test: int | None = None     # use only the first N test items
    synthetic_train: int | None = None  # demo: generate N synthetic street scenes at root if it is missing
    synthetic_val: int | None = None
    synthetic_size: list[int] | None = None  # [H, W] of the synthetic scenes


@dataclass
class SegModelConfig:
    name: str = "deeplabv3plus"       # deeplabv3plus | deeplabv3 | drn_d_22 | drn_d_38
    encoder: str = "resnet50"         # DeepLab: smp encoder name (resnet18, resnet50, ...)
    output_stride: int = 16           # DeepLab: 8 or 16
    decoder_channels: int = 256       # DeepLab: ASPP/decoder width (smaller for CPU runs)
    weights: str | None = None        # local file: DeepLab encoder (e.g. torchvision ImageNet ResNet) or DRN checkpoint
    width: float = 1.0                # DRN: channel multiplier (< 1 for CPU runs)
    taps: list[str] | None = None     # feature maps the ranker reads; null = the model's default


@dataclass
class SegConfig(BaseConfig):
    data: SegDataConfig = field(default_factory=SegDataConfig)
    model: SegModelConfig = field(default_factory=SegModelConfig)

    def validate_sections(self) -> None:
        from .data import SEG_DATASETS
        from .models import SEG_MODELS

        d, m = self.data, self.model
        require(d.name in SEG_DATASETS, "data.name", "one of " + ", ".join(sorted(SEG_DATASETS)), d.name)
        require(m.name in SEG_MODELS, "model.name", "one of " + ", ".join(sorted(SEG_MODELS)), m.name)
        require(len(d.crop) == 2 and all(s >= 16 for s in d.crop), "data.crop", "[H, W], each at least 16", d.crop)
        require(len(d.scale_range) == 2 and 0 < d.scale_range[0] <= d.scale_range[1], "data.scale_range",
                "[low, high] with 0 < low <= high", d.scale_range)
        require(d.eval_size is None or (len(d.eval_size) == 2 and all(s >= 16 for s in d.eval_size)),
                "data.eval_size", "null or [H, W], each at least 16", d.eval_size)
        require(0 <= d.ignore_index <= 255, "data.ignore_index", "a value in 0..255", d.ignore_index)
        require(d.name != "folder" or bool(d.classes), "data.classes", "a list of class names for data.name folder",
                d.classes)
        require(d.num_workers >= 0, "data.num_workers", "0 or more", d.num_workers)
        for key in ("limit_train", "limit_test", "synthetic_train", "synthetic_val"):
            value = getattr(d, key)
            require(value is None or value > 0, f"data.{key}", "null or a positive count", value)
        require(d.synthetic_size is None or (len(d.synthetic_size) == 2 and all(s >= 16 for s in d.synthetic_size)),
                "data.synthetic_size", "null or [H, W], each at least 16", d.synthetic_size)
        require(m.output_stride in (8, 16), "model.output_stride", "8 or 16", m.output_stride)
        require(m.decoder_channels > 0, "model.decoder_channels", "a positive width", m.decoder_channels)
        require(m.width > 0, "model.width", "a positive multiplier", m.width)
        require(m.taps is None or len(m.taps) > 0, "model.taps", "null or a non-empty list", m.taps)
        try:
            from ..core.vae import vae_stage_count

            vae_stage_count(self.vae.size)
        except ValueError as err:
            require(False, "vae.size", str(err).split(": ", 1)[-1], self.vae.size)
