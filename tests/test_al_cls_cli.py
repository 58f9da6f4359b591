"""tools/al_cls.py end to end on a few hundred real CIFAR-10 images, resume, bad input."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import interrupted_on_call
from tavaal_cls.cli import main
from tavaal_seg.core import loop as loop_module
from tavaal_seg.core import strategies as strategies_module

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.width=0.0625", "--set", "vae.width=0.03125", "--set", "vae.iterations=2",
        "--set", "vae.batch_size=32", "--set", "vae.z_dim=8", "--set", "train.batch_size=32",
        "--set", "data.train_per_class=30", "--set", "data.test_per_class=10", "--set", "eval.batch_size=100"]


def _args(root, run_dir, strategy="tavaal", *extra):
    return ["--config", str(REPO / "configs" / "cifar10.yaml"), "--data-root", str(root), "--run-dir", str(run_dir),
            "--strategy", strategy, "--cycles", "2", "--initial", "100", "--budget", "50", "--subset", "150",
            "--epochs", "1", "--device", "cpu", *TINY, *extra]


@pytest.mark.parametrize("strategy", ["random", "entropy", "coreset", "lloss",
                                      pytest.param("vaal", marks=pytest.mark.slow),
                                      pytest.param("tavaal", marks=pytest.mark.slow)])
def test_two_cycles_on_real_cifar10_write_every_output(cifar10_jpg_root, tmp_path, strategy):
    run = tmp_path / "run"
    assert main(_args(cifar10_jpg_root, run, strategy)) == 0
    for name in ["config.yaml", "state.json", "metrics.csv", "run.log", "selections/cycle_00.csv", "selections/cycle_01.csv"]:
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["cycle"] for r in rows] == ["1", "2"] and [r["n_labeled"] for r in rows] == ["100", "150"]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows) and float(rows[0]["train_s"]) > 0
    sel = list(csv.DictReader((run / "selections/cycle_01.csv").open()))
    assert list(sel[0]) == ["rank", "image_id", "path", "score", "cycle", "strategy"]
    assert len(sel) == 50 and {r["strategy"] for r in sel} == {strategy} and sel[0]["rank"] == "1"
    assert all((cifar10_jpg_root / r["path"]).is_file() for r in sel)  # paths relative to the data root
    state = json.loads((run / "state.json").read_text())
    assert len(state["labeled"]) == 150 and len(set(state["labeled"])) == 150
    initial = {r["image_id"] for r in csv.DictReader((run / "selections/cycle_00.csv").open())}
    assert len(initial) == 100 and not initial & {r["image_id"] for r in sel}


def _selections(run: Path) -> dict:
    state = json.loads((run / "state.json").read_text())
    return {"labeled": state["labeled"], "selections": state["selections"]}


@pytest.mark.parametrize("where", ["vae", pytest.param("train", marks=pytest.mark.slow)])
def test_resume_after_interruption_equals_uninterrupted_run(cifar10_jpg_root, tmp_path, monkeypatch, where):
    extra = ["--cycles", "3"]
    straight = tmp_path / "straight"
    assert main(_args(cifar10_jpg_root, straight, "tavaal", *extra)) == 0

    interrupted = tmp_path / "interrupted"
    target, attr = (strategies_module, "train_vae") if where == "vae" else (loop_module, "train_task_model")
    real = getattr(target, attr)
    monkeypatch.setattr(target, attr, interrupted_on_call(real))
    assert main(_args(cifar10_jpg_root, interrupted, "tavaal", *extra)) == 130
    monkeypatch.setattr(target, attr, real)
    assert main(_args(cifar10_jpg_root, interrupted, "tavaal", *extra)) == 2  # no --resume: refused
    assert main(_args(cifar10_jpg_root, interrupted, "tavaal", *extra, "--resume")) == 0
    assert _selections(interrupted) == _selections(straight)
    assert (interrupted / "selections/cycle_02.csv").read_text() == (straight / "selections/cycle_02.csv").read_text()


def test_resume_with_another_config_is_refused_with_a_diff(cifar10_jpg_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(cifar10_jpg_root, run, "random")) == 0
    assert main(_args(cifar10_jpg_root, run, "random", "--resume", "--set", "train.lr=0.5")) == 2
    assert "train.lr: 0.1 -> 0.5" in capsys.readouterr().err


def test_bad_inputs_are_clear_errors_and_write_nothing(cifar10_jpg_root, tmp_path, capsys):
    run = tmp_path / "run"
    cases = [
        (_args(tmp_path / "missing", run), "does not exist"),
        (_args(cifar10_jpg_root, run, "tavaal", "--set", "train.lrr=1"), "unknown config key 'train.lrr'"),
        (_args(cifar10_jpg_root, run, "bald"), "active.strategy: expected one of"),
        (_args(cifar10_jpg_root, run, "random", "--budget", "500"), "the training pool has only 300"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
        assert not run.exists()


def test_help_documents_flags_and_config_keys():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "al_cls.py"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ["--config", "--data-root", "--run-dir", "--resume", "--strategy", "--cycles", "--initial", "--budget",
                 "--subset", "--epochs", "--device", "--seed", "--set"]:
        assert flag in out
    assert "vae.rank_transform" in out and "ranker.detach_fraction" in out
