"""The segmentation adapter's config: the core sections plus ``data`` and ``model``."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import BaseConfig, ConfigError, option, require

FOLDER_ONLY = {"img_dir": "{split}/images", "ann_dir": "{split}/masks", "img_suffix": None, "seg_map_suffix": ".png",
               "unlabeled_dir": None}


@dataclass
class SegDataConfig:
    name: str = option("cityscapes", "dataset layout", choices="tavaal_seg.segmentation.data:SEG_DATASETS")
    root: str | None = option(None, "dataset folder (--data-root; else $TAVAAL_DATA_ROOT)")
    train_split: str = option("train", "pool split: cityscapes leftImg8bit/<split>; camvid <split>.txt; folder: "
                                       "fills {split} in img_dir/ann_dir")
    test_split: str = option("val", "evaluation split (every image needs its mask)")
    crop: list[int] = option(help="training crop [H, W]", factory=lambda: [512, 1024])
    scale_range: list[float] = option(help="random scale range before the crop", factory=lambda: [0.5, 2.0])
    eval_size: list[int] | None = option(None, "[H, W] resize for evaluation and pool scoring; null = native size "
                                               "(images of several sizes are then batched by size)")
    ignore_index: int = option(255, "train id of void / unlabeled pixels (excluded from loss and mIoU)")
    classes: list[str] | None = option(None, "class names, index = train id (folder: required unless data.palette "
                                             "names them; overrides a dataset's own table)")
    label_map: str | dict[int, int] | None = option(
        None, "source id -> train id for the mask values ({7: 0, 8: 1, 0: 255}) or a .yaml/.json/.csv file; "
              "unmapped values are errors, 255 (ignore_index) means ignore")
    palette: str | list[list[int]] | dict[str, list[int]] | None = option(
        None, "colour (RGB) masks: [[r, g, b], ...] per data.classes, {name: [r, g, b]}, or a file: name,r,g,b .csv "
              "(CamVid class_dict.csv), CVAT labelmap.txt, .yaml/.json; colours of names outside data.classes are "
              "ignored, unknown colours are errors")
    img_dir: str | dict[str, str] = option(
        FOLDER_ONLY["img_dir"], "folder: images under root/<img_dir>/** ({split} = the split name; or a mapping "
                                "split -> folder)")
    ann_dir: str | dict[str, str] = option(
        FOLDER_ONLY["ann_dir"], "folder: masks under root/<ann_dir>/, same relative folder as the image ({split} or a "
                                "mapping)")
    img_suffix: str | None = option(None, "folder: image file names end with this (e.g. _leftImg8bit.png); null = "
                                          "any .png/.jpg/.jpeg")
    seg_map_suffix: str = option(".png", "folder: mask name = image name without img_suffix + this "
                                         "(e.g. _gtFine_labelIds.png)")
    unlabeled_dir: str | None = option(None, "folder, labels.mode human: images under root/<dir>/** join the pool "
                                             "without masks; their masks go under the train split's ann_dir")
    num_workers: int = option(0, "DataLoader workers per process (0 = decode in the main process)")
    limit_train: int | None = option(None, "use only the first N training items (CPU runs, tests)")
    limit_test: int | None = option(None, "use only the first N test items")
    synthetic_train: int | None = option(None, "demo: generate N synthetic street scenes at root if it is missing")
    synthetic_val: int | None = option(None, "demo: synthetic validation scenes")
    synthetic_size: list[int] | None = option(None, "demo: [H, W] of the synthetic scenes")


@dataclass
class SegModelConfig:
    name: str = option("deeplabv3plus", "architecture", choices="tavaal_seg.segmentation.models:SEG_MODELS")
    encoder: str = option("resnet50", "DeepLab: smp encoder, or tu-<timm model>",
                          choices="segmentation_models_pytorch.encoders:encoders", open_choices=True)
    encoder_weights: str | None = option(
        None, "pretrained encoder by name, fetched into the hub cache once: smp's names for the DeepLab encoder "
              "(imagenet, ssl, swsl, ...); DRN: imagenet (model.width 1.0)")
    output_stride: int = option(16, "DeepLab: 8 or 16", choices=(8, 16))
    decoder_channels: int = option(256, "DeepLab: ASPP/decoder width (smaller for CPU runs)")
    weights: str | None = option(None, "local weights file (.pt/.pth/.safetensors): an encoder state dict "
                                       "(torchvision, smp), a full smp/torchvision/DRN model state dict, or a run's "
                                       "checkpoints/cycle_NN.pt")
    width: float = option(1.0, "DRN: channel multiplier (< 1 for CPU runs)")
    taps: list[str] | None = option(None, "feature maps the ranker reads; null = the model's default")


@dataclass
class SegConfig(BaseConfig):
    data: SegDataConfig = field(default_factory=SegDataConfig)
    model: SegModelConfig = field(default_factory=SegModelConfig)

    def validate_sections(self) -> None:
        d, m = self.data, self.model
        require(len(d.crop) == 2 and all(s >= 16 for s in d.crop), "data.crop", "[H, W], each at least 16", d.crop)
        require(len(d.scale_range) == 2 and 0 < d.scale_range[0] <= d.scale_range[1], "data.scale_range",
                "[low, high] with 0 < low <= high", d.scale_range)
        require(d.eval_size is None or (len(d.eval_size) == 2 and all(s >= 16 for s in d.eval_size)),
                "data.eval_size", "null or [H, W], each at least 16", d.eval_size)
        require(0 <= d.ignore_index <= 255, "data.ignore_index", "a value in 0..255", d.ignore_index)
        require(d.name != "folder" or bool(d.classes) or d.palette is not None, "data.classes",
                "a list of class names for data.name folder (or data.palette naming them)", d.classes)
        require(d.label_map is None or d.palette is None, "data.label_map/data.palette",
                "one of them (label_map maps mask values, palette mask colours)", (d.label_map, d.palette))
        self._validate_folder_keys()
        require(d.num_workers >= 0, "data.num_workers", "0 or more", d.num_workers)
        for key in ("limit_train", "limit_test", "synthetic_train", "synthetic_val"):
            value = getattr(d, key)
            require(value is None or value > 0, f"data.{key}", "null or a positive count", value)
        require(d.synthetic_size is None or (len(d.synthetic_size) == 2 and all(s >= 16 for s in d.synthetic_size)),
                "data.synthetic_size", "null or [H, W], each at least 16", d.synthetic_size)
        require(m.decoder_channels > 0, "model.decoder_channels", "a positive width", m.decoder_channels)
        require(m.width > 0, "model.width", "a positive multiplier", m.width)
        require(m.taps is None or len(m.taps) > 0, "model.taps", "null or a non-empty list", m.taps)
        self._validate_weights()
        try:
            from ..core.vae import vae_stage_count

            vae_stage_count(self.vae.size)
        except ValueError as err:
            require(False, "vae.size", str(err).split(": ", 1)[-1], self.vae.size)

    def _validate_folder_keys(self) -> None:
        d = self.data
        changed = [k for k, default in FOLDER_ONLY.items() if getattr(d, k) != default]
        require(d.name == "folder" or not changed, "data." + ", data.".join(changed or ["img_dir"]),
                "their defaults unless data.name is folder (the other layouts fix their folders)",
                [getattr(d, k) for k in changed])
        for key in ("img_dir", "ann_dir"):
            value = getattr(d, key)
            folders = value.values() if isinstance(value, dict) else [value]
            require(all(isinstance(f, str) and f and "{" not in f.replace("{split}", "") for f in folders),
                    f"data.{key}", "a folder name (may contain {split}) or a mapping split -> folder", value)
            if isinstance(value, dict):
                for split in (d.train_split, d.test_split):
                    require(split in value, f"data.{key}", f"a folder for split {split!r}", value)
        require(d.img_suffix is None or bool(d.img_suffix), "data.img_suffix", "null or a non-empty suffix",
                d.img_suffix)
        require(d.unlabeled_dir is None or self.labels.mode == "human", "data.unlabeled_dir",
                "null unless labels.mode is human (an oracle run needs every pool image labeled)", d.unlabeled_dir)

    def _validate_weights(self) -> None:
        m = self.model
        require(m.weights is None or m.encoder_weights is None, "model.weights/model.encoder_weights",
                "one of them (a local file, or pretrained weights by name)", (m.weights, m.encoder_weights))
        from ..core.weights import hub_cache_path
        from .models import DEEPLAB_MODELS, DRN_IMAGENET_URLS, DRN_MODELS, smp_weight_names

        if m.name not in DEEPLAB_MODELS + DRN_MODELS:  # registered with register_seg_model
            require(m.encoder_weights is None, "model.encoder_weights", f"null for {m.name} (a registered model gets "
                    "model.width, model.weights and model.taps; its builder loads any pretrained weights itself)",
                    m.encoder_weights)
            return
        if m.name in DRN_MODELS:
            require(m.encoder_weights in (None, "imagenet"), "model.encoder_weights", f"null or imagenet for {m.name}",
                    m.encoder_weights)
            if m.encoder_weights is not None:
                file = hub_cache_path(DRN_IMAGENET_URLS[m.name])
                require(m.width == 1.0, "model.width", f"1.0 with model.encoder_weights=imagenet: {m.name}'s ImageNet "
                        f"weights {file.name} (fetched to {file}) have the paper's widths", m.width)
            return
        from segmentation_models_pytorch.encoders import get_encoder_names

        names = get_encoder_names()
        if m.encoder not in names and not m.encoder.startswith("tu-"):
            import difflib

            close = difflib.get_close_matches(m.encoder, names, n=3)
            raise ConfigError(f"model.encoder: {m.encoder!r} is not an smp encoder"
                              + (f" (did you mean {', '.join(close)}?)" if close else "")
                              + "; see segmentation_models_pytorch.encoders.get_encoder_names(), or use "
                                "tu-<timm model>")
        if m.encoder_weights is not None and not m.encoder.startswith("tu-"):
            offered = smp_weight_names(m.encoder)
            require(m.encoder_weights in offered, "model.encoder_weights",
                    f"one of smp's weights for {m.encoder}: {', '.join(offered) or 'none'}", m.encoder_weights)
