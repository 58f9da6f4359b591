"""Segmentation data as teams have it, each on a generated tree: mmsegmentation-style folders and
suffixes per split, label maps (inline and in files), colour masks with a palette (CamVid
class_dict.csv, CVAT labelmap.txt, YAML), an unlabeled folder, symlinked trees and images of
mixed sizes -- and the errors each of them gives when it is wrong."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import OWN_CLASSES, OWN_LABEL_MAP, write_own_data
from tavaal_seg.core.errors import ConfigError, DataError, InputNotFound
from tavaal_seg.core.preview import predict
from tavaal_seg.core.runtime import Precision, displayed_image_size
from tavaal_seg.core.validation import load_config
from tavaal_seg.ranking import rank_images
from tavaal_seg.segmentation.adapter import SegmentationAdapter
from tavaal_seg.segmentation.cli import main as seg_main
from tavaal_seg.segmentation.config import SegConfig
from tavaal_seg.segmentation.data import collate_same_size, read_mask, street_scene
from tavaal_seg.segmentation.data.synthetic import CAR, ROAD, SKY

REPO = Path(__file__).resolve().parents[1]
OWN = ["data.name=folder", "data.img_dir=images/{split}", "data.ann_dir=annotations/{split}", "data.img_suffix=.jpg",
       "data.seg_map_suffix=_labelIds.png", f"data.classes=[{', '.join(OWN_CLASSES)}]", "data.crop=[64, 64]",
       "data.eval_size=null", "model.name=drn_d_22", "model.width=0.125"]
TINY_RUN = ["--device", "cpu", "--epochs", "1", "--set", "train.batch_size=4", "--set", "vae.iterations=2",
            "--set", "vae.batch_size=8", "--set", "vae.z_dim=8", "--set", "vae.width=0.0625",
            "--set", "vae.size=[32, 32]", "--set", "ranker.hidden=8", "--set", "logging.tensorboard=false", "--set", "eval.batch_size=4"]


def _cfg(*sets: str) -> SegConfig:
    return load_config(SegConfig, None, [*OWN, *sets])


def _sets(*sets: str) -> list[str]:
    return [a for s in [*OWN, *sets] for a in ("--set", s)]


def test_mmseg_folders_suffixes_and_a_label_map_file(tmp_path: Path) -> None:
    root = write_own_data(tmp_path / "my_data")
    adapter = SegmentationAdapter(_cfg("labels.mode=human", f"data.label_map={root / 'label_map.csv'}"), root)
    ids = [it.image_id for it in adapter.train_items]
    assert ids[:3] == ["north/train_000", "north/train_002", "north/train_004"] and len(ids) == 12
    assert sum(it.mask is not None for it in adapter.train_items) == 8
    assert adapter.pool().paths[0] == "images/train/north/train_000.jpg"
    assert adapter.label_path(ids.index("south/train_011")) == "annotations/train/south/train_011_labelIds.png"
    mask = read_mask(adapter.test_items[0].mask, adapter.table)
    raw = np.asarray(Image.open(adapter.test_items[0].mask))
    assert (mask[raw == ROAD] == 0).all() and (mask[raw == SKY] == 5).all() and (mask[raw == 0] == 255).all()
    # per-split folders as a mapping; one split's folder missing is named
    mapped = _cfg("labels.mode=human", "data.img_dir={train: images/train, val: images/val}",
                  f"data.label_map={root / 'label_map.csv'}")
    assert [it.image_id for it in SegmentationAdapter(mapped, root).train_items] == ids
    with pytest.raises(ConfigError, match=r"data.img_dir: expected a folder for split 'val'"):
        _cfg("data.img_dir={train: images/train}")
    with pytest.raises(InputNotFound, match=r"image directory .*pictures/train does not exist.*\*\*/\*\.jpg"):
        SegmentationAdapter(_cfg("data.img_dir=pictures/{split}", f"data.label_map={root / 'label_map.csv'}"), root)


def test_label_maps_inline_yaml_json_csv_and_their_errors(tmp_path: Path) -> None:
    root = write_own_data(tmp_path / "d", n_train=2, n_labeled=2, n_val=1, n_unlabeled=0)
    (tmp_path / "map.yaml").write_text("\n".join(f"{s}: {t}" for s, t in OWN_LABEL_MAP.items()))
    (tmp_path / "map.json").write_text(json.dumps({str(s): t for s, t in OWN_LABEL_MAP.items()}))
    inline = "{" + ", ".join(f"{s}: {t}" for s, t in OWN_LABEL_MAP.items()) + "}"
    tables = [SegmentationAdapter(_cfg(f"data.label_map={m}"), root).table
              for m in (inline, tmp_path / "map.yaml", tmp_path / "map.json", root / "label_map.csv")]
    assert all(t == tables[0] for t in tables) and tables[0].lut[CAR] == 7

    (tmp_path / "short.yaml").write_text("7: 0\n8: 1\n")  # the masks hold more source ids than the map
    adapter = SegmentationAdapter(_cfg(f"data.label_map={tmp_path / 'short.yaml'}"), root)
    with pytest.raises(DataError, match=r"val_000_labelIds\.png: contains raw value\(s\) \[.*\] .* known raw values: "
                                        r"7-8, 255"):
        read_mask(adapter.test_items[0].mask, adapter.table)
    for bad, message in (("{7: 9}", r"data.label_map: id_map maps raw 7 to 9: expected a train id 0..7"),
                         ("{300: 1}", r"data.label_map: id_map raw value 300 outside 0..255"),
                         (str(tmp_path / "none.csv"), r"data.label_map: file .*none\.csv does not exist")):
        with pytest.raises((ConfigError, InputNotFound), match=message):
            SegmentationAdapter(_cfg(f"data.label_map={bad}"), root)
    with pytest.raises(ConfigError, match=r"data.label_map needs data.classes"):
        SegmentationAdapter(load_config(SegConfig, None, ["data.name=camvid", "data.label_map={1: 0}"]), root)
    with pytest.raises(ConfigError, match=r"data.label_map/data.palette: expected one of them"):
        _cfg("data.label_map={1: 0}", "data.palette=[[1, 2, 3]]")


def _colour_tree(root: Path, palette: dict[str, tuple[int, int, int]], mode: str = "RGB") -> Path:
    """train/val images with colour masks painted from each scene's labelIds."""
    by_id = {ROAD: palette["road"], SKY: palette["sky"], CAR: palette["car"]}
    rng = np.random.default_rng(3)
    for split, n in (("train", 6), ("val", 2)):
        for k in range(n):
            image, label = street_scene(rng, (48, 64))
            colour = np.zeros((*label.shape, 3), np.uint8)
            colour[:] = palette["void"]
            for label_id, rgb in by_id.items():
                colour[label == label_id] = rgb
            for sub, array in (("images", image), ("masks", colour)):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                picture = Image.fromarray(array)
                if sub == "masks" and mode == "P":  # a palette PNG, as some labeling tools export
                    picture = picture.quantize(colors=len(palette), method=Image.Quantize.FASTOCTREE)
                picture.save(root / split / sub / f"{k:03d}.png")
    return root


