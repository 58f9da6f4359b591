"""What a team reviews: ranking a folder of new images with a finished run's model (no task-model
training), the HTML selection report, TensorBoard's image grid, Label Studio pre-annotations from
a real run, and segmentation's labeled-set statistics. A real CamVid run at tiny CPU settings."""
from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_run_args, write_image_folder
from tavaal_cls.cli import main as cls_main
from tavaal_seg.core import ranking as ranking_module
from tavaal_seg.core import strategies as strategies_module
from tavaal_seg.core.labelstudio import brush_rle_to_mask
from tavaal_seg.core.report import main as report_main
from tavaal_seg.ranking import main as rank_main
from tavaal_seg.ranking import rank_images
from tavaal_seg.segmentation.cli import main as seg_main
from tavaal_seg.segmentation.data import camvid_table, read_mask

REPO = Path(__file__).resolve().parents[1]
BUDGET = 6


@pytest.fixture(scope="module")
def camvid_run(camvid_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("camvid") / "run"
    argv = ["--config", str(REPO / "configs" / "camvid.yaml"), "--data-root", str(camvid_root), "--run-dir", str(run),
            "--strategy", "tavaal", "--cycles", "2", "--initial", "10", "--budget", str(BUDGET), "--subset", "20",
            "--epochs", "1", "--device", "cpu", "--set", "data.limit_train=40", "--set", "data.limit_test=6",
            "--set", "data.crop=[64, 96]", "--set", "data.eval_size=[96, 128]", "--set", "data.num_workers=0",
            "--set", "model.encoder=resnet18", "--set", "model.decoder_channels=32", "--set", "train.batch_size=5",
            "--set", "eval.batch_size=6", "--set", "vae.size=[32, 32]", "--set", "vae.iterations=3",
            "--set", "vae.batch_size=8", "--set", "vae.z_dim=8", "--set", "vae.width=0.0625",
            "--set", "ranker.hidden=16", "--set", "active.select_after_last=true",
            "--set", "export.formats=[csv, labelstudio]", "--set", "export.pre_annotations=true",
            "--set", "logging.preview_pool_sample=8", "--set", "logging.thumbnail_size=160"]
    assert seg_main(argv) == 0
    return run


@pytest.fixture(scope="module")
def new_images(camvid_root, camvid_run, tmp_path_factory) -> Path:
    """Next week's drives: 8 CamVid val frames in two folders, a hidden checkpoint copy that is
    not an image to rank, and (a link to) one frame the run has labeled already."""
    folder = tmp_path_factory.mktemp("new")
    lines = (camvid_root / "val.txt").read_text().splitlines()
    for drive, chunk in (("drive_a", lines[:4]), ("drive_b", lines[60:64])):
        (folder / drive).mkdir()
        for line in chunk:
            shutil.copy(camvid_root / line.split()[0], folder / drive)
    (folder / ".ipynb_checkpoints").mkdir()
    shutil.copy(camvid_root / lines[0].split()[0], folder / ".ipynb_checkpoints")
    state = json.loads((camvid_run / "state.json").read_text())
    labeled = state["selections"][0]["items"][0]["path"]
    (folder / "already_labeled.jpg").symlink_to(camvid_root / labeled)  # the very file the run labeled
    return folder


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside elements of interest."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in a.get("class", "").split())]


def parse(html_text: str) -> Tags:
    parser = Tags()
    parser.feed(html_text)
    parser.close()
    return parser


def _jpeg(data_uri: str) -> Image.Image:
    assert data_uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))


