"""Human-in-the-loop runs: stop after a selection, export it, resume when labels arrive.

Segmentation on a real CamVid subset whose training masks are "delivered" by the test;
classification on an unlabeled image folder with labels imported from a CSV; initial and
exclude lists.
"""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tavaal_cls.cli import main as cls_main
from tavaal_seg.core.cli import EXIT_BAD_INPUT, EXIT_LABELS_NEEDED, EXIT_OK
from tavaal_seg.segmentation.cli import main as seg_main

REPO = Path(__file__).resolve().parents[1]
TINY_VAE = ["--set", "vae.iterations=2", "--set", "vae.batch_size=8", "--set", "vae.z_dim=8",
            "--set", "vae.width=0.0625", "--set", "ranker.hidden=16"]


def _camvid_subset(camvid: Path, root: Path, n_train: int, n_test: int) -> dict[str, Path]:
    """A CamVid copy whose training masks are withheld: {image id: the true mask to deliver}."""
    truth = {}
    for split, n, with_masks in (("train", n_train, False), ("test", n_test, True)):
        lines = (camvid / f"{split}.txt").read_text().splitlines()[:n]
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for line in lines:
            image, mask = line.split()
            shutil.copy(camvid / image, root / image)
            if with_masks:
                shutil.copy(camvid / mask, root / mask)
            else:
                truth[Path(image).stem] = camvid / mask
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return truth


def _needed(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "labels_needed.csv").open(encoding="utf-8")))