CAMVID_COLOURS = {"sky": (128, 128, 128), "road": (128, 64, 128), "car": (64, 0, 128), "void": (0, 0, 0)}


@pytest.mark.parametrize("mode", ["RGB", "P"])
def test_colour_masks_with_a_palette_from_each_kind_of_file(tmp_path: Path, mode: str) -> None:
    root = _colour_tree(tmp_path / "d", CAMVID_COLOURS, mode)
    with (tmp_path / "class_dict.csv").open("w", newline="") as fh:  # CamVid (Kaggle) class_dict.csv
        writer = csv.writer(fh)
        writer.writerow(["name", "r", "g", "b"])
        writer.writerows([name, *rgb] for name, rgb in CAMVID_COLOURS.items())
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{name}:{','.join(map(str, rgb))}::\n" for name, rgb in CAMVID_COLOURS.items()))  # CVAT export
    (tmp_path / "palette.yaml").write_text("".join(f"{n}: {list(c)}\n" for n, c in CAMVID_COLOURS.items()))
    tables = []
    for palette in (tmp_path / "class_dict.csv", tmp_path / "labelmap.txt", tmp_path / "palette.yaml"):
        cfg = load_config(SegConfig, None, ["data.name=folder", "data.classes=[sky, road, car]",
                                            f"data.palette={palette}", "data.crop=[32, 32]"])
        tables.append(SegmentationAdapter(cfg, root).table)
    assert all(t == tables[0] for t in tables) and tables[0].names == ("sky", "road", "car")
    mask = read_mask(root / "train/masks/000.png", tables[0])
    rgb = np.asarray(Image.open(root / "train/masks/000.png").convert("RGB"))
    assert (mask[(rgb == CAMVID_COLOURS["road"]).all(-1)] == 1).all()
    assert (mask[(rgb == CAMVID_COLOURS["void"]).all(-1)] == 255).all()  # a palette name that is no class
    # previews draw each class in its mask colour; instructions to labelers name the same colours
    adapter = SegmentationAdapter(cfg, root)
    assert adapter.class_colors == (CAMVID_COLOURS["sky"], CAMVID_COLOURS["road"], CAMVID_COLOURS["car"])
    assert tables[0].describe_values() == ("RGB colours of data.palette (3 classes: sky (128, 128, 128), "
                                           "road (128, 64, 128), car (64, 0, 128))")


