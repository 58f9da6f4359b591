"""--dry-run on both tools: the plan's counts per cycle, a time estimate from a warm-up, and
nothing written to the run directory (absent, or unchanged with --resume)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO, tiny_run_args, write_image_folder
from tavaal_cls.cli import main as cls_main
from tavaal_seg.segmentation.cli import main as seg_main


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("folder"))


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_dry_run_counts_every_cycle_and_writes_nothing(folder_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert cls_main(tiny_run_args(folder_root, run, "--dry-run", "json")) == 0
    assert not run.exists()
    plan = json.loads(capsys.readouterr().out)
    cycles = plan["cycles"]
    # 64 pool images; 12 initial + 8 per cycle; batches of 8 (the last partial); 2 epochs; the ranker
    # detached after epoch 1 of 2, so every batch shape trains in two variants
    assert [c["labeled"] for c in cycles] == [12, 20, 28]
    assert [c["train_steps"] for c in cycles] == [2 * 2, 3 * 2, 4 * 2]
    assert [c["train_images"] for c in cycles] == [24, 40, 56]
    assert [c["step_shapes"] for c in cycles] == [4, 4, 4]
    assert [c["candidates"] for c in cycles] == [30, 30, 0]          # no selection after the last cycle
    assert [c["model_scored"] for c in cycles] == [42, 50, 0]        # tavaal: r over labeled + candidates
    assert [c["vae_iterations"] for c in cycles] == [4, 4, 0]
    assert [c["vae_scored"] for c in cycles] == [30, 30, 0]
    assert [c["evaluated"] for c in cycles] == [16, 16, 16]
    assert plan["total"] == {"train_steps": 18, "train_images": 120, "vae_iterations": 8, "model_scored": 92,
                             "vae_scored": 60, "evaluated": 48}
    rates = plan["rates"]
    assert rates["device"] == "cpu" and rates["train_mode"] == "off" and rates["vae_mode"] == "off"
    assert rates["train_step_s"] > 0 and rates["infer_image_s"] > 0 and rates["vae_iteration_s"] > 0
    assert plan["estimated_s"] == pytest.approx(sum(plan["seconds"].values())) and plan["estimated_s"] > 0
    assert plan["peak_gpu_mib"] is None

    assert cls_main(tiny_run_args(folder_root, run, "--strategy", "random", "--dry-run")) == 0
    table = capsys.readouterr().out
    assert "al_cls.py --dry-run: " in table and "strategy random" in table and "estimated wall time:" in table
    assert any(line.startswith("total ") for line in table.splitlines()) and f"{run} was not created" in table
    assert not run.exists()


def test_dry_run_counts_the_ranker_a_baseline_trains_under_train_with_all_strategies(folder_root, tmp_path, capsys):
    """ranker.train_with_all_strategies makes random train the ranking head too (detached after
    epoch 1 of 2): twice the step shapes, as the cycle would warm up and capture them."""
    shapes = {}
    for flag in ("false", "true"):
        args = tiny_run_args(folder_root, tmp_path / "run", "--strategy", "random", "--dry-run", "json",
                             "--set", f"ranker.train_with_all_strategies={flag}")
        assert cls_main(args) == 0
        shapes[flag] = [c["step_shapes"] for c in json.loads(capsys.readouterr().out)["cycles"]]
    assert shapes == {"false": [2, 2, 2], "true": [4, 4, 4]}


def test_dry_run_counts_the_true_loss_pass_that_diagnostics_make(folder_root, tmp_path, capsys):
    """logging.diagnostics (oracle mode) scores every candidate's true loss once more, as
    logging.candidate_scores does: 30 candidates after cycles 1 and 2, none after the last."""
    scored = {}
    for flag in ("false", "true"):
        args = tiny_run_args(folder_root, tmp_path / "run", "--dry-run", "json", "--set", f"logging.diagnostics={flag}")
        assert cls_main(args) == 0
        scored[flag] = [c["model_scored"] for c in json.loads(capsys.readouterr().out)["cycles"]]
    assert scored == {"false": [42, 50, 0], "true": [72, 80, 0]}


def test_dry_run_with_resume_counts_what_is_left_and_leaves_the_run_dir_alone(folder_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert cls_main(tiny_run_args(folder_root, run, "--cycles", "2", "--set", "logging.tensorboard=false")) == 0
    before = _snapshot(run)
    capsys.readouterr()
    # three cycles now: cycle 1 is complete; cycle 2 was the last and now needs its selection
    assert cls_main(tiny_run_args(folder_root, run, "--cycles", "3", "--resume", "--dry-run", "json")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [c["done"] for c in plan["cycles"]] == [True, False, False]
    assert plan["total"]["train_steps"] == 6 + 8 and plan["total"]["vae_iterations"] == 4
    assert _snapshot(run) == before
    # without --resume the estimate covers the whole run, and says the real command needs --resume
    assert cls_main(tiny_run_args(folder_root, run, "--cycles", "3", "--dry-run")) == 0
    assert "already holds a run: the real command needs --resume" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_dry_run_refuses_what_the_run_would_refuse(folder_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert cls_main(tiny_run_args(folder_root, run, "--budget", "40", "--dry-run")) == 2
    assert "the training pool has only 64" in capsys.readouterr().err
    assert not run.exists()
    capped = ["--set", "active.group_by=regex", "--set", r"active.group_pattern=^(class\d)/",
              "--set", "active.max_per_group=1"]  # 4 classes x 1 cannot give a selection of 8
    assert cls_main(tiny_run_args(folder_root, run, *capped, "--dry-run")) == 2
    assert "4 groups x 1 per group cannot give active.budget 8 picks" in capsys.readouterr().err
    assert not run.exists()


def test_segmentation_dry_run(tmp_path, capsys):
    data, run = tmp_path / "streets", tmp_path / "run"
    argv = ["--config", str(REPO / "configs" / "demo.yaml"), "--data-root", str(data), "--run-dir", str(run),
            "--strategy", "tavaal", "--cycles", "2", "--initial", "6", "--budget", "4", "--subset", "10",
            "--epochs", "1", "--device", "cpu", "--set", "data.synthetic_train=16", "--set", "data.synthetic_val=4",
            "--set", "vae.iterations=3", "--set", "vae.batch_size=8", "--set", "vae.z_dim=8",
            "--set", "vae.width=0.0625", "--set", "ranker.hidden=16", "--dry-run", "json"]
    assert seg_main(argv) == 0
    assert not run.exists()
    plan = json.loads(capsys.readouterr().out)
    assert [c["labeled"] for c in plan["cycles"]] == [6, 10]
    assert [c["evaluated"] for c in plan["cycles"]] == [4, 4]
    assert plan["cycles"][0]["vae_iterations"] == 3 and plan["rates"]["train_step_s"] > 0
