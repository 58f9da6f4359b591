"""Segmentation data: class tables, dataset discovery and decoding, transforms, synthetic scenes."""
from .classes import CAMVID_CLASSES, ClassTable, camvid_table, cityscapes_table, folder_table, palette_table
from .datasets import (
    IMAGE_EXTENSIONS,
    SEG_DATASETS,
    DatasetSpec,
    SegItem,
    SegmentationDataset,
    collate_same_size,
    discover_camvid,
    discover_cityscapes,
    discover_folder,
    read_image,
    read_mask,
    relative_posix,
    resized_uint8,
)
from .label_maps import class_table_for, read_label_map, read_palette
from .synthetic import street_scene, write_street_scenes
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
    reseed_transform,
    seed_worker,
)

__all__ = [
    "CAMVID_CLASSES", "ClassTable", "camvid_table", "cityscapes_table", "folder_table", "palette_table",
    "class_table_for", "read_label_map", "read_palette", "collate_same_size", "relative_posix",
    "IMAGE_EXTENSIONS", "SEG_DATASETS", "DatasetSpec", "SegItem", "SegmentationDataset",
    "discover_camvid", "discover_cityscapes", "discover_folder", "read_image", "read_mask",
    "resized_uint8", "street_scene", "write_street_scenes", "IMAGENET_MEAN", "IMAGENET_STD",
    "build_eval_transform", "build_train_transform", "reseed_transform", "seed_worker",
]
