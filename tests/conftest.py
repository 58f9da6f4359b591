"""Shared fixtures: where the real data lives, and how tests that need it behave.

The real data (CIFAR-10 JPEGs, CamVid, one Cityscapes frame) is found through the
``TAVAAL_SHARED_DATA`` environment variable, falling back to ``../shared/data`` beside the
repository. Locally a missing folder skips those tests; under CI (``CI`` set) it fails them,
because a CI run that silently skipped the real-data tests would prove nothing.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _missing(what: str) -> None:
    message = (
        f"real data not found: {what}. Set TAVAAL_SHARED_DATA to the folder holding "
        "cifar10-jpg.tar.gz, camvid/ and cityscapes_sample/ (default: ../shared/data)."
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("TAVAAL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not root.is_dir():
        _missing(str(root))
    return root


@pytest.fixture(scope="session")
def camvid_root(shared_data: Path) -> Path:
    root = shared_data / "camvid"
    if not (root / "train.txt").is_file():
        _missing(str(root / "train.txt"))
    return root


@pytest.fixture(scope="session")
def cityscapes_sample_root(shared_data: Path) -> Path:
    root = shared_data / "cityscapes_sample"
    if not (root / "leftImg8bit").is_dir():
        _missing(str(root / "leftImg8bit"))
    return root


@pytest.fixture(scope="session")
def cifar10_jpg_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CIFAR-10 JPEG tree, extracted once per test session into a temp dir."""
    archive = shared_data / "cifar10-jpg.tar.gz"
    if not archive.is_file():
        _missing(str(archive))
    cache = Path(os.environ.get("TAVAAL_TEST_CACHE", "")) if os.environ.get("TAVAAL_TEST_CACHE") else None
    target = (cache or tmp_path_factory.mktemp("cifar10")) / "cifar10-jpg"
    if not (target / "train").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    # the archive may hold a top-level folder; find the one with train/ and test/
    for candidate in [target, *target.iterdir()]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    pytest.fail(f"{archive} did not contain train/ and test/ folders")