def test_camvid_human_mode_stops_exports_and_resumes_when_masks_arrive(camvid_root, tmp_path, capsys):
    data, run = tmp_path / "camvid", tmp_path / "run"
    truth = _camvid_subset(camvid_root, data, 24, 4)
    argv = ["--config", str(REPO / "configs" / "camvid.yaml"), "--data-root", str(data), "--run-dir", str(run),
            "--strategy", "tavaal", "--cycles", "2", "--initial", "6", "--budget", "4", "--subset", "12",
            "--epochs", "1", "--device", "cpu", "--set", "labels.mode=human",
            "--set", "export.formats=[csv, labelstudio]", "--set", "data.crop=[64, 96]",
            "--set", "data.eval_size=[96, 128]", "--set", "data.num_workers=0", "--set", "model.encoder=resnet18",
            "--set", "model.decoder_channels=16", "--set", "train.batch_size=3", "--set", "eval.batch_size=4",
            "--set", "vae.size=[32, 32]", "--set", "logging.tensorboard=false", *TINY_VAE]

    # cycle 0: the initial pick is exported and the run waits for its masks
    assert seg_main(argv) == EXIT_LABELS_NEEDED
    err = capsys.readouterr().err
    assert "waiting for labels" in err and "--resume" in err and "labels_needed.csv" in err
    tasks = json.loads((run / "selections" / "cycle_00.labelstudio.json").read_text())
    initial = [r["image_id"] for r in csv.DictReader((run / "selections" / "cycle_00.csv").open())]
    assert len(tasks) == len(initial) == 6
    for task, image_id in zip(tasks, initial):  # Label Studio local-files URLs of the right images
        assert task["data"]["image"] == f"/data/local-files/?d=train/{image_id}.jpg"
        assert (data / "train" / f"{image_id}.jpg").is_file()
        assert isinstance(task["predictions"][0]["score"], float)
    needed = _needed(run)
    assert [r["image_id"] for r in needed] == sorted(initial)
    assert all(r["label_path"] == f"trainannot/{r['image_id']}.png" for r in needed)

    # some masks delivered: the rest is reported by id, nothing is lost
    for row in needed[:4]:
        shutil.copy(truth[row["image_id"]], data / row["label_path"])
    assert seg_main([*argv, "--resume"]) == EXIT_LABELS_NEEDED
    err = capsys.readouterr().err
    assert "2 of 6" in err and needed[4]["image_id"] in err
    assert [r["image_id"] for r in _needed(run)] == [r["image_id"] for r in needed[4:]]

    # a mask of the wrong size is a bad input naming the file
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / needed[4]["label_path"])
    assert seg_main([*argv, "--resume"]) == EXIT_BAD_INPUT
    assert needed[4]["label_path"] in capsys.readouterr().err

    # all masks in place: cycle 1 trains, selects, exports and waits for the new masks
    for row in needed[4:]:
        shutil.copy(truth[row["image_id"]], data / row["label_path"])
    assert seg_main([*argv, "--resume"]) == EXIT_LABELS_NEEDED
    capsys.readouterr()
    selected = [r["image_id"] for r in csv.DictReader((run / "selections" / "cycle_01.csv").open())]
    assert len(selected) == 4 and not set(selected) & set(initial)
    assert sorted(r["image_id"] for r in _needed(run)) == sorted(selected)
    tasks = json.loads((run / "selections" / "cycle_01.labelstudio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=train/{i}.jpg" for i in selected]

    for row in _needed(run):
        shutil.copy(truth[row["image_id"]], data / row["label_path"])
    assert seg_main([*argv, "--resume"]) == EXIT_OK
    state = json.loads((run / "state.json").read_text())
    assert [c["n_labeled"] for c in state["cycles"]] == [6, 10]
    assert not (run / "labels_needed.csv").exists()


def _write_png(path: Path, value: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.clip(value + rng.integers(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


CLASSES = ("dark", "dim", "light", "bright")
ODD_IDS = ['a,"b" c', "straße ü 東京", "it's here"]


def _unlabeled_folder(root: Path, n_pool: int) -> dict[str, str]:
    """pool/*.png without labels (some with awkward names) + test/<class>/*.png; returns the truth."""
    truth = {}
    for k in range(n_pool):
        image_id = ODD_IDS[k] if k < len(ODD_IDS) else f"img{k:03d}"
        label = k % len(CLASSES)
        _write_png(root / "pool" / f"{image_id}.png", 40 + 60 * label, k)
        truth[image_id] = CLASSES[label]
    for label, name in enumerate(CLASSES):
        for k in range(3):
            _write_png(root / "test" / name / f"t{k}.png", 40 + 60 * label, 1000 + 10 * label + k)
    return truth


def _cls_args(root: Path, run: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "cifar10.yaml"), "--data-root", str(root), "--run-dir", str(run),
            "--strategy", "tavaal", "--cycles", "2", "--initial", "8", "--budget", "6", "--subset", "20",
            "--epochs", "1", "--device", "cpu", "--set", "data.name=image_folder", "--set", "data.unlabeled_dir=pool",
            "--set", "labels.mode=human", "--set", "model.width=0.0625", "--set", "train.batch_size=8",
            "--set", "logging.tensorboard=false", *TINY_VAE, *extra]


def _labels_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("image_id", "label"), *rows])
    return path


def test_classification_human_mode_imports_label_csvs(tmp_path, capsys):
    root, run = tmp_path / "data", tmp_path / "run"
    truth = _unlabeled_folder(root, 40)
    argv = _cls_args(root, run, "--set", "labels.initial_list=" + str(_initial_list(tmp_path)))
    assert cls_main(argv) == EXIT_LABELS_NEEDED
    assert "--labels" in capsys.readouterr().err
    needed = [r["image_id"] for r in _needed(run)]
    assert sorted(needed) == sorted(ODD_IDS + ["img010", "img011"])  # the initial list, odd ids intact

    bad_inputs = [
        ([("img010", "purple")], "not class names"),
        ([("nobody", "dark")], "not in the training pool"),
        ([("img030", "dark")], "never selected"),
    ]
    for rows, message in bad_inputs:
        assert cls_main([*argv, "--resume", "--labels", str(_labels_file(tmp_path / "bad.csv", rows))]) == EXIT_BAD_INPUT
        assert message in capsys.readouterr().err
    assert not (run / "labels.csv").exists()  # nothing half-imported

    first = _labels_file(tmp_path / "batch1.csv", [(i, truth[i]) for i in needed[:3]])
    assert cls_main([*argv, "--resume", "--labels", str(first)]) == EXIT_LABELS_NEEDED
    assert "2 of 5" in capsys.readouterr().err
    rest = _labels_file(tmp_path / "batch2.csv", [(i, truth[i]) for i in needed[3:]])
    assert cls_main([*argv, "--resume", "--labels", str(rest)]) == EXIT_LABELS_NEEDED  # cycle 1 ran and selected
    capsys.readouterr()
    stored = {r["image_id"]: r["label"] for r in csv.DictReader((run / "labels.csv").open(encoding="utf-8"))}
    assert stored == {i: truth[i] for i in needed}
    selected = [r["image_id"] for r in csv.DictReader((run / "selections" / "cycle_01.csv").open(encoding="utf-8"))]
    assert len(selected) == 6 and not set(selected) & set(needed)
    last = _labels_file(tmp_path / "batch3.csv", [(i, truth[i]) for i in selected])
    assert cls_main([*argv, "--resume", "--labels", str(last)]) == EXIT_OK
    state = json.loads((run / "state.json").read_text())
    assert [c["n_labeled"] for c in state["cycles"]] == [5, 11]


def _initial_list(tmp_path: Path) -> Path:
    path = tmp_path / "initial.txt"
    path.write_text("\n".join([*ODD_IDS, "img010", "img011"]) + "\n", encoding="utf-8")
    return path


def test_exclude_list_keeps_ids_out_of_every_selection(tmp_path):
    from tavaal_seg.core import run_active_learning
    from tests.helpers import tiny_adapter, tiny_config

    exclude = tmp_path / "broken.txt"
    exclude.write_text("".join(f"img{i:04d}\n" for i in range(0, 80, 2)), encoding="utf-8")  # half the pool
    cfg = tiny_config(**{"labels.exclude_list": str(exclude), "active.subset": 30, "active.cycles": 3})
    state = run_active_learning(cfg, tiny_adapter(cfg), tmp_path / "run")
    chosen = [int(i[3:]) for i in state.labeled]
    assert len(chosen) == 20 + 10 + 10 and all(i % 2 == 1 for i in chosen)


def test_id_lists_with_unknown_or_duplicate_ids_are_refused(tmp_path):
    from tavaal_seg.core import ActiveLearningRun, ConfigError
    from tests.helpers import tiny_adapter, tiny_config

    unknown = tmp_path / "unknown.txt"
    unknown.write_text("img0001\nno-such-image\n", encoding="utf-8")
    duplicate = tmp_path / "dup.csv"
    duplicate.write_text("rank,image_id\n1,img0001\n2,img0001\n", encoding="utf-8")
    for key, path, message in [("labels.initial_list", unknown, "not in the training pool"),
                               ("labels.exclude_list", duplicate, "dup.csv:3: duplicate image id 'img0001'")]:
        cfg = tiny_config(**{key: str(path)})
        with pytest.raises((ConfigError, ValueError), match=message):
            ActiveLearningRun(cfg, tiny_adapter(cfg), tmp_path / "run")
