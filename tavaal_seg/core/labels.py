"""Labels coming back from people: id lists and ``image_id,label`` CSV files.

Files are read with the ``csv`` module as UTF-8 (a BOM from spreadsheet exports is accepted),
so ids with spaces, commas, quotes or non-ASCII characters survive the round trip through a
selection export and back. Every error names the file, the line and what was expected.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import DataError, InputNotFound
from .runtime import atomic_write_text

LABEL_COLUMNS = ("image_id", "label")


class LabelsNeeded(RuntimeError):
    """The run cannot go on until people label the listed images (human mode)."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


def _read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputNotFound(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what} {path}: {err} (expected a UTF-8 text file)") from err


def read_id_list(path: Path, what: str = "id list") -> list[str]:
    """Image ids from ``path``: either one id per line (blank lines skipped), or any CSV with an
    ``image_id`` column (e.g. an exported selection, ``selections/cycle_NN.csv``)."""
    text = _read_text(path, what)
    rows = list(csv.reader(io.StringIO(text)))
    if rows and "image_id" in rows[0]:
        column = rows[0].index("image_id")
        entries = [(n, row[column]) for n, row in enumerate(rows[1:], 2) if row and len(row) > column]
    else:
        entries = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, image_id in entries:
        if image_id in first_line:
            raise DataError(f"{what} {path}:{lineno}: duplicate image id {image_id!r} (first on line "
                            f"{first_line[image_id]})")
        first_line[image_id] = lineno
        ids.append(image_id)
    return ids


def read_labels_csv(path: Path) -> dict[str, str]:
    """``image_id,label`` rows (header required; other columns ignored) -> {image id: label}."""
    text = _read_text(path, "labels file")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not set(LABEL_COLUMNS) <= set(reader.fieldnames):
        raise DataError(f"labels file {path}: expected a CSV header with columns image_id,label, got "
                        f"{reader.fieldnames}")
    labels: dict[str, str] = {}
    for row in reader:
        lineno = reader.line_num
        image_id, label = row["image_id"], row["label"]
        if image_id is None or label is None or label == "":
            raise DataError(f"labels file {path}:{lineno}: expected image_id,label, got {row}")
        if labels.get(image_id, label) != label:
            raise DataError(f"labels file {path}:{lineno}: image {image_id!r} is labeled both "
                            f"{labels[image_id]!r} and {label!r}")
        labels[image_id] = label
    if not labels:
        raise DataError(f"labels file {path} holds no image_id,label rows")
    return labels


def labels_csv(labels: Mapping[str, str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    writer.writerows(sorted(labels.items()))
    return buffer.getvalue()


def write_labels_csv(path: Path, labels: Mapping[str, str]) -> None:
    atomic_write_text(path, labels_csv(labels))


def needed_csv(rows: Iterable[tuple[str, str, str]]) -> str:
    """``image_id,path,label_path``: what to label and (segmentation) where each mask goes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("image_id", "path", "label_path"))
    writer.writerows(rows)
    return buffer.getvalue()
