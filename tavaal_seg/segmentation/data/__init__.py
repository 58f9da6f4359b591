"""Segmentation data: class tables, dataset discovery and decoding, transforms, synthetic scenes."""
from .classes import CAMVID_CLASSES, ClassTable, camvid_table, cityscapes_table, folder_table
from .datasets import (
    IMAGE_EXTENSIONS,
    SEG_DATASETS,
    DatasetSpec,
    SegItem,
    SegmentationDataset,
    discover_camvid,
    discover_cityscapes,
    discover_folder,
    read_image,
    read_mask,
    resized_uint8,
)
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
    "CAMVID_CLASSES", "ClassTable", "camvid_table", "cityscapes_table", "folder_table",
    "IMAGE_EXTENSIONS", "SEG_DATASETS", "DatasetSpec", "SegItem", "SegmentationDataset",
    "discover_camvid", "discover_cityscapes", "discover_folder", "read_image", "read_mask",
    "resized_uint8", "street_scene", "write_street_scenes", "IMAGENET_MEAN", "IMAGENET_STD",
    "build_eval_transform", "build_train_transform", "reseed_transform", "seed_worker",
]
