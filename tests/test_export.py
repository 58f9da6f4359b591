"""Selection exporters (csv, jsonl, Label Studio, CVAT, Labelbox, SageMaker, Scale) and the
``tools/export_selection.py`` command. Records are built by hand: no training, no data set."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tavaal_seg.core.export import (
    CSV_COLUMNS,
    EXPORTERS,
    ExportContext,
    check_export_options,
    export_path,
    export_selection,
    item_uri,
    render_export,
    write_export,
)
from tavaal_seg.core.export_cli import main
from tavaal_seg.core.state import RunState, SelectedItem, SelectionRecord

REPO = Path(__file__).resolve().parents[1]
S3 = "s3://bucket/data/"
HTTPS = "https://host.example/data"
CLASSES = ("road", "car")
TRICKY_IDS = ["straße ü 東京", 'a,"b" c', "it's here", "two\nlines"]


def record(cycle: int = 1, items: list[tuple[str, str, float]] | None = None) -> SelectionRecord:
    items = items if items is not None else [("aachen_000000_000019", "leftImg8bit/train/aachen/a_19.png", 0.125),
                                             ("bonn_000001_000002", "leftImg8bit/train/bonn/b 2.png", 0.5)]
    return SelectionRecord(cycle, "tavaal", [SelectedItem(i + 1, iid, p, s) for i, (iid, p, s) in enumerate(items)])


def render(fmt: str, rec: SelectionRecord | None = None, **ctx) -> str:
    return render_export(rec or record(), fmt, ExportContext(**ctx))


def write_png(root: Path, rel: str, size: tuple[int, int]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


# ---------------------------------------------------------------------------------- formats

def test_csv_keeps_the_run_columns_and_adds_uri_only_with_a_prefix():
    text = render("csv")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert rows[0] == {"rank": "1", "image_id": "aachen_000000_000019", "path": "leftImg8bit/train/aachen/a_19.png",
                       "score": "0.125", "cycle": "1", "strategy": "tavaal"}
    with_uri = list(csv.DictReader(io.StringIO(render("csv", uri_prefix=HTTPS), newline="")))
    assert list(with_uri[1]) == [*CSV_COLUMNS, "uri"]
    assert with_uri[1]["uri"] == "https://host.example/data/leftImg8bit/train/bonn/b%202.png"


def test_jsonl_one_object_per_line():
    lines = render("jsonl", uri_prefix=S3).splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1]) == {"rank": 2, "image_id": "bonn_000001_000002", "score": 0.5, "cycle": 1,
                                    "path": "leftImg8bit/train/bonn/b 2.png", "strategy": "tavaal",
                                    "uri": "s3://bucket/data/leftImg8bit/train/bonn/b 2.png"}
    assert "uri" not in json.loads(render("jsonl").splitlines()[0])


def test_labelstudio_local_files_without_prefix_and_url_with_one():
    tasks = json.loads(render("labelstudio"))
    assert tasks[1] == {
        "data": {"image": "/data/local-files/?d=leftImg8bit/train/bonn/b%202.png", "image_id": "bonn_000001_000002",
                 "path": "leftImg8bit/train/bonn/b 2.png", "rank": 2, "score": 0.5, "cycle": 1},
        # the prediction score is the label priority (2 items: 1.0 for rank 1, 0.5 for rank 2)
        "predictions": [{"model_version": "tavaal-tavaal-cycle01", "score": 0.5, "result": []}],
    }
    assert tasks[0]["predictions"][0]["score"] == 1.0
    tasks = json.loads(render("labelstudio", uri_prefix=HTTPS))
    assert tasks[0]["data"]["image"] == "https://host.example/data/leftImg8bit/train/aachen/a_19.png"


def test_cvat_manifest_has_header_and_true_image_sizes(tmp_path):
    write_png(tmp_path, "leftImg8bit/train/aachen/a_19.png", (7, 5))
    write_png(tmp_path, "leftImg8bit/train/bonn/b 2.png", (3, 11))
    lines = [json.loads(line) for line in render("cvat", data_root=tmp_path).splitlines()]
    assert lines == [{"version": "1.0"}, {"type": "images"},
                     {"name": "leftImg8bit/train/aachen/a_19", "extension": ".png", "width": 7, "height": 5},
                     {"name": "leftImg8bit/train/bonn/b 2", "extension": ".png", "width": 3, "height": 11}]
    exif = Image.Exif()
    exif[274] = 6  # stored sideways: CVAT shows it rotated, so the manifest swaps the sides
    Image.new("RGB", (8, 2)).save(tmp_path / "rot.jpg", exif=exif)
    rot = record(items=[("rot", "rot.jpg", 0.0)])
    assert json.loads(render("cvat", rot, data_root=tmp_path).splitlines()[2]) == {
        "name": "rot", "extension": ".jpg", "width": 2, "height": 8}


def test_cvat_needs_image_files(tmp_path):
    with pytest.raises(ValueError, match="cvat needs image files"):
        render("cvat")  # no data root
    pseudo = record(items=[("c10_12", "cifar-10-batches-py/data_batch_1#12", 0.1)])
    with pytest.raises(ValueError, match=r"cifar-10-batches-py/data_batch_1#12.*cvat needs image files"):
        render("cvat", pseudo, data_root=tmp_path)


def test_labelbox_rows_and_unique_global_keys():
    rows = json.loads(render("labelbox", uri_prefix=HTTPS))
    assert rows[0] == {"row_data": "https://host.example/data/leftImg8bit/train/aachen/a_19.png",
                       "global_key": "aachen_000000_000019", "media_type": "IMAGE"}
    assert len({r["global_key"] for r in rows}) == len(rows)
    dup = record(items=[("same", "a.png", 0.1), ("same", "b.png", 0.2)])
    with pytest.raises(ValueError, match="global keys must be unique.*same"):
        render("labelbox", dup, uri_prefix=HTTPS)


def test_sagemaker_manifest_needs_s3():
    lines = [json.loads(line) for line in render("sagemaker", uri_prefix="s3://bucket/data").splitlines()]
    assert lines[0] == {"source-ref": "s3://bucket/data/leftImg8bit/train/aachen/a_19.png",
                        "image-id": "aachen_000000_000019", "tavaal-rank": 1, "tavaal-score": 0.125,
                        "tavaal-cycle": 1, "tavaal-strategy": "tavaal"}
    with pytest.raises(ValueError, match="s3://"):
        render("sagemaker", uri_prefix=HTTPS)


def test_scale_tasks_carry_labels_and_metadata():
    tasks = json.loads(render("scale", uri_prefix=S3, class_names=CLASSES))
    assert tasks[0] == {"attachment": "s3://bucket/data/leftImg8bit/train/aachen/a_19.png",
                        "attachment_type": "image", "unique_id": "aachen_000000_000019", "labels": ["road", "car"],
                        "metadata": {"image_id": "aachen_000000_000019", "path": "leftImg8bit/train/aachen/a_19.png",
                                     "rank": 1, "score": 0.125, "cycle": 1, "strategy": "tavaal"}}
    with pytest.raises(ValueError, match="class_names"):
        render("scale", uri_prefix=S3)


# ---------------------------------------------------------------------------------- ids, paths, URIs

def test_tricky_ids_round_trip_through_csv_and_json():
    rec = record(items=[(iid, f"img/{i}.png", 0.1 * i) for i, iid in enumerate(TRICKY_IDS)])
    rows = list(csv.DictReader(io.StringIO(render("csv", rec), newline="")))
    assert [r["image_id"] for r in rows] == TRICKY_IDS
    assert [json.loads(line)["image_id"] for line in render("jsonl", rec).splitlines()] == TRICKY_IDS
    assert "東京" in render("jsonl", rec)  # ensure_ascii=False
    assert [t["data"]["image_id"] for t in json.loads(render("labelstudio", rec))] == TRICKY_IDS
    assert [r["global_key"] for r in json.loads(render("labelbox", rec, uri_prefix=S3))] == TRICKY_IDS


def test_tricky_paths_are_encoded_for_urls_and_kept_verbatim_for_buckets():
    path = "dir ü/a,\"b\" #1?.png"
    encoded = "dir%20%C3%BC/a%2C%22b%22%20%231%3F.png"
    assert item_uri(path, ExportContext(uri_prefix="https://h/x//")) == "https://h/x/" + encoded
    assert item_uri(path, ExportContext(uri_prefix="s3://b")) == "s3://b/" + path
    assert item_uri(path, ExportContext()) is None
    rows = list(csv.DictReader(io.StringIO(render("csv", record(items=[("x", path, 1.0)])), newline="")))
    assert rows[0]["path"] == path


@pytest.mark.parametrize("bad", ["../secret.png", "a/../../b.png", "/etc/passwd", "C:/x.png", "a\\b.png", "",
                                 "./a.png"])
def test_paths_outside_the_data_root_are_refused(bad):
    rec = record(items=[("evil", bad, 0.0)])
    for fmt in ("csv", "labelstudio"):
        with pytest.raises(ValueError, match="exports never point outside the data root") as err:
            render(fmt, rec)
        assert "'evil'" in str(err.value)


def test_file_names_never_contain_image_ids(tmp_path):
    rec = record(cycle=3, items=[("../../escape", "ok.png", 0.0)])
    out = export_selection(rec, tmp_path / "sel", "jsonl", ExportContext())
    assert out == tmp_path / "sel" / "cycle_03.jsonl" == export_path(tmp_path / "sel", 3, "jsonl")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["cycle_03.jsonl"]
    assert export_selection(rec, tmp_path / "sel").name == "cycle_03.csv"  # the loop's call keeps working


@pytest.mark.parametrize("fmt", ["labelbox", "sagemaker", "scale"])
def test_formats_needing_a_uri_refuse_without_prefix(fmt):
    with pytest.raises(ValueError, match=r"export\.uri_prefix.*--uri-prefix"):
        render(fmt, class_names=CLASSES)
    with pytest.raises(ValueError, match=r"export\.uri_prefix.*--uri-prefix"):
        check_export_options([fmt], None)


def test_check_export_options():
    check_export_options(list(EXPORTERS), "s3://bucket/data")
    check_export_options(["csv", "labelstudio", "cvat", "jsonl"], None)
    with pytest.raises(ValueError, match=r"export\.formats.*'tsv'.*csv, jsonl, labelstudio, cvat, labelbox"):
        check_export_options(["csv", "tsv"], None)
    with pytest.raises(ValueError, match=r"--format.*'tsv'"):
        check_export_options(["tsv"], None, key="--format")
    with pytest.raises(ValueError, match="sagemaker.*s3://"):
        check_export_options(["sagemaker"], "gs://bucket/")
    for prefix in ("bucket/data", "ftp://host/x", "file:///data", "https://", "https://h/x?sig=1"):
        with pytest.raises(ValueError, match=r"export\.uri_prefix"):
            check_export_options(["csv"], prefix)
    with pytest.raises(ValueError, match="export.uri_prefix"):
        ExportContext(uri_prefix="data/")


def test_write_export_writes_exactly_out_and_refuses_directories(tmp_path):
    out = tmp_path / "mine.json"
    assert write_export(record(), "labelstudio", ExportContext(), out) == out
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 2
    with pytest.raises(ValueError, match="is a directory"):
        write_export(record(), "csv", ExportContext(), tmp_path)


def test_non_finite_scores_stay_valid_json():
    rec = record(items=[("a", "a.png", float("inf"))])
    assert json.loads(render("labelstudio", rec))[0]["data"]["score"] is None
    assert list(csv.DictReader(io.StringIO(render("csv", rec))))[0]["score"] == "inf"


# ---------------------------------------------------------------------------------- command line

@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_png(data, "img/a 1.png", (4, 6))
    write_png(data, "img/b.png", (9, 2))
    write_png(data, "img/c.png", (1, 1))
    run = tmp_path / "run"
    state = RunState(seed=0, strategy="tavaal", pool_size=3, class_names=list(CLASSES))
    state.add_selection(record(0, [("c", "img/c.png", 0.9)]))
    state.add_selection(record(1, [("a 1", "img/a 1.png", 0.25), ('b,"x"', "img/b.png", 0.75)]))
    state.save(run / "state.json")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(data)},
                                                     "export": {"formats": ["csv"], "uri_prefix": S3}}))
    return run


def test_cli_exports_every_format_to_the_default_folder_and_to_out(run_dir, tmp_path, capsys):
    for name, exporter in EXPORTERS.items():
        assert main([str(run_dir), "--cycle", "1", "--format", name]) == 0
        path = run_dir / "exports" / f"cycle_01{exporter.suffix}"
        assert capsys.readouterr().out.strip() == str(path)
        text = path.read_text(encoding="utf-8")
        assert "a 1" in text and text.endswith("\n")
        out = tmp_path / f"copy{exporter.suffix}"
        assert main([str(run_dir), "--cycle", "1", "--format", name, "--out", str(out)]) == 0
        assert out.read_text(encoding="utf-8") == text
        assert capsys.readouterr().out.strip() == str(out)
    cvat = (run_dir / "exports" / "cycle_01.cvat-manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert [(d["width"], d["height"]) for d in map(json.loads, cvat[2:])] == [(4, 6), (9, 2)]
    sm = [json.loads(line) for line in (run_dir / "exports" / "cycle_01.sagemaker.manifest").read_text().splitlines()]
    assert sm[0]["source-ref"] == "s3://bucket/data/img/a 1.png"   # export.uri_prefix from config.yaml
    assert main([str(run_dir), "--cycle", "1", "--format", "labelbox", "--uri-prefix", HTTPS]) == 0
    capsys.readouterr()
    rows = json.loads((run_dir / "exports" / "cycle_01.labelbox.json").read_text())
    assert rows[0]["row_data"] == "https://host.example/data/img/a%201.png"  # --uri-prefix wins
    assert main([str(run_dir), "--cycle", "all", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == [str(run_dir / "exports" / "cycle_00.csv"),
                                               str(run_dir / "exports" / "cycle_01.csv")]


def test_cli_bad_input_exits_2_with_a_message(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "--cycle", "7", "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert "export_selection.py: error: cycle 7 has no selection" in err and "cycles with selections: 0, 1" in err
    assert main([str(run_dir), "--cycle", "1", "--format", "csv", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main([str(run_dir), "--cycle", "1", "--format", "csv", "--out", str(tmp_path / "no" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(run_dir), "--cycle", "1", "--format", "tsv"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main([str(tmp_path), "--cycle", "1", "--format", "csv"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main([str(run_dir), "--cycle", "all", "--format", "csv", "--out", str(tmp_path / "x.csv")]) == 2
    assert "single --cycle" in capsys.readouterr().err
    assert main([str(run_dir), "--cycle", "1", "--format", "sagemaker", "--uri-prefix", HTTPS]) == 2
    assert "s3://" in capsys.readouterr().err
    assert not (run_dir / "exports").exists()


def test_cli_help_runs_as_a_script():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "export_selection.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name, exporter in EXPORTERS.items():
        assert name in done.stdout and exporter.suffix in done.stdout
    assert "--uri-prefix" in done.stdout and "--out" in done.stdout
