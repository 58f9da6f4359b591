"""Tiny in-memory classification data and configs shared by the tests."""
from __future__ import annotations

import numpy as np
import torch

from tavaal_cls.adapter import ClassificationAdapter
from tavaal_cls.config import ClsConfig
from tavaal_cls.data import CIFAR_MEAN, CIFAR_STD, ClassificationData, ImageSet
from tavaal_seg.core.config import load_config


def tiny_config(**overrides: object) -> ClsConfig:
    sets = {
        "model.width": 0.0625, "train.epochs": 1, "train.batch_size": 16, "vae.width": 0.03125,
        "vae.iterations": 2, "vae.batch_size": 16, "vae.z_dim": 8, "eval.batch_size": 64,
        "active.initial": 20, "active.budget": 10, "active.cycles": 2, "active.subset": 40,
        "device": "cpu", "logging.tensorboard": False,
    }
    sets.update(overrides)
    return load_config(ClsConfig, None, [f"{k}={v}" for k, v in sets.items()])


def synthetic_images(n: int, classes: int, seed: int) -> ImageSet:
    """Class-dependent colour blobs, so a model can learn something in one epoch."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = (labels.float() / classes * 255).view(n, 1, 1, 1).expand(n, 3, 32, 32)
    noise = torch.randint(0, 60, (n, 3, 32, 32), generator=g).float()
    images = (base * 0.7 + noise).clamp(0, 255).to(torch.uint8)
    ids = [f"img{i:04d}" for i in range(n)]
    return ImageSet(ids, [f"train/{i}.png" for i in ids], labels.numpy().astype(np.int64), images)


def tiny_adapter(cfg: ClsConfig, n_train: int = 80, n_test: int = 30) -> ClassificationAdapter:
    data = ClassificationData([f"c{i}" for i in range(4)], synthetic_images(n_train, 4, 0),
                              synthetic_images(n_test, 4, 1), CIFAR_MEAN, CIFAR_STD, crop=32, pad=4)
    return ClassificationAdapter(cfg, data_root=__import__("pathlib").Path("/nonexistent-root"), data=data)