def test_palette_errors_name_the_file_and_the_colour(tmp_path: Path) -> None:
    root = _colour_tree(tmp_path / "d", CAMVID_COLOURS)
    cfg = load_config(SegConfig, None, ["data.name=folder", "data.classes=[sky, road, car]",
                                        "data.palette=[[128, 128, 128], [128, 64, 128], [64, 0, 128]]"])
    adapter = SegmentationAdapter(cfg, root)  # black (void) is not in this palette
    with pytest.raises(DataError, match=r"train/masks/000\.png: 1 colour\(s\) not in data\.palette, e\.g\. "
                                        r"\(0, 0, 0\) \(\d+ px\)"):
        read_mask(adapter.train_items[0].mask, adapter.table)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "train/masks/001.png")
    with pytest.raises(DataError, match=r"001\.png: data\.palette is set, so masks must be 8-bit colour"):
        read_mask(root / "train/masks/001.png", adapter.table)
    for palette, message in (("[[1, 2, 3]]", r"a list of colours needs data.classes of the same length"),
                             ("{sky: [1, 2, 3], road: [1, 2, 3], car: [0, 0, 0]}", r"colour \(1, 2, 3\) is given to "
                                                                                    r"both 'sky' and 'road'"),
                             ("{sky: [1, 2, 300], road: [1, 2, 3], car: [0, 0, 0]}", r"colour of 'sky' must be"),
                             ("{sky: [1, 2, 3]}", r"classes \['road', 'car'\] have no colour in the palette")):
        bad = load_config(SegConfig, None, ["data.name=folder", "data.classes=[sky, road, car]",
                                            f"data.palette={palette}"])
        with pytest.raises(ConfigError, match=message):
            SegmentationAdapter(bad, root)


