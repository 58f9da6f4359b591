"""Tiny classification data (in memory and as an image folder), configs and whole-run
arguments shared by the tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tavaal_cls.adapter import ClassificationAdapter
from tavaal_cls.config import ClsConfig
from tavaal_cls.data import CIFAR_MEAN, CIFAR_STD, ClassificationData, ImageSet
from tavaal_seg.core.validation import load_config


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


REPO = Path(__file__).resolve().parents[1]


def write_image_folder(root: Path) -> Path:
    """A small image-folder dataset: 4 classes of colour-coded 32x32 PNGs, 16 train and 4 test each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 4)):
        for label in range(4):
            for k in range(n):
                img = np.clip(40 + 60 * label + rng.integers(0, 50, (32, 32, 3)), 0, 255).astype(np.uint8)
                path = root / split / f"class{label}" / f"{k:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
    return root


def tiny_run_args(root: Path, run: Path, *extra: str) -> list[str]:
    """al_cls.py arguments for a 3-cycle tavaal run on :func:`write_image_folder` data, in seconds."""
    return ["--config", str(REPO / "configs" / "cifar10.yaml"), "--data-root", str(root), "--run-dir", str(run),
            "--strategy", "tavaal", "--cycles", "3", "--initial", "12", "--budget", "8", "--subset", "30",
            "--epochs", "2", "--device", "cpu", "--set", "data.name=image_folder", "--set", "model.width=0.0625",
            "--set", "train.batch_size=8", "--set", "vae.iterations=4", "--set", "vae.batch_size=8",
            "--set", "vae.z_dim=8", "--set", "vae.width=0.03125", "--set", "export.formats=[csv, jsonl]", *extra]


def run_outcome(run: Path) -> dict:
    """What a finished run decided and measured: selections, per-cycle metrics, exported files."""
    state = json.loads((run / "state.json").read_text())
    return {"selections": state["selections"], "metrics": [c["metrics"] for c in state["cycles"]],
            "exports": {p.name: p.read_text() for p in sorted((run / "selections").iterdir())}}



# ------------------------------------------------------------------ a segmentation team's own tree

# what tests/test_own_data.py and docs/own_data.md call "my_data": the synthetic scenes' labelIds
# (tavaal_seg.segmentation.data.synthetic) mapped to 8 classes; 0 (unlabeled), 1 (ego), 4 (static) ignored
OWN_CLASSES = ["road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "car"]
OWN_LABEL_MAP = {7: 0, 8: 1, 11: 2, 17: 3, 21: 4, 23: 5, 24: 6, 26: 7, 0: 255, 1: 255, 4: 255}


def write_own_data(root: Path, n_train: int = 12, n_labeled: int = 8, n_val: int = 4, n_unlabeled: int = 6,
                   size: tuple[int, int] = (64, 96), unlabeled_size: tuple[int, int] = (80, 96)) -> Path:
    """A team's tree, mmsegmentation style: ``images/{train,val}/<site>/<name>.jpg``, source-id masks
    ``annotations/{train,val}/<site>/<name>_labelIds.png`` for the first ``n_labeled`` training images
    and every val image, ``incoming/<batch>/<name>.jpg`` (unlabeled, another size) and
    ``label_map.csv`` (source id -> train id)."""
    import cv2

    from tavaal_seg.segmentation.data import street_scene

    def put(path: Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array)

    rng = np.random.default_rng(0)
    for split, n, labeled in (("train", n_train, n_labeled), ("val", n_val, n_val)):
        for k in range(n):
            image, label = street_scene(rng, size)
            site = ("north", "south")[k % 2]
            put(root / "images" / split / site / f"{split}_{k:03d}.jpg", image)
            if k < labeled:
                put(root / "annotations" / split / site / f"{split}_{k:03d}_labelIds.png", label)
    for k in range(n_unlabeled):
        image, _ = street_scene(rng, unlabeled_size if k % 2 else size)
        put(root / "incoming" / f"batch{k // 3}" / f"new_{k:03d}.jpg", image)
    rows = "".join(f"{source},{train}\n" for source, train in OWN_LABEL_MAP.items())
    (root / "label_map.csv").write_text("source_id,train_id\n" + rows)
    return root


def interrupted_on_call(fn, n: int = 2):
    """``fn`` that raises KeyboardInterrupt (what Ctrl-C does mid-phase) on its ``n``-th call."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return fn(*args, **kwargs)

    return wrapper
