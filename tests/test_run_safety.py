"""Crash safety and concurrency: SIGKILL at several points then --resume equals an
uninterrupted run; one process per run directory; stale locks are taken over."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, run_outcome, tiny_run_args, write_image_folder
from tavaal_cls.cli import main
from tavaal_seg.core.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUN_DIR_BUSY


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("folder"))


def _args(root: Path, run: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, run, "--set", "logging.tensorboard=false", *extra)


@pytest.fixture(scope="module")
def straight(folder_root, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(_args(folder_root, run)) == EXIT_OK
    return run_outcome(run)


@pytest.mark.parametrize("point,n", [
    ("train", 5),          # cycle 2's first epoch (cycle 1: 12 images = 2 batches x 2 epochs)
    ("vae", 3),            # cycle 1's VAE, mid-training
    ("export", 2),         # cycle 1's selection computed, before it is exported and recorded
    ("state_write", 4),    # the state's temp file written, the rename not yet done
])
def test_sigkill_then_resume_equals_an_uninterrupted_run(folder_root, straight, tmp_path, point, n):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "kill_driver.py"), point, str(n), "--",
                             *_args(folder_root, run)], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert main(_args(folder_root, run, "--resume")) == EXIT_OK
    assert run_outcome(run) == straight
    assert not list(run.rglob("*.tmp"))  # the killed write's temp file was swept


def test_a_second_process_is_refused_and_a_dead_ones_lock_is_taken_over(folder_root, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from tavaal_seg.core.lock import RunDirLock; lock = RunDirLock(sys.argv[2]); lock.acquire();"
         "print('held', flush=True); time.sleep(120)", str(REPO), str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_args(folder_root, run, "--cycles", "1")) == EXIT_RUN_DIR_BUSY
        err = capsys.readouterr().err
        assert f"in use by PID {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((run / "lock.json").read_text())["pid"] == holder.pid  # left behind by the dead process
    assert main(_args(folder_root, run, "--cycles", "1")) == EXIT_OK
    err = capsys.readouterr().err
    assert "taking over the lock" in err and f"PID {holder.pid}" in err
    assert not (run / "lock.json").exists()  # released at the end


def test_resume_with_another_config_needs_force(folder_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(folder_root, run, "--cycles", "1")) == EXIT_OK
    assert main(_args(folder_root, run, "--cycles", "1", "--resume", "--set", "train.lr=0.5")) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "train.lr: 0.1 -> 0.5" in err and "--force" in err
    assert main(_args(folder_root, run, "--cycles", "1", "--resume", "--force", "--set", "train.lr=0.5")) == EXIT_OK


def test_atomic_writes_give_new_files_the_umask_mode_and_keep_an_existing_files_mode(tmp_path):
    import os
    import stat

    from tavaal_seg.core.runtime import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "selection.csv", "image_id\n")
        assert stat.S_IMODE((tmp_path / "selection.csv").stat().st_mode) == 0o640  # not mkstemp's 0600
        (tmp_path / "shared.csv").write_text("old\n")
        os.chmod(tmp_path / "shared.csv", 0o664)
        atomic_write_text(tmp_path / "shared.csv", "new\n")
        assert stat.S_IMODE((tmp_path / "shared.csv").stat().st_mode) == 0o664
        assert (tmp_path / "shared.csv").read_text() == "new\n"
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))
