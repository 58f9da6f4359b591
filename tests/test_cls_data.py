import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tavaal_cls.data import DataError, DataRequest, imbalanced_keep, load_dataset


def _write_torchvision_cifar10(root: Path, per_batch: int = 20) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": names}, fh)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(x) for x in np.arange(per_batch) % 10]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with (folder / name).open("wb") as fh:
            pickle.dump({"data": data, "labels": labels}, fh)


def _write_folder_tree(root: Path, split: str, classes: list[str], per_class: int, grey: str | None = None) -> None:
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode, size = ("L", (40, 30)) if c == grey and i == 0 else ("RGB", (32, 32))
            Image.new(mode, size, color=(i * 10) % 255 if mode == "L" else (i, 50, 100)).save(root / split / c / f"{i:04d}.jpg")


def test_torchvision_layout(tmp_path):
    _write_torchvision_cifar10(tmp_path)
    data = load_dataset("cifar10", DataRequest(root=tmp_path))
    assert len(data.train) == 100 and len(data.test) == 20
    assert data.train.images.shape == (100, 3, 32, 32) and data.classes[0] == "airplane"
    assert data.train.ids[0] == "data_batch_1_00000" and len(set(data.train.ids)) == 100
    assert data.train.paths[3] == "cifar-10-batches-py/data_batch_1#3"


def test_image_folder_layout_and_per_class_limit(tmp_path):
    classes = ["airplane", "bird", "cat"]
    _write_folder_tree(tmp_path, "train", classes, 6)
    _write_folder_tree(tmp_path, "test", classes, 2)
    data = load_dataset("cifar10", DataRequest(root=tmp_path, train_per_class=4))
    assert data.classes == classes and len(data.train) == 12 and len(data.test) == 6
    assert data.train.ids[:2] == ["airplane/0000", "airplane/0001"]
    assert data.train.paths[0] == "train/airplane/0000.jpg"


def test_imbalanced_split_counts_follow_the_reference(tmp_path):
    assert [imbalanced_keep(c, 100) for c in range(4)] == [50, None, 50, None]
    assert imbalanced_keep(0, 10) == 500
    _write_torchvision_cifar10(tmp_path, per_batch=200)  # 100 per class in train, 20 per class in test
    data = load_dataset("cifar10_imbalanced", DataRequest(root=tmp_path, imbalance_ratio=100))
    counts = np.bincount(data.train.labels, minlength=10)
    assert counts.tolist() == [50, 100] * 5
    assert np.bincount(data.test.labels).tolist() == [20] * 10  # test set stays balanced
    # keeps the *first* images of each even class, in file order
    assert data.train.ids[0] == "data_batch_1_00000"
    # scaled down, the ratio holds at the new scale
    small = load_dataset("cifar10_imbalanced", DataRequest(root=tmp_path, imbalance_ratio=10, train_per_class=60))
    assert np.bincount(small.train.labels, minlength=10).tolist() == [6, 60] * 5


def test_caltech_folder_with_greyscale_image_and_seeded_split(tmp_path):
    cats = tmp_path / "101_ObjectCategories"
    _write_folder_tree(cats.parent, "101_ObjectCategories", ["BACKGROUND_Google", "Faces", "accordion"], 10, grey="Faces")
    a = load_dataset("caltech101", DataRequest(root=tmp_path, resize=36, crop=32, split_seed=3))
    b = load_dataset("caltech101", DataRequest(root=tmp_path, resize=36, crop=32, split_seed=3))
    assert a.classes == ["Faces", "accordion"]  # BACKGROUND_Google dropped
    assert len(a.train) == 18 and len(a.test) == 2 and a.train.ids == b.train.ids
    assert a.train.images.shape[1:] == (3, 36, 36)  # greyscale converted to RGB and resized
    c = load_dataset("caltech101", DataRequest(root=tmp_path, resize=36, crop=32, split_seed=4))
    assert c.test.ids != a.test.ids or c.train.ids != a.train.ids


def test_missing_data_gives_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", DataRequest(root=tmp_path / "nope"))
    with pytest.raises(DataError, match=r"cifar-10-batches-py/ folder or an image-folder tree"):
        load_dataset("cifar10", DataRequest(root=tmp_path))
    with pytest.raises(DataError, match="101_ObjectCategories"):
        load_dataset("caltech101", DataRequest(root=tmp_path))


def test_corrupt_image_names_the_file(tmp_path):
    _write_folder_tree(tmp_path, "train", ["a", "b"], 2)
    _write_folder_tree(tmp_path, "test", ["a", "b"], 1)
    (tmp_path / "train" / "a" / "0001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"train/a/0001.jpg"):
        load_dataset("cifar10", DataRequest(root=tmp_path))


def test_real_cifar10_jpeg_tree(cifar10_jpg_root):
    data = load_dataset("cifar10", DataRequest(root=cifar10_jpg_root, train_per_class=5, test_per_class=3))
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert len(data.train) == 50 and len(data.test) == 30
    assert data.train.images.dtype.is_floating_point is False and data.train.images.shape[1:] == (3, 32, 32)
