"""tools/al_seg.py end to end, in process: the demo (synthetic streets), a low-resolution real
CamVid subset, and a Cityscapes-layout tree through configs/cityscapes.yaml."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import interrupted_on_call
from tavaal_seg.segmentation.cli import main
from tavaal_seg.segmentation.data import write_street_scenes

REPO = Path(__file__).resolve().parents[1]
TINY_VAE = ["--set", "vae.iterations=3", "--set", "vae.batch_size=8", "--set", "vae.z_dim=8",
            "--set", "vae.width=0.0625", "--set", "ranker.hidden=16"]


def _check_run(run: Path, n_cycles: int, n_labeled: list[int], budget: int, data_root: Path, strategy: str) -> list:
    for name in ["config.yaml", "state.json", "metrics.csv", "run.log", "selections/cycle_00.csv",
                 "selections/cycle_01.csv"]:
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["cycle"]) for r in rows] == list(range(1, n_cycles + 1))
    assert [int(r["n_labeled"]) for r in rows] == n_labeled
    assert all(0.0 <= float(r["mIoU"]) <= 1.0 for r in rows) and "pixel_acc" in rows[0]
    sel = list(csv.DictReader((run / "selections/cycle_01.csv").open()))
    assert len(sel) == budget and {r["strategy"] for r in sel} == {strategy}
    assert all((data_root / r["path"]).is_file() for r in sel)
    state = json.loads((run / "state.json").read_text())
    assert len(state["labeled"]) == n_labeled[-1] and len(set(state["labeled"])) == n_labeled[-1]
    return rows


@pytest.mark.parametrize("strategy", ["random", "tavaal"])
def test_demo_config_generates_its_data_and_runs_two_cycles(tmp_path, strategy):
    data, run = tmp_path / "streets", tmp_path / "run"
    argv = ["--config", str(REPO / "configs" / "demo.yaml"), "--data-root", str(data), "--run-dir", str(run),
            "--strategy", strategy, "--cycles", "2", "--initial", "6", "--budget", "4", "--subset", "10",
            "--epochs", "1", "--device", "cpu", "--set", "data.synthetic_train=16", "--set", "data.synthetic_val=4",
            *TINY_VAE]
    assert main(argv) == 0
    assert (data / "leftImg8bit" / "train").is_dir()  # the synthetic set was written
    _check_run(run, 2, [6, 10], 4, data, strategy)


def test_camvid_low_resolution_subset_tavaal(camvid_root, tmp_path):
    run = tmp_path / "run"
    argv = ["--config", str(REPO / "configs" / "camvid.yaml"), "--data-root", str(camvid_root), "--run-dir", str(run),
            "--strategy", "tavaal", "--cycles", "2", "--initial", "10", "--budget", "6", "--subset", "20",
            "--epochs", "1", "--device", "cpu",
            "--set", "data.limit_train=40", "--set", "data.limit_test=6", "--set", "data.crop=[64, 96]",
            "--set", "data.eval_size=[96, 128]", "--set", "data.num_workers=0", "--set", "model.encoder=resnet18",
            "--set", "model.decoder_channels=32", "--set", "train.batch_size=5", "--set", "eval.batch_size=6",
            "--set", "vae.size=[32, 32]", *TINY_VAE]
    assert main(argv) == 0
    rows = _check_run(run, 2, [10, 16], 6, camvid_root, "tavaal")
    assert "IoU/Road" in rows[0] and "IoU/Bicyclist" in rows[0]


def test_cityscapes_config_on_a_multi_city_labelids_tree(tmp_path):
    root = write_street_scenes(tmp_path / "cs", 12, 3, (64, 128), cities=("aachen", "bochum", "cologne", "jena"))
    assert not list(root.rglob("*_color.png")) and not list(root.rglob("*_instanceIds.png"))
    run = tmp_path / "run"
    argv = ["--config", str(REPO / "configs" / "cityscapes.yaml"), "--data-root", str(root), "--run-dir", str(run),
            "--cycles", "2", "--initial", "6", "--budget", "3", "--subset", "6", "--epochs", "1", "--device", "cpu",
            "--set", "data.crop=[64, 96]", "--set", "data.num_workers=0", "--set", "model.decoder_channels=32",
            "--set", "train.batch_size=3", "--set", "vae.size=[32, 64]", *TINY_VAE]
    assert main(argv) == 0
    rows = _check_run(run, 2, [6, 9], 3, root, "tavaal")
    assert "IoU/road" in rows[0] and "IoU/motorcycle" in rows[0]
    sel = {r["image_id"] for r in csv.DictReader((run / "selections/cycle_01.csv").open())}
    assert {s.split("_")[0] for s in sel} <= {"aachen", "bochum", "cologne", "jena"}


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["--config", str(REPO / "configs" / "cityscapes.yaml"), "--run-dir", str(run), "--device", "cpu"]
    assert main([*base, "--data-root", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--data-root", str(tmp_path), "--set", "model.name=unet"]) == 2
    assert "model.name: expected one of" in capsys.readouterr().err
    assert not run.exists()


def test_help_runs():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "al_seg.py"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "data.eval_size" in out and "model.output_stride" in out and "default: demo" in out


def test_segmentation_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch):
    """Killed during the VAE phase of cycle 2, resumed: same selections as a straight run
    (the DataLoader/albumentations stream must be reproducible, not only the core's RNG)."""
    from tavaal_seg.core import strategies as strategies_module

    data = tmp_path / "streets"

    def argv(run: Path, *extra: str) -> list[str]:
        return ["--config", str(REPO / "configs" / "demo.yaml"), "--data-root", str(data), "--run-dir", str(run),
                "--strategy", "tavaal", "--cycles", "3", "--initial", "6", "--budget", "4", "--subset", "10",
                "--epochs", "1", "--device", "cpu", "--set", "data.synthetic_train=20", "--set", "data.synthetic_val=4",
                *TINY_VAE, *extra]

    assert main(argv(tmp_path / "straight")) == 0
    real = strategies_module.train_vae
    monkeypatch.setattr(strategies_module, "train_vae", interrupted_on_call(real))
    assert main(argv(tmp_path / "resumed")) == 130
    monkeypatch.setattr(strategies_module, "train_vae", real)
    assert main(argv(tmp_path / "resumed", "--resume")) == 0
    straight = json.loads((tmp_path / "straight" / "state.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert resumed["selections"] == straight["selections"] and resumed["labeled"] == straight["labeled"]
    assert [c["metrics"] for c in resumed["cycles"]] == [c["metrics"] for c in straight["cycles"]]