def test_unlabeled_dir_joins_the_pool_and_its_masks_go_under_ann_dir(tmp_path: Path) -> None:
    root = write_own_data(tmp_path / "my_data")
    sets = ["labels.mode=human", "data.unlabeled_dir=incoming", f"data.label_map={root / 'label_map.csv'}"]
    adapter = SegmentationAdapter(_cfg(*sets), root)
    pool = adapter.pool()
    assert len(pool) == 18 and "batch1/new_004" in pool.ids and "incoming/batch1/new_004.jpg" in pool.paths
    k = pool.ids.index("batch1/new_004")
    assert adapter.train_items[k].mask is None
    assert adapter.label_path(k) == "annotations/train/batch1/new_004_labelIds.png"
    with pytest.raises(ConfigError, match=r"data.unlabeled_dir: expected null unless labels.mode is human"):
        _cfg("data.unlabeled_dir=incoming")
    (root / "incoming" / "north").mkdir()
    (root / "incoming/north/train_000.jpg").hardlink_to(root / "images/train/north/train_000.jpg")
    with pytest.raises(DataError, match=r"image id 'north/train_000' .* is also a 'train' image"):
        SegmentationAdapter(_cfg(*sets), root)
    with pytest.raises(InputNotFound, match=r"image directory .*nowhere does not exist"):
        SegmentationAdapter(_cfg("labels.mode=human", "data.unlabeled_dir=nowhere",
                                 f"data.label_map={root / 'label_map.csv'}"), root)


def test_a_mask_checked_for_arrival_is_not_decoded_again_for_the_class_shares(tmp_path: Path, monkeypatch) -> None:
    import tavaal_seg.segmentation.adapter as adapter_module

    root = write_own_data(tmp_path / "my_data")
    cfg = _cfg("labels.mode=human", f"data.label_map={root / 'label_map.csv'}")
    expected = SegmentationAdapter(cfg, root).labeled_stats(np.arange(4))
    decoded = []
    monkeypatch.setattr(adapter_module, "read_mask", lambda path, table: decoded.append(path) or read_mask(path, table))
    adapter = SegmentationAdapter(cfg, root)
    assert adapter.missing_labels(np.arange(4)) == [] and len(decoded) == 4
    assert adapter.labeled_stats(np.arange(4)) == expected and len(decoded) == 4


def test_a_symlinked_tree_runs_and_exports_paths_under_the_data_root(tmp_path: Path) -> None:
    """Images and masks that are links into another disk (folders and single files); refused
    before as 'image ... is not under root ...'."""
    storage = write_own_data(tmp_path / "storage" / "real", n_labeled=12, n_unlabeled=0)
    root = tmp_path / "linked"
    (root / "images").mkdir(parents=True)
    os.symlink(storage / "images" / "train", root / "images" / "train")          # a linked folder
    (root / "images" / "val").mkdir()
    for image in (storage / "images" / "val").rglob("*.jpg"):                   # linked files
        (root / "images" / "val" / image.parent.name).mkdir(exist_ok=True)
        os.symlink(image, root / "images" / "val" / image.parent.name / image.name)
    os.symlink(storage / "annotations", root / "annotations")
    os.symlink(root / "images" / "train", root / "images" / "train" / "north" / "loop")  # a cycle ends
    run = tmp_path / "run"
    argv = ["--data-root", str(root), "--run-dir", str(run), "--strategy", "entropy", "--cycles", "2", "--initial", "4",
            "--budget", "2", "--subset", "4", *TINY_RUN, *_sets(f"data.label_map={storage / 'label_map.csv'}")]
    assert seg_main(argv) == 0
    rows = list(csv.DictReader((run / "selections" / "cycle_01.csv").open()))
    assert len(rows) == 2 and all(r["path"].startswith("images/train/") for r in rows)
    assert all((root / r["path"]).is_file() for r in rows)