def test_rank_images_ranks_every_new_image_without_training_the_task_model(camvid_run, new_images, tmp_path,
                                                                            monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("the task model was trained")

    monkeypatch.setattr("tavaal_seg.core.training.train_task_model", no_training)
    monkeypatch.setattr("tavaal_seg.core.loop.train_task_model", no_training)
    loaded, optimized, vae_labeled = {}, set(), []
    real_load, real_vae, real_init = ranking_module.load_trained, strategies_module.train_vae, torch.optim.Optimizer.__init__

    def load(*a, **k):
        loaded["cycle"], loaded["model"], loaded["ranker"] = out = real_load(*a, **k)
        loaded["before"] = {n: t.clone() for n, t in out[1].state_dict().items()}
        return out

    def optimizer_init(self, params, *a, **k):
        params = list(params)
        for p in params:
            for q in (p["params"] if isinstance(p, dict) else [p]):
                optimized.add(id(q))
        return real_init(self, params, *a, **k)

    def vae(images_l, *a, **k):
        vae_labeled.append(len(images_l))
        return real_vae(images_l, *a, **k)

    monkeypatch.setattr(ranking_module, "load_trained", load)
    monkeypatch.setattr(strategies_module, "train_vae", vae)
    monkeypatch.setattr(torch.optim.Optimizer, "__init__", optimizer_init)
    out = tmp_path / "week32.csv"
    result = rank_images(camvid_run, new_images, budget=4, out=out, formats=["labelstudio", "csv"],
                         report=tmp_path / "week32.html", overrides=["active.group_by=folder", "active.max_per_group=2"])

    # every new image ranked, nothing else; ids relative to the folder
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    expected = sorted(p.relative_to(new_images).as_posix() for p in new_images.glob("drive_*/*.jpg"))
    assert sorted(r["image_id"] for r in rows) == expected and len(rows) == 8
    assert [int(r["rank"]) for r in rows] == list(range(1, 9)) and all(r["path"] == r["image_id"] for r in rows)
    assert {r["strategy"] for r in rows} == {"tavaal"} and "lower first" in rows[0]["score_meaning"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)  # P(labeled): the lowest first
    assert result.ranking.skipped == ["already_labeled.jpg"]
    picked = sorted((int(r["selected"]), r) for r in rows if r["selected"])
    assert [n for n, _ in picked] == [1, 2, 3, 4]
    assert max(sum(r["group"] == g for _, r in picked) for g in ("drive_a", "drive_b")) <= 2
    # the task model and ranker: loaded, never optimized, unchanged; only the VAE game trained
    model, ranker = loaded["model"], loaded["ranker"]
    assert not optimized & {id(p) for p in [*model.parameters(), *ranker.parameters()]}
    assert all(torch.equal(t, loaded["before"][n]) for n, t in model.state_dict().items())
    ckpt = torch.load(camvid_run / "checkpoints" / f"cycle_{loaded['cycle']:02d}.pt", weights_only=True)
    assert all(torch.equal(t, ckpt["model"][n]) for n, t in model.state_dict().items())
    state = json.loads((camvid_run / "state.json").read_text())
    assert loaded["cycle"] == 2 and vae_labeled == [len(state["labeled"])] and optimized

    # the top K for labeling tools, Label Studio with the model's masks as pre-annotations
    tasks = json.loads((tmp_path / "week32.top.labelstudio.json").read_text())
    top_csv = list(csv.DictReader((tmp_path / "week32.top.csv").open()))
    assert [t["data"]["image_id"] for t in tasks] == [r["image_id"] for _, r in picked] == \
        [r["image_id"] for r in top_csv]
    shares = {p["image_id"]: p["class_share"] for p in result.ranking.preview.document["picks"]}
    names = result.ranking.preview.document["class_names"]
    for task in tasks:
        layers = task["predictions"][0]["result"]
        assert layers and {r["original_width"] for r in layers} == {480} and {r["original_height"] for r in layers} == {360}
        masks = {r["value"]["brushlabels"][0]: brush_rle_to_mask(r["value"]["rle"], 360, 480) for r in layers}
        assert np.array_equal(sum(m.astype(int) for m in masks.values()), np.ones((360, 480), int))  # a partition
        for name, mask in masks.items():
            assert mask.mean() == pytest.approx(shares[task["data"]["image_id"]][names.index(name)], abs=1e-6)
    page = parse((tmp_path / "week32.html").read_text())
    assert [f["data-image-id"] for f in page.find("figure", "pick")] == [r["image_id"] for _, r in picked]


def test_run_report_is_one_self_contained_html_file(camvid_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert report_main([str(camvid_run), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    assert "<script" not in text
    page = parse(text)
    state = json.loads((camvid_run / "state.json").read_text())
    last = state["selections"][-1]
    figures = page.find("figure", "pick")
    assert [int(f["data-rank"]) for f in figures] == list(range(1, BUDGET + 1))
    assert [f["data-image-id"] for f in figures] == [it["image_id"] for it in last["items"]]
    images = page.find("img")
    assert len(images) == BUDGET
    for img in images:
        thumb = _jpeg(img["src"])
        assert thumb.format == "JPEG" and max(thumb.size) == 160 and thumb.size == (160, 120)
    assert len(page.find("tr")) >= 12 and [a["data-class"] for a in page.find("tr") if "data-class" in a][:2] == [
        "Sky", "Building"]
    (polyline,) = page.find("polyline")
    assert len(polyline["points"].split()) == 2  # two cycles on the learning curve
    assert page.find("section") and {s["id"] for s in page.find("section")} == {"picks", "classes", "curve",
                                                                              "settings"}
    # cycle 0 (no model yet): the picks without thumbnails and a note saying why
    assert report_main([str(camvid_run), "--cycle", "0", "--out", str(tmp_path / "c0.html")]) == 0
    c0 = (tmp_path / "c0.html").read_text()
    assert "initial pick is made before any model exists" in c0 and not parse(c0).find("img")
    assert len(parse(c0).find("figure", "pick")) == 10
    assert report_main([str(camvid_run), "--cycle", "7"]) == 2
    assert "cycle 7 has no selection" in capsys.readouterr().err
    assert report_main([str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_the_run_wrote_previews_a_tensorboard_grid_and_pre_annotations(camvid_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(camvid_run / "tb"), size_guidance={"images": 0})
    events.Reload()
    grids = events.Images("selection/picks")
    assert [g.step for g in grids] == [1, 2]
    grid = Image.open(io.BytesIO(grids[-1].encoded_image_string))
    assert grid.width == 8 * 162 + 2 or grid.width == BUDGET * 162 + 2  # one row of six 160-px thumbnails
    preview = json.loads((camvid_run / "selections" / "cycle_02.preview.json").read_text())
    assert preview["share"] == "pixel" and preview["pool"]["images"] == 8 and len(preview["picks"]) == BUDGET
    assert all(sum(p["class_share"]) == pytest.approx(1.0, abs=1e-4) for p in preview["picks"])
    tasks = json.loads((camvid_run / "selections" / "cycle_02.labelstudio.json").read_text())
    assert all(t["predictions"][0]["result"][0]["type"] == "brushlabels" for t in tasks)
    cycle0 = json.loads((camvid_run / "selections" / "cycle_00.labelstudio.json").read_text())
    assert all(t["predictions"][0]["result"] == [] for t in cycle0)  # no model before cycle 1


def test_segmentation_metrics_carry_the_labeled_sets_pixel_shares(camvid_run, camvid_root):
    rows = list(csv.DictReader((camvid_run / "metrics.csv").open()))
    table = camvid_table()
    state = json.loads((camvid_run / "state.json").read_text())
    initial = [it["image_id"] for it in state["selections"][0]["items"]]
    counts = np.zeros(11)
    for image_id in initial:
        mask = read_mask(camvid_root / "trainannot" / f"{image_id}.png", table)
        counts += np.bincount(mask[mask < 11], minlength=11)
    share = counts / counts.sum()
    got = [float(rows[0][f"labeled_pixel_share/{n}"]) for n in table.names]
    assert got == pytest.approx(share.tolist(), abs=1e-9)
    entropy = -(share[share > 0] * np.log(share[share > 0])).sum()
    assert float(rows[0]["labeled_class_entropy"]) == pytest.approx(entropy)
    assert rows[1]["labeled_class_entropy"] != rows[0]["labeled_class_entropy"]


def test_rank_images_works_for_classification(tmp_path, capsys):
    root, run = write_image_folder(tmp_path / "data"), tmp_path / "run"
    assert cls_main(tiny_run_args(root, run, "--cycles", "1", "--set", "logging.tensorboard=false")) == 0
    new = tmp_path / "new"
    rng = np.random.default_rng(3)
    for k in range(10):
        path = new / ("cam1" if k < 6 else "cam2/night") / f"{k:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)  # resized to the pool's 32
    out = tmp_path / "ranking.csv"
    assert rank_main([str(run), "--images", str(new), "--budget", "3", "--out", str(out), "--format", "labelstudio",
                      "--pre-annotations", "--report", str(tmp_path / "r.html"), "--set", "active.diversity=kcenter",
                      "--set", "active.diversity_candidates=6"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ranked"] == 10 and summary["picked"] == 3 and summary["model_cycle"] == 1
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10 and sum(1 for r in rows if r["selected"]) == 3
    assert all(int(r["rank"]) <= 6 for r in rows if r["selected"])  # re-picked from the top 6
    tasks = json.loads((tmp_path / "ranking.top.labelstudio.json").read_text())
    for task in tasks:
        (choice,) = task["predictions"][0]["result"]
        assert choice["type"] == "choices" and choice["value"]["choices"][0] in {f"class{k}" for k in range(4)}
        assert 0.0 < choice["score"] <= 1.0
    page = parse((tmp_path / "r.html").read_text())
    assert len(page.find("figure", "pick")) == 3 and len(page.find("img")) == 3


def test_rank_images_bad_inputs_are_named(tmp_path, capsys):
    assert rank_main([str(tmp_path), "--images", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    root, run = write_image_folder(tmp_path / "data"), tmp_path / "run"
    assert cls_main(tiny_run_args(root, run, "--cycles", "1", "--set", "logging.tensorboard=false")) == 0
    (tmp_path / "empty").mkdir()
    assert rank_main([str(run), "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "r.csv")]) == 2
    assert "no images" in capsys.readouterr().err
    assert rank_main([str(run), "--images", str(root / "test"), "--format", "labelbox"]) == 2
    assert "needs image URLs" in capsys.readouterr().err
    assert rank_main([str(run), "--images", str(root / "test"), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a directory" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()
    no_model = tmp_path / "no_model"
    shutil.copytree(run, no_model, ignore=shutil.ignore_patterns("checkpoints"))
    assert rank_main([str(no_model), "--images", str(root / "test"), "--out", str(tmp_path / "r.csv")]) == 2
    assert "has no trained model yet" in capsys.readouterr().err
    help_text = subprocess.run([sys.executable, str(REPO / "tools" / "rank_images.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--images" in help_text and "--budget" in help_text and "without training the task model" in help_text
    assert "--cycle" in subprocess.run([sys.executable, str(REPO / "tools" / "report.py"), "--help"],
                                       capture_output=True, text=True, check=True).stdout


def _torch_fails_inside(*args, **kwargs):
    """What a shape bug deep in scoring looks like: torch's own ValueError, not the user's input."""
    raise ValueError("Expected input batch_size (4) to match target batch_size (3).")


def test_rank_images_and_report_internal_errors_exit_1_with_the_traceback(tmp_path, capsys, monkeypatch):
    root, run = write_image_folder(tmp_path / "data"), tmp_path / "run"
    assert cls_main(tiny_run_args(root, run, "--cycles", "1", "--set", "logging.tensorboard=false")) == 0
    capsys.readouterr()
    monkeypatch.setattr("tavaal_seg.ranking.rank_folder", _torch_fails_inside)
    assert rank_main([str(run), "--images", str(root / "test"), "--out", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert "rank_images.py: internal error: ValueError: Expected input batch_size" in err and "Traceback" in err
    assert "not a problem with your input" in err and not (tmp_path / "r.csv").exists()
    monkeypatch.setattr("tavaal_seg.core.report.run_report", _torch_fails_inside)
    assert report_main([str(run)]) == 1
    err = capsys.readouterr().err
    assert "report.py: internal error: ValueError" in err and "Traceback" in err
