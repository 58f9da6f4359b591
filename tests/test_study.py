"""Studies (tools/run_study.py, tools/plot_curves.py) on synthetic run directories: no training.

The runs' metrics are chosen so that the aggregate is known exactly: accuracy at cycle c of
strategy s and seed k is base[s] + 0.1 c + (-0.02, 0, +0.02)[k], so every cell's mean is
base[s] + 0.1 c and its sample std 0.02.
"""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tavaal_seg.studies import cli, layout, plots, runner
from tavaal_seg.studies import summary as study_summary

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE = {"random": 0.5, "entropy": 0.52, "tavaal": 0.55}
DELTA = (-0.02, 0.0, 0.02)
LABELED = (100, 200, 300)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def accuracy(strategy: str, seed: int, cycle: int) -> float:
    return BASE[strategy] + 0.1 * cycle + DELTA[seed]


def write_run(run_dir: Path, strategy: str, seed: int, cycles: int = 3, done: int = 3, entropy: bool = True,
              labeled: tuple[int, ...] = LABELED, select_after_last: bool = False) -> None:
    """A run dir as the AL tools leave it after ``done`` of ``cycles`` cycles."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        f"seed: {seed}\nactive:\n  strategy: {strategy}\n  cycles: {cycles}\n"
        f"  select_after_last: {str(select_after_last).lower()}\n", encoding="utf-8")
    header = ["cycle", "n_labeled", "accuracy"] + (["labeled_class_entropy"] if entropy else []) + \
             ["train_s", "train_img_per_s", "eval_s", "select_s"]
    rows, records = [], []
    for c in range(1, done + 1):
        selected = c < cycles or select_after_last
        row = [c, labeled[c - 1], accuracy(strategy, seed, c)] + ([1.0 + 0.1 * c + 0.01 * seed] if entropy else [])
        rows.append(row + [10.0 + seed, 50.0, 1.0, 2.0 if selected else ""])
        records.append({"cycle": c, "n_labeled": labeled[c - 1], "metrics": {"accuracy": row[2]},
                        "timings": {}, "selected": selected})
    with open(run_dir / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    (run_dir / "state.json").write_text(json.dumps({"seed": seed, "strategy": strategy, "pool_size": 1000,
                                                    "cycles": records, "selections": [], "format": 1}),
                                        encoding="utf-8")


def write_candidates(run_dir: Path, cycle: int, n: int = 200, picked: int = 20) -> None:
    gen = random.Random(cycle)
    rows = []
    for i in range(n):
        score = gen.random()
        rows.append([f"img{i:04d}", score, 2.0 - score + gen.gauss(0, 0.2), 0])
    for row in sorted(rows, key=lambda r: r[1])[:picked]:  # lowest P(labeled) first, as tavaal picks
        row[3] = 1
    (run_dir / "selections").mkdir(exist_ok=True)
    with open(run_dir / "selections" / f"cycle_{cycle:02d}.candidates.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(plots.CANDIDATE_COLUMNS)
        writer.writerows(rows)


def make_study(root: Path, strategies: tuple[str, ...] = ("random", "entropy", "tavaal"), entropy: bool = True,
               candidates: bool = True) -> Path:
    for strategy in strategies:
        for seed in range(3):
            write_run(layout.run_path(root, strategy, seed), strategy, seed, entropy=entropy)
    if candidates and "tavaal" in strategies:
        write_candidates(layout.run_path(root, "tavaal", 0), cycle=2)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- aggregate


def test_aggregate_exact_means_stds_and_markdown(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s")
    summary, markdown = study_summary.write_summary(root)
    assert summary.metric == "accuracy"
    rows = read_csv(root / "summary.csv")
    assert [(r["strategy"], r["cycle"]) for r in rows][:4] == [("random", "1"), ("random", "2"), ("random", "3"),
                                                                ("entropy", "1")]
    assert list(rows[0])[:6] == ["strategy", "cycle", "n_labeled", "n_seeds", "accuracy_mean", "accuracy_std"]
    for r in rows:
        s, c = r["strategy"], int(r["cycle"])
        assert r["n_labeled"] == str(LABELED[c - 1]) and r["n_seeds"] == "3"
        assert float(r["accuracy_mean"]) == pytest.approx(BASE[s] + 0.1 * c, abs=1e-12)
        assert float(r["accuracy_std"]) == pytest.approx(0.02, abs=1e-12)
        assert float(r["labeled_class_entropy_mean"]) == pytest.approx(1.01 + 0.1 * c, abs=1e-12)
        assert float(r["labeled_class_entropy_std"]) == pytest.approx(0.01, abs=1e-12)
        assert float(r["train_s_mean"]) == pytest.approx(11.0) and float(r["train_s_std"]) == pytest.approx(1.0)
        # no selection after the last cycle: no select_s there
        assert r["select_s_mean"] == ("" if c == 3 else "2")
    assert "accuracy in % (2 decimals)" in markdown
    assert "| strategy | 100 | 200 | 300 |" in markdown
    assert "| random | 60.00 ± 2.00 | 70.00 ± 2.00 | 80.00 ± 2.00 |" in markdown
    assert "| tavaal | 65.00 ± 2.00 | 75.00 ± 2.00 | 85.00 ± 2.00 |" in markdown
    # compute: train 11 s, eval 1 s, select 2 s per cycle; no runs.csv, so no wall time
    assert "| entropy | 3 | 11.0 | 1.0 | 2.0 | — |" in markdown
    assert (root / "summary.md").read_text(encoding="utf-8") == markdown


def test_one_seed_has_zero_std(tmp_path: Path) -> None:
    write_run(layout.run_path(tmp_path, "random", 0), "random", 0)
    summary = study_summary.aggregate(tmp_path)
    assert summary.row("random", 2).stats["accuracy"] == (pytest.approx(0.68), 0.0, 1)


def test_mismatched_n_labeled_names_the_runs(tmp_path: Path) -> None:
    root = make_study(tmp_path, candidates=False)
    write_run(layout.run_path(root, "entropy", 2), "entropy", 2, labeled=(100, 250, 300))
    with pytest.raises(layout.StudyError) as err:
        study_summary.aggregate(root)
    message = str(err.value)
    assert "entropy cycle 2" in message and "n_labeled" in message
    assert str(layout.run_path(root, "entropy", 2)) + " has 250" in message
    assert str(layout.run_path(root, "entropy", 0)) + " has 200" in message


def test_run_phase(tmp_path: Path) -> None:
    assert layout.run_phase(tmp_path / "nothing") == "fresh"
    write_run(tmp_path / "a", "random", 0)
    assert layout.run_phase(tmp_path / "a") == "finished"
    write_run(tmp_path / "b", "random", 0, done=2)
    assert layout.run_phase(tmp_path / "b") == "resume"
    # select_after_last: the last cycle must have its selection too
    write_run(tmp_path / "c", "random", 0, select_after_last=True)
    assert layout.run_phase(tmp_path / "c") == "finished"
    state = json.loads((tmp_path / "c" / "state.json").read_text())
    state["cycles"][-1]["selected"] = False
    (tmp_path / "c" / "state.json").write_text(json.dumps(state))
    assert layout.run_phase(tmp_path / "c") == "resume"


def test_command_is_what_the_al_tools_accept(tmp_path: Path) -> None:
    from tavaal_seg.core.cli import build_parser
    from tavaal_seg.segmentation.config import SegConfig

    command = runner.build_command("seg", Path("configs/camvid.yaml"), "tavaal", 2, tmp_path / "r", True,
                                  ["--data-root", "D", "--cycles", "5", "--set", "model.width=0.125"])
    assert command[:2] == [sys.executable, str(REPO_ROOT / "tools" / "al_seg.py")]
    args = build_parser("al_seg.py", "", SegConfig, Path("x.yaml")).parse_args(command[2:])
    assert (args.strategy, args.seed, args.run_dir, args.resume, args.cycles) == ("tavaal", 2, str(tmp_path / "r"),
                                                                                 True, 5)
    assert args.overrides == ["model.width=0.125"]


def test_dataset_name_follows_set_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  name: cifar10\n", encoding="utf-8")
    assert runner.dataset_name(config, []) == "cifar10"
    assert runner.dataset_name(config, ["--set", "data.name=camvid"]) == "camvid"
    assert runner.dataset_name(config, ["--set=data.name=folder"]) == "folder"


# ---------------------------------------------------------------------------- figures


def test_plot_writes_all_figures(tmp_path: Path) -> None:
    from matplotlib import image

    root = make_study(tmp_path / "s")
    (root / "study.json").write_text(json.dumps({"config": "/x/configs/cifar10_imb100.yaml", "strategies":
                                                 ["random", "entropy", "tavaal"], "seeds": [0, 1, 2]}))
    result = plots.plot_study(root, formats=("png", "svg"), echo=lambda _: None)
    names = ("curve", "improvement", "class_entropy", "loss_vs_score")
    assert result.skipped == {}
    assert sorted(p.name for p in result.written) == sorted(f"{n}.{e}" for n in names for e in ("png", "svg"))
    for name in names:
        png = root / "figures" / f"{name}.png"
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE and 1024 < len(data) < 150_000, (png, len(data))
        pixels = image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert "<svg" in (root / "figures" / f"{name}.svg").read_text(encoding="utf-8")[:2000]


def test_plot_skips_what_has_no_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_study(tmp_path / "s", strategies=("entropy", "tavaal"), entropy=False, candidates=False)
    out = tmp_path / "figs"
    assert cli.plot_main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'curve.png'}" in printed
    assert "skipped improvement: the study has no random runs" in printed
    assert "skipped class_entropy: no run's metrics.csv has a labeled_class_entropy column" in printed
    assert "skipped loss_vs_score" in printed
    assert sorted(p.name for p in out.iterdir()) == ["curve.png"]


def test_plot_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert cli.plot_main([str(tmp_path / "empty")]) == 2
    assert "has no runs with metrics" in capsys.readouterr().err
    root = make_study(tmp_path / "s", strategies=("random",), candidates=False)
    assert cli.plot_main([str(root), "--metric", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--metric 'nope'" in err and "accuracy" in err
    assert cli.plot_main([str(root), "--format", "png,xyz"]) == 2
    assert "unsupported xyz" in capsys.readouterr().err


# ---------------------------------------------------------------------------- running a study

FAKE_TOOL = textwrap.dedent('''\
    """Stands in for tools/al_cls.py: records how it was called, writes a 3-cycle run, fails on demand."""
    import argparse, csv, json, os, sys
    from pathlib import Path

    p = argparse.ArgumentParser()
    for flag in ("--config", "--strategy", "--run-dir", "--data-root"):
        p.add_argument(flag)
    p.add_argument("--seed", type=int)
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--fail", action="append", default=[])
    p.add_argument("--device")
    p.add_argument("--dry-run")
    p.add_argument("--peak", type=float, default=1000.0)  # the GPU memory its dry run reports
    p.add_argument("--sleep", type=float, default=0.0)
    a = p.parse_args()
    run = Path(a.run_dir)
    if a.dry_run:  # like the real tools: nothing in the run dir, the estimate on stdout
        run.parents[2].mkdir(parents=True, exist_ok=True)
        with open(run.parents[2] / "dry_runs.txt", "a") as f:
            f.write(f"{a.strategy} {a.seed} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\\n")
        print(json.dumps({"peak_gpu_mib": a.peak, "estimated_s": 1.0}))
        sys.exit(0)
    import time
    started = time.time()
    time.sleep(a.sleep)
    with open(run / "gpu.txt", "w") as f:
        f.write(f"{os.environ.get('CUDA_VISIBLE_DEVICES', '-')} {started} {time.time()}")
    with open(run / "calls.txt", "a") as f:
        f.write(("resume" if a.resume else "fresh") + " " + str(a.data_root) + "\\n")
    with open(run / "threads.txt", "w") as f:
        f.write(os.environ.get("OMP_NUM_THREADS", "-") + " " + os.environ.get("MKL_NUM_THREADS", "-"))
    print("fake run", a.strategy, a.seed)
    if (run / "state.json").exists() and not a.resume:
        sys.exit(2)
    failing = f"{a.strategy}:{a.seed}" in a.fail
    done = 1 if failing else a.cycles
    (run / "config.yaml").write_text(f"active:\\n  cycles: {a.cycles}\\n")
    records = [{"cycle": c, "n_labeled": 100 * c, "metrics": {}, "timings": {}, "selected": c < a.cycles}
               for c in range(1, done + 1)]
    (run / "state.json").write_text(json.dumps({"seed": a.seed, "strategy": a.strategy, "pool_size": 1000,
                                                "cycles": records, "selections": [], "format": 1}))
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cycle", "n_labeled", "accuracy", "train_s", "eval_s", "select_s"])
        for c in range(1, done + 1):
            w.writerow([c, 100 * c, 0.5 + 0.1 * c + 0.01 * a.seed, 1.0, 0.5, 0.25])
    sys.exit(1 if failing else 0)
    ''')


@pytest.fixture
def fake_study(tmp_path: Path) -> tuple[Path, list[str]]:
    tool = tmp_path / "fake_al.py"
    tool.write_text(FAKE_TOOL, encoding="utf-8")
    config = tmp_path / "exp.yaml"
    config.write_text("data:\n  name: cifar10\nactive:\n  cycles: 3\n", encoding="utf-8")
    out = tmp_path / "study"
    args = ["--config", str(config), "--strategies", "random,entropy", "--seeds", "0,1", "--out", str(out),
            "--task", "cls", "--tool", str(tool)]
    return out, args


def calls(run_dir: Path) -> list[str]:
    path = run_dir / "calls.txt"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_run_study_skips_resumes_and_reports_failures(fake_study: tuple[Path, list[str]],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out, args = fake_study
    finished, unfinished = layout.run_path(out, "random", 0), layout.run_path(out, "random", 1)
    write_run(finished, "random", 0)
    write_run(unfinished, "random", 1, done=1)
    out.joinpath("runs.csv").write_text("strategy,seed,status,exit_code,wall_s,command\n"
                                        "random,0,done,0,12.5,earlier command\n"
                                        "random,1,failed,1,3.0,earlier command\n", encoding="utf-8")
    code = cli.run_study_main([*args, "--jobs", "2", "--threads", "1", "--", "--data-root", "D",
                                 "--fail", "entropy:1"])
    captured = capsys.readouterr()
    assert code == 1
    assert layout.run_path(out, "entropy", 0).joinpath("threads.txt").read_text() == "1 1"
    assert calls(finished) == []                      # finished: not re-run
    assert calls(unfinished) == ["resume D"]          # unfinished: resumed, extra args passed on
    assert calls(layout.run_path(out, "entropy", 0)) == ["fresh D"]
    assert calls(layout.run_path(out, "entropy", 1)) == ["fresh D"]
    assert "fake run entropy 1" in layout.run_path(out, "entropy", 1).joinpath("stdout.log").read_text()
    rows = {(r["strategy"], r["seed"]): r for r in read_csv(out / "runs.csv")}
    assert rows[("random", "0")]["status"] == "skipped" and rows[("random", "0")]["wall_s"] == "12.5"
    assert rows[("random", "1")]["status"] == "done" and float(rows[("random", "1")]["wall_s"]) >= 3.0
    assert "--resume" in rows[("random", "1")]["command"]
    assert rows[("entropy", "0")]["status"] == "done"
    assert (rows[("entropy", "1")]["status"], rows[("entropy", "1")]["exit_code"]) == ("failed", "1")
    assert "entropy seed 1: failed (exit 1)" in captured.err
    # the failed run's one cycle is aggregated with the rest
    summary = {(r["strategy"], r["cycle"]): r for r in read_csv(out / "summary.csv")}
    assert summary[("entropy", "1")]["n_seeds"] == "2" and summary[("entropy", "2")]["n_seeds"] == "1"
    assert summary[("random", "3")]["n_seeds"] == "2"
    assert "| random |" in captured.out
    # wall per finished run: random's are 12.5 (kept) and 3.0 + this attempt; entropy's failed run is left out
    compute = {line.split("|")[1].strip(): line for line in (out / "summary.md").read_text().splitlines()
               if line.startswith("| ") and line.count("|") == 7}
    assert compute["entropy"].split("|")[-2].strip() == rows[("entropy", "0")]["wall_s"]
    recorded = json.loads((out / "study.json").read_text())
    assert recorded["strategies"] == ["random", "entropy"] and recorded["task"] == "cls"
    assert recorded["extra_args"] == ["--data-root", "D", "--fail", "entropy:1"]
    assert recorded["metric"] == "accuracy"

    # the same study again: only the failed run is touched (resumed), and it now finishes
    assert cli.run_study_main([*args, "--", "--data-root", "D", "--fail", "entropy:1"]) == 1
    assert calls(layout.run_path(out, "entropy", 1)) == ["fresh D", "resume D"]
    assert calls(layout.run_path(out, "entropy", 0)) == ["fresh D"]
    capsys.readouterr()

    # another study in the same directory is refused with the differences, unless --force
    args_other = [*args, "--", "--data-root", "E"]
    assert cli.run_study_main(args_other) == 2
    err = capsys.readouterr().err
    assert "extra_args" in err and "'E'" in err and "--force" in err
    assert cli.run_study_main([*args, "--force", "--", "--data-root", "E"]) == 0
    assert calls(layout.run_path(out, "entropy", 1))[-1] == "resume E"

    # more cycles (a key the AL tools let a resumed run change): every finished run is resumed
    assert cli.run_study_main([*args, "--force", "--", "--data-root", "E", "--cycles", "4"]) == 0
    for strategy in ("random", "entropy"):
        for seed in (0, 1):
            assert calls(layout.run_path(out, strategy, seed))[-1] == "resume E"
    assert {r["n_labeled"] for r in read_csv(out / "summary.csv")} == {"100", "200", "300", "400"}
    # running one seed again keeps the others in the study
    assert cli.run_study_main([*args[:5], "1", *args[6:], "--", "--data-root", "E", "--cycles", "4"]) == 0
    assert json.loads((out / "study.json").read_text())["seeds"] == [0, 1]
    assert {r["n_seeds"] for r in read_csv(out / "summary.csv")} == {"2"}
    walls = {(r["strategy"], r["seed"]): r["wall_s"] for r in read_csv(out / "runs.csv")}
    assert set(walls) == {(s, k) for s in ("random", "entropy") for k in ("0", "1")}  # seed 0's rows are kept
    # a new seed: the runs.csv rows of the seeds it does not touch stay, wall times included
    assert cli.run_study_main([*args[:5], "2", *args[6:], "--", "--data-root", "E", "--cycles", "4"]) == 0
    after = {(r["strategy"], r["seed"]): r["wall_s"] for r in read_csv(out / "runs.csv")}
    assert {k: after[k] for k in walls} == walls and {("random", "2"), ("entropy", "2")} < set(after)
    assert json.loads((out / "study.json").read_text())["seeds"] == [0, 1, 2]

    assert cli.run_study_main(["--out", str(out), "--aggregate-only"]) == 0


def test_run_study_bad_arguments(fake_study: tuple[Path, list[str]], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out, args = fake_study
    bad_strategy = [a if a != "random,entropy" else "random,bald" for a in args]
    assert cli.run_study_main(bad_strategy) == 2
    assert "unknown bald" in capsys.readouterr().err
    missing = [a if not a.endswith("exp.yaml") else str(tmp_path / "nope.yaml") for a in args]
    assert cli.run_study_main(missing) == 2
    assert "nope.yaml not found" in capsys.readouterr().err
    assert cli.run_study_main([*args, "--", "--seed", "3"]) == 2
    assert "may not contain --seed" in capsys.readouterr().err
    assert cli.run_study_main(["--out", str(tmp_path / "none"), "--aggregate-only"]) == 2
    assert not (out / "runs").exists()


def test_plot_without_matplotlib_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = make_study(tmp_path / "s", strategies=("random",), candidates=False)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what a missing package looks like to import
    assert cli.plot_main([str(root)]) == 2
    assert "pip install 'tavaal-seg[plot]'" in capsys.readouterr().err


def test_requested_active_reads_config_flags_and_sets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("active:\n  cycles: 5\n", encoding="utf-8")
    assert runner.requested_active(config, []) == (5, None)
    assert runner.requested_active(config, ["--cycles", "7"]) == (7, None)
    # --set wins over the flag, as in the AL tools
    assert runner.requested_active(config, ["--set", "active.cycles=8", "--cycles=7",
                                           "--set=active.select_after_last=true"]) == (8, True)
    with pytest.raises(layout.StudyError, match="--cycles: invalid int value: 'x'"):  # the AL tools' own parser
        runner.requested_active(config, ["--cycles", "x"])
    with pytest.raises(layout.StudyError, match="active.cycles must be a positive integer"):
        runner.requested_active(config, ["--set", "active.cycles=0"])


def test_tools_help() -> None:
    procs = [subprocess.Popen([sys.executable, str(REPO_ROOT / "tools" / tool), "--help"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tool in ("run_study.py", "plot_curves.py")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "--aggregate-only" in outs[0][0] and "loss_vs_score" in outs[1][0]


# ---------------------------------------------------------------------------- runs packed on GPUs

FAKE_SMI = """#!/bin/sh
echo "0, GPU-aaaa-0000, Fake GPU, 16000, 1000"
echo "1, GPU-bbbb-1111, Fake GPU, 16000, 0"
"""


@pytest.fixture
def two_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose nvidia-smi lists two 16,000 MiB GPUs, 1,000 MiB of the first in use."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI, encoding="utf-8")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _grid_args(args: list[str], strategies: str, seeds: str) -> list[str]:
    out = list(args)
    out[out.index("--strategies") + 1], out[out.index("--seeds") + 1] = strategies, seeds
    return out


def _gpu_of_runs(out: Path) -> dict[tuple[str, int], tuple[str, float, float]]:
    found = {}
    for path in (out / "runs").glob("*/seed*/gpu.txt"):
        gpu, start, end = path.read_text().split()
        found[(path.parents[1].name, int(path.parent.name[4:]))] = (gpu, float(start), float(end))
    return found


def test_jobs_on_cuda_spread_runs_over_the_gpus_after_measuring_one(fake_study, two_gpus, capsys) -> None:
    out, args = fake_study
    argv = _grid_args(args, "random,tavaal", "0,1")
    assert cli.run_study_main([*argv, "--jobs", "4", "--", "--device", "cuda", "--peak", "2000", "--sleep", "1"]) == 0
    printed = capsys.readouterr().out
    # one warm-up, of the run that needs the most (tavaal trains the VAE and the ranker), on the first GPU
    assert (out / "dry_runs.txt").read_text().splitlines() == ["tavaal 0 GPU-aaaa-0000"]
    assert "4 runs at a time on GPU 0 (Fake GPU), GPU 1 (Fake GPU): 3,324 MiB each" in printed
    runs = _gpu_of_runs(out)
    assert len(runs) == 4
    per_gpu = {}
    for gpu, _, _ in runs.values():
        per_gpu[gpu] = per_gpu.get(gpu, 0) + 1
    assert per_gpu == {"GPU-aaaa-0000": 2, "GPU-bbbb-1111": 2}  # least-loaded: two each
    spans = [(start, end) for _, start, end in runs.values()]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four ran at once
    assert "on GPU 1 (Fake GPU)" in printed


def test_jobs_that_the_gpu_memory_cannot_hold_are_refused_with_the_numbers(fake_study, two_gpus, capsys) -> None:
    out, args = fake_study
    argv = _grid_args(args, "random,tavaal", "0,1,2,3")
    code = cli.run_study_main([*argv, "--jobs", "8", "--gpus", "0", "--", "--device", "cuda", "--peak", "2000"])
    err = capsys.readouterr().err
    assert code == 2
    assert ("--jobs 8 on 1 GPU: GPU 0 (Fake GPU) would hold 8 runs of 3,324 MiB each (measured: a --dry-run "
            "warm-up peaked at 2,000 MiB") in err
    assert "= 26,592 MiB, but it has 15,000 MiB free of 16,000 MiB; use --jobs 4 or fewer" in err
    assert not list((out / "runs").glob("*/seed*/gpu.txt"))  # nothing started


def test_gpu_memory_per_run_skips_the_warm_up_and_gpus_picks_the_gpus(fake_study, two_gpus, capsys) -> None:
    out, args = fake_study
    argv = _grid_args(args, "random", "0,1,2")
    assert cli.run_study_main([*argv, "--jobs", "3", "--gpus", "GPU-bbbb", "--gpu-memory-per-run", "5000",
                               "--", "--device", "cuda"]) == 0
    assert not (out / "dry_runs.txt").exists()
    assert {gpu for gpu, _, _ in _gpu_of_runs(out).values()} == {"GPU-bbbb-1111"}
    assert "3 runs at a time on GPU 1 (Fake GPU): 5,000 MiB each (--gpu-memory-per-run)" in capsys.readouterr().out
    other = [*argv[:argv.index("--out") + 1], str(out) + "_other", *argv[argv.index("--out") + 2:]]
    assert cli.run_study_main([*other, "--jobs", "3", "--gpus", "7", "--", "--device", "cuda"]) == 2
    assert "--gpus: no GPU '7'; nvidia-smi lists 0 (GPU-aaaa-0000), 1 (GPU-bbbb-1111)" in capsys.readouterr().err


def test_cuda_runs_without_nvidia_smi_are_refused_and_cpu_runs_are_left_alone(fake_study, tmp_path, monkeypatch,
                                                                             capsys) -> None:
    out, args = fake_study
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    assert cli.run_study_main([*args, "--jobs", "2", "--", "--device", "cuda"]) == 2
    assert "cannot list the GPUs with nvidia-smi" in capsys.readouterr().err
    assert cli.run_study_main([*args, "--jobs", "2", "--", "--device", "cpu"]) == 0
    assert {gpu for gpu, _, _ in _gpu_of_runs(out).values()} == {"-"}