def test_images_of_mixed_sizes_are_batched_by_size(tmp_path: Path, capsys) -> None:
    samples = [(torch.zeros(3, h, 8), torch.zeros(h, 8), i) for i, h in enumerate([4, 4, 6, 4, 6, 6])]
    runs = collate_same_size(samples)
    assert [r[2].tolist() for r in runs] == [[0, 1], [2], [3], [4, 5]]  # order kept, nothing padded

    root = write_own_data(tmp_path / "my_data", n_train=10, n_labeled=10, n_val=4, n_unlabeled=0)
    for k, path in enumerate(sorted((root / "images").rglob("*.jpg"))):  # every third image 80x96
        if k % 3 == 0:
            image, label = street_scene(np.random.default_rng(k), (80, 96))
            Image.fromarray(image).save(path, quality=95)
            mask = root / "annotations" / path.relative_to(root / "images").parent / f"{path.stem}_labelIds.png"
            Image.fromarray(label).save(mask)
    run = tmp_path / "run"
    argv = ["--data-root", str(root), "--run-dir", str(run), "--strategy", "tavaal", "--cycles", "2", "--initial", "4",
            "--budget", "3", "--subset", "6", *TINY_RUN, *_sets(f"data.label_map={root / 'label_map.csv'}")]
    assert seg_main(argv) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "images of several sizes" in line]
    assert len(said) == 1 and "96x80" in said[0] and "96x64" in said[0]  # once, with the sizes
    assert len(list(csv.DictReader((run / "selections" / "cycle_01.csv").open()))) == 3
    assert len(json.loads((run / "selections" / "cycle_01.preview.json").read_text())["picks"]) == 3

    # predictions on a batch of both sizes come back in order, each mask at its own image's size
    adapter = SegmentationAdapter(_cfg(f"data.label_map={root / 'label_map.csv'}", "device=cpu"), root)
    cpu = torch.device("cpu")
    preds = list(predict(adapter.build_model(), adapter, np.arange(10), 4, Precision(cpu, False), cpu, True))
    assert [i for i, _ in preds] == list(range(10))
    sizes = [displayed_image_size(adapter.train_items[i].image)[::-1] for i in range(10)]
    assert [p.mask.shape for _, p in preds] == sizes and set(sizes) == {(80, 96), (64, 96)}

    # new images of both sizes are ranked at their native sizes too
    new = tmp_path / "new"
    new.mkdir()
    for k, size in enumerate([(80, 96), (64, 96), (64, 96)]):
        Image.fromarray(street_scene(np.random.default_rng(100 + k), size)[0]).save(new / f"n{k}.png")
    result = rank_images(run, new, budget=2, out=tmp_path / "ranking.csv")
    assert len(result.ranking.images) == 3 and len(result.ranking.picks.items) == 2


def test_a_bad_mask_read_in_a_dataloader_worker_is_one_line(tmp_path: Path, capsys) -> None:
    root = write_own_data(tmp_path / "my_data", n_train=6, n_labeled=6, n_val=2, n_unlabeled=0)
    Image.fromarray(np.full((64, 96), 99, np.uint8)).save(root / "annotations/val/south/val_001_labelIds.png")
    argv = ["--data-root", str(root), "--run-dir", str(tmp_path / "run"), "--strategy", "random", "--cycles", "1",
            "--initial", "4", *TINY_RUN, *_sets(f"data.label_map={root / 'label_map.csv'}", "data.num_workers=1")]
    assert seg_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("al_seg.py: error: mask ") and "val_001_labelIds.png: contains raw value(s) [99]" in err
    assert "Traceback" not in err and "DataLoader worker" not in err


def test_initial_existing_needs_human_mode_and_some_labels(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match=r"labels.initial_existing: expected false unless labels.mode is human"):
        _cfg("labels.initial_existing=true")
    root = write_own_data(tmp_path / "my_data", n_train=6, n_labeled=0, n_val=2, n_unlabeled=0)
    argv = ["--data-root", str(root), "--run-dir", str(tmp_path / "run"), "--cycles", "2", "--budget", "2", *TINY_RUN,
            *_sets(f"data.label_map={root / 'label_map.csv'}", "labels.mode=human", "labels.initial_existing=true")]
    assert seg_main(argv) == 2
    assert "labels.initial_existing: none of the 6 pool images has a label yet (e.g. annotations/train/north/" \
           "train_000_labelIds.png)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "state.json").exists()
