"""docs/own_data.md end to end on a generated tree of the shape it describes: images with some
masks (source ids + a label map file), an unlabeled folder of another image size, one's own
weights (a torchvision ResNet state dict) -> the first ranked list and its Label Studio export,
then masks delivered at their label_path -> --resume goes on. The config is the YAML block of the
page itself, shrunk for a CPU with --set."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from helpers import write_own_data
from tavaal_seg.core.cli import EXIT_LABELS_NEEDED, EXIT_OK
from tavaal_seg.segmentation.cli import main as seg_main
from tavaal_seg.segmentation.data import street_scene

REPO = Path(__file__).resolve().parents[1]
CPU = ["--device", "cpu", "--epochs", "1", "--set", "model.encoder=resnet18", "--set", "model.decoder_channels=16",
       "--set", "model.weights=my_weights/resnet18.pth", "--set", "data.crop=[64, 64]", "--set", "active.budget=4",
       "--set", "active.cycles=2", "--set", "train.batch_size=4", "--set", "eval.batch_size=4",
       "--set", "vae.size=[32, 32]", "--set", "vae.iterations=2", "--set", "vae.batch_size=8",
       "--set", "vae.z_dim=8", "--set", "vae.width=0.0625", "--set", "ranker.hidden=8",
       "--set", "logging.tensorboard=false"]


def _config_of_the_docs() -> str:
    text = (REPO / "docs" / "own_data.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return block


def test_own_data_to_the_first_ranked_list_and_label_studio(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_own_data(tmp_path / "my_data")
    (tmp_path / "my_weights").mkdir()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "my_weights" / "resnet18.pth")
    config = _config_of_the_docs()
    assert yaml.safe_load(config)["model"]["weights"] == "my_weights/resnet50_imagenet.pth"
    (tmp_path / "my_data.yaml").write_text(config)

    assert seg_main(["--config", "my_data.yaml", *CPU]) == EXIT_LABELS_NEEDED
    err = capsys.readouterr().err
    assert "waiting for labels: cycle 2 needs labels for 4 of 12 selected images" in err
    run = tmp_path / "runs" / "my_data"
    initial = list(csv.DictReader((run / "selections" / "cycle_00.csv").open()))
    assert len(initial) == 8 and {r["strategy"] for r in initial} == {"initial_existing"}  # the 8 masked images
    ranked = list(csv.DictReader((run / "selections" / "cycle_01.csv").open()))
    assert [int(r["rank"]) for r in ranked] == [1, 2, 3, 4] and {r["strategy"] for r in ranked} == {"tavaal"}
    unlabeled = {f"{site}/train_{k:03d}" for k, site in zip(range(8, 12), ("north", "south") * 2)} | \
        {f"batch{k // 3}/new_{k:03d}" for k in range(6)}
    assert {r["image_id"] for r in ranked} <= unlabeled
    tasks = json.loads((run / "selections" / "cycle_01.labelstudio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d={r['path']}" for r in ranked]
    assert [t["predictions"][0]["score"] for t in tasks] == sorted((t["predictions"][0]["score"] for t in tasks),
                                                                   reverse=True)
    needed = list(csv.DictReader((run / "labels_needed.csv").open()))
    assert [n["image_id"] for n in needed] == sorted(r["image_id"] for r in ranked)

    # the labeling team delivers masks (source ids) at each label_path; the run goes on
    for row in needed:
        width, height = Image.open(tmp_path / "my_data" / row["path"]).size
        _, label = street_scene(np.random.default_rng(7), (height, width))
        target = tmp_path / "my_data" / row["label_path"]
        assert target.parent.parent.name == "train" or target.parent.name.startswith("batch")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(target)
    assert seg_main(["--config", "my_data.yaml", "--resume", *CPU]) == EXIT_OK
    metrics = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(m["n_labeled"]) for m in metrics] == [8, 12] and "IoU/car" in metrics[0]
    assert not (run / "labels_needed.csv").exists()

    # the run's checkpoint loads back for scoring: the same mIoU as the run measured
    from tavaal_seg.core.runtime import Precision
    from tavaal_seg.core.training import evaluate
    from tavaal_seg.core.validation import load_config
    from tavaal_seg.segmentation.adapter import SegmentationAdapter
    from tavaal_seg.segmentation.config import SegConfig

    cfg = load_config(SegConfig, run / "config.yaml", [f"model.weights={run / 'checkpoints' / 'cycle_02.pt'}"])
    adapter = SegmentationAdapter(cfg, tmp_path / "my_data")
    cpu = torch.device("cpu")
    scored = evaluate(adapter.build_model(), adapter, cfg, Precision(cpu, enabled=False), cpu)
    assert scored["mIoU"] == pytest.approx(float(metrics[-1]["mIoU"]), abs=1e-9)
