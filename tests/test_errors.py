"""Bad input vs internal errors, both ways: bad input is exit 2 with one clear line; a bug or a
failure inside torch (its own ValueError/RuntimeError, deep in a run) is exit 1 with a one-line
pointer on the terminal and the full traceback in run.log -- never reported as bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_run_args, write_image_folder
from tavaal_cls.cli import main as cls_main
from tavaal_seg.core.cli import EXIT_BAD_INPUT, EXIT_INTERNAL
from tavaal_seg.core.errors import BadInput, ConfigError, DataError, InputNotFound, WeightsError
from tavaal_seg.segmentation import cli as seg_cli


def _torch_fails_inside(*args, **kwargs):
    """What a shape bug deep in training looks like: torch's own ValueError."""
    F.batch_norm(torch.zeros(1, 4), None, None, training=True)
    raise AssertionError("unreachable")


def test_a_valueerror_inside_torch_is_an_internal_error_with_its_traceback_in_run_log(tmp_path, monkeypatch, capsys):
    root = write_image_folder(tmp_path / "data")
    run = tmp_path / "run"
    monkeypatch.setattr("tavaal_seg.core.loop.train_task_model", _torch_fails_inside)
    assert cls_main(tiny_run_args(root, run)) == EXIT_INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("al_cls.py: internal error: ValueError: Expected more than 1 value per channel")
    assert f"full traceback is in {run / 'run.log'}" in err[-1] and not any("Traceback" in line for line in err)
    log = (run / "run.log").read_text()
    assert "Traceback (most recent call last)" in log and "_torch_fails_inside" in log and "F.batch_norm" in log
    assert (run / "state.json").is_file()  # cycle 0 was recorded: --resume goes on once the bug is fixed


def test_an_internal_error_before_the_run_opened_still_leaves_its_traceback(tmp_path, monkeypatch, capsys):
    def broken_adapter(cfg, root):
        raise RuntimeError("stack expects each tensor to be equal size, but got [3, 64, 96] at entry 0")

    monkeypatch.setattr(seg_cli, "SegmentationAdapter", broken_adapter)
    run = tmp_path / "run"
    argv = ["--data-root", str(tmp_path), "--run-dir", str(run), "--device", "cpu",
            "--set", "data.synthetic_train=null"]
    assert seg_cli.main(argv) == EXIT_INTERNAL
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "internal error: RuntimeError: stack expects each tensor" in err and str(run / "run.log") in err
    assert "broken_adapter" in (run / "run.log").read_text()


def test_bad_input_is_exit_2_in_one_line_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--data-root", str(tmp_path / "none"), "--run-dir", str(run), "--device", "cpu",
            "--set", "data.synthetic_train=null"]
    assert seg_cli.main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"al_seg.py: error: data root {tmp_path / 'none'} does not exist or is not a directory"]
    assert not run.exists()


def test_the_bad_input_family_keeps_the_builtin_types_callers_catch():
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(WeightsError, ValueError) and issubclass(InputNotFound, FileNotFoundError)
    assert all(issubclass(e, BadInput) for e in (ConfigError, DataError, WeightsError, InputNotFound))
    assert not issubclass(ValueError, BadInput)


@pytest.mark.parametrize("argv, message", [
    (["--config", "no_such_config"], "--config no_such_config: no such file, and not the name of a shipped config "
                                     "(caltech101, camvid, cifar10"),
    (["--set", "model.encoder_weights=imagenet"], "drn_d_22-4bd2f8ea.pth"),
])
def test_config_errors_name_what_to_do(tmp_path, capsys, argv, message):
    assert seg_cli.main(["--run-dir", str(tmp_path / "run"), "--device", "cpu", *argv]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_encoder_weights_imagenet_offline_exits_2_naming_the_file_and_where_to_put_it(tmp_path, monkeypatch, capsys):
    """The issue's acceptance line: `tavaal-seg --set model.encoder_weights=imagenet` offline (here the
    demo's DRN at the width its ImageNet weights have)."""
    import urllib.error

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    argv = ["--run-dir", str(run), "--device", "cpu", "--set", "model.encoder_weights=imagenet",
            "--set", "model.width=1.0"]
    assert seg_cli.main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot download http://dl.yf.io/drn/drn_d_22-4bd2f8ea.pth" in err
    assert f"put it at {tmp_path / 'hub' / 'checkpoints' / 'drn_d_22-4bd2f8ea.pth'}" in err
    assert not run.exists()  # refused before the run wrote anything
