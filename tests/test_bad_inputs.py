"""Every row of docs/bad_inputs.md that no other test covers end to end: what a user of
tools/al_seg.py / tools/al_cls.py sees for each bad input (exit code 2 and a message naming the
file, key or id), and that the run directory holds nothing half-written afterwards."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tavaal_cls.cli import main as cls_main
from tavaal_seg.core.cli import EXIT_BAD_INPUT, EXIT_OK
from tavaal_seg.segmentation.cli import main as seg_main

REPO = Path(__file__).resolve().parents[1]


def _folder_dataset(root: Path, n_train: int = 12, n_val: int = 3) -> Path:
    """root/{train,val}/{images,masks}/NNN.png: 32x48 RGB images, masks with classes 0..2."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for k in range(n):
            for sub, arr in (("images", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)),
                             ("masks", rng.integers(0, 3, (32, 48), dtype=np.uint8))):
                path = root / split / sub / f"{k:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)
    return root


def _seg_args(root: Path, run: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "demo.yaml"), "--data-root", str(root), "--run-dir", str(run),
            "--set", "data.name=folder", "--set", "data.classes=[road, car, sky]", "--set", "data.synthetic_train=null",
            "--set", "data.crop=[32, 32]", "--set", "data.eval_size=null", "--strategy", "tavaal", "--cycles", "2",
            "--initial", "4", "--budget", "2", "--subset", "8", "--epochs", "1", "--device", "cpu",
            "--set", "vae.iterations=1", "--set", "vae.size=[32, 32]", "--set", "logging.tensorboard=false", *extra]


def _corrupt(root: Path) -> str:
    (root / "train/images/005.png").write_bytes(b"not a png at all")
    return "train/images/005.png"


def _truncated(root: Path) -> str:
    path = root / "train/images/006.png"
    path.write_bytes(path.read_bytes()[:200])
    return "train/images/006.png"


def _mask_wrong_size(root: Path) -> str:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "train/masks/003.png")
    return "train/masks/003.png"


def _mask_unknown_value(root: Path) -> str:
    Image.fromarray(np.full((32, 48), 7, np.uint8)).save(root / "train/masks/004.png")
    return "train/masks/004.png"


def _empty_dataset(root: Path) -> str:
    shutil.rmtree(root / "train")
    (root / "train" / "images").mkdir(parents=True)
    return "no images found"


def _duplicate_ids(root: Path) -> str:
    Image.open(root / "train/images/002.png").convert("RGB").save(root / "train/images/002.jpg")
    return "duplicate image id '002'"


@pytest.mark.parametrize("damage", [_corrupt, _truncated, _mask_wrong_size, _mask_unknown_value, _empty_dataset,
                                    _duplicate_ids])
def test_segmentation_bad_data_is_named(tmp_path, capsys, damage):
    root = _folder_dataset(tmp_path / "data")
    expected = damage(root)
    # every training image is labeled, so any damaged file is met in the first cycle
    argv = _seg_args(root, tmp_path / "run", "--initial", "12", "--cycles", "1")
    assert seg_main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "error:" in err and expected in err, err[-1500:]
    run = tmp_path / "run"
    assert not list(run.rglob("*.tmp")) if run.exists() else True
    if (run / "state.json").exists():  # what was recorded is consistent and resumable
        json.loads((run / "state.json").read_text())


def test_budget_larger_than_the_pool_is_refused_before_anything_is_written(tmp_path, capsys):
    root = _folder_dataset(tmp_path / "data")
    assert seg_main(_seg_args(root, tmp_path / "run", "--budget", "50")) == EXIT_BAD_INPUT
    assert "the training pool has only 12" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_dir_of_another_config_is_refused_with_the_diff(tmp_path, capsys):
    root = _folder_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert seg_main(_seg_args(root, run, "--cycles", "1")) == EXIT_OK
    before = (run / "state.json").read_text()
    assert seg_main(_seg_args(root, run, "--cycles", "1", "--resume", "--strategy", "entropy")) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "active.strategy: 'tavaal' -> 'entropy'" in err and "--force" in err
    assert (run / "state.json").read_text() == before


def test_empty_classification_folder_is_named(tmp_path, capsys):
    for split in ("train", "test"):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
    argv = ["--config", str(REPO / "configs" / "cifar10.yaml"), "--data-root", str(tmp_path / "data"),
            "--run-dir", str(tmp_path / "run"), "--set", "data.name=image_folder", "--device", "cpu"]
    assert cls_main(argv) == EXIT_BAD_INPUT
    assert f"no images found under {tmp_path / 'data'}" in capsys.readouterr().err


def test_export_format_and_uri_prefix_are_checked_with_the_config(tmp_path, capsys):
    root = _folder_dataset(tmp_path / "data")
    assert seg_main(_seg_args(root, tmp_path / "run", "--set", "export.formats=[csv, labelbox]")) == EXIT_BAD_INPUT
    assert "uri_prefix" in capsys.readouterr().err
    assert seg_main(_seg_args(root, tmp_path / "run", "--set", "export.formats=[coco]")) == EXIT_BAD_INPUT
    assert "export.formats" in capsys.readouterr().err and not (tmp_path / "run").exists()
