"""Pools that grow between cycles: --resume on a data root with new (and vanished) images."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import tiny_run_args, write_image_folder
from tavaal_cls.cli import main
from tavaal_seg.core.cli import EXIT_BAD_INPUT, EXIT_OK
from tavaal_seg.core.pool import pool_digest


def _args(root: Path, run: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, run, "--set", "logging.tensorboard=false", "--set", "logging.candidate_scores=true",
                         "--set", "active.subset=1000", *extra)


def _state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def test_a_resumed_run_selects_among_old_and_new_images_and_says_so(tmp_path, capsys):
    root, run = write_image_folder(tmp_path / "data"), tmp_path / "run"
    assert main(_args(root, run, "--cycles", "2")) == EXIT_OK
    before = _state(run)
    (v1,) = before["pool_versions"]
    assert (v1["version"], v1["count"], v1["added"], v1["removed"], v1["after_cycle"]) == (1, 64, 64, 0, 0)
    assert json.loads((run / v1["file"]).read_text())["ids"] == sorted(json.loads((run / v1["file"]).read_text())["ids"])

    # a week later: 8 new images, one unlabeled image and one labeled image gone
    rng = np.random.default_rng(1)
    new = []
    for k in range(8):
        path = root / "train" / f"class{k % 4}" / f"new_{k:02d}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        new.append(f"class{k % 4}/new_{k:02d}")
    labeled = set(before["labeled"])
    all_ids = json.loads((run / v1["file"]).read_text())["ids"]
    gone_unlabeled = next(i for i in all_ids if i not in labeled)
    gone_labeled = sorted(labeled)[0]
    for image_id in (gone_unlabeled, gone_labeled):
        (root / "train" / f"{image_id}.png").unlink()

    assert main(_args(root, run, "--cycles", "3", "--resume")) == EXIT_OK
    after = _state(run)
    v2 = after["pool_versions"][1]
    assert (v2["version"], v2["count"], v2["added"], v2["removed"], v2["after_cycle"]) == (2, 70, 8, 2, 2)
    changes = json.loads((run / v2["file"]).read_text())
    assert changes["added"] == sorted(new) and changes["removed"] == sorted([gone_unlabeled, gone_labeled])
    assert v2["sha256"] == pool_digest(changes["ids"])
    err = capsys.readouterr().err
    assert "the pool changed: version 2 has 70 images, 8 new" in err
    assert "left out of training from now on" in err and gone_labeled in err
    # earlier selections are untouched; cycle 2 (the finished run's last) now selects, on version 2
    assert after["selections"][:2] == before["selections"]
    assert [s["pool_version"] for s in after["selections"]] == [1, 1, 2]
    candidates = [r["image_id"] for r in csv.DictReader((run / "selections" / "cycle_02.candidates.csv").open())]
    assert set(new) <= set(candidates) and gone_unlabeled not in candidates and gone_labeled not in candidates
    assert len(candidates) == 70 - len(labeled - {gone_labeled})  # every unlabeled image, old and new
    assert not set(s["image_id"] for s in after["selections"][2]["items"]) & labeled
    # cycle 3 trained without the vanished labeled image
    assert after["cycles"][2]["n_labeled"] == before["cycles"][1]["n_labeled"] + 8 - 1

    # nothing changed since: resuming records no new version and leaves the state as it is
    assert main(_args(root, run, "--cycles", "3", "--resume")) == EXIT_OK
    assert _state(run)["pool_versions"] == after["pool_versions"]


def test_a_state_from_before_pool_versions_is_followed_only_when_it_can_be(tmp_path, capsys):
    root, run = write_image_folder(tmp_path / "data"), tmp_path / "run"
    assert main(_args(root, run, "--cycles", "1")) == EXIT_OK
    state = _state(run)
    del state["pool_versions"]  # what a run made before this release wrote
    (run / "state.json").write_text(json.dumps(state))
    shutil.rmtree(run / "pool")
    assert main(_args(root, run, "--cycles", "1", "--resume")) == EXIT_OK  # same pool: adopted as version 1
    assert [v["version"] for v in _state(run)["pool_versions"]] == [1]
    state = _state(run)
    del state["pool_versions"]
    (run / "state.json").write_text(json.dumps(state))
    (root / "train" / "class0" / "000.png").unlink()
    assert main(_args(root, run, "--cycles", "1", "--resume")) == EXIT_BAD_INPUT
    assert "before pool versions were recorded" in capsys.readouterr().err
