"""What the masks' values mean, as a config says it: ``data.classes``, ``data.label_map`` (source
ids -> train ids) and ``data.palette`` (colour masks), each inline in the YAML or in a file, made
into the :class:`~tavaal_seg.segmentation.data.classes.ClassTable` the masks are read with.

Files read here:
- label map: ``.yaml``/``.yml``/``.json`` mapping ``{source id: train id}``, or a ``.csv`` whose
  first two columns are the source id and the train id (a header row is skipped);
- palette: ``.csv`` with columns ``name,r,g,b`` (CamVid's ``class_dict.csv``), a CVAT
  ``labelmap.txt`` (``name:r,g,b:parts:actions`` lines, from a "Segmentation mask" export), or a
  ``.yaml``/``.yml``/``.json`` mapping ``{name: [r, g, b]}``.
"""
from __future__ import annotations

import csv
import io
import json
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ...core.errors import ConfigError, InputNotFound
from .classes import ClassTable, folder_table, palette_table

__all__ = ["read_label_map", "read_palette", "class_table_for"]

Color = tuple[int, int, int]


def _read_text(path: Path, key: str) -> str:
    if not path.is_file():
        raise InputNotFound(f"{key}: file {path} does not exist")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{key}: cannot read {path} ({err}); expected a UTF-8 text file") from err


def _read_mapping(path: Path, key: str) -> Any:
    text = _read_text(path, key)
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{key}: {path} is not valid {path.suffix.lstrip('.').upper()} ({err})") from err


def _int(value: Any, key: str, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{key}: {what} {value!r} is not an integer") from None


def read_label_map(value: Mapping[Any, Any] | str, key: str = "data.label_map") -> dict[int, int]:
    """``{source id: train id}`` from an inline mapping or a file (see the module docstring)."""
    where = key
    if isinstance(value, str):
        path = Path(value)
        where = f"{key} {path}"
        if path.suffix.lower() == ".csv":
            rows = [r for r in csv.reader(io.StringIO(_read_text(path, key))) if r and any(c.strip() for c in r)]
            if rows and not rows[0][0].strip().lstrip("-").isdigit():
                rows = rows[1:]  # header
            bad = [r for r in rows if len(r) < 2]
            if bad:
                raise ConfigError(f"{where}: expected rows 'source_id,train_id', got {bad[0]}")
            value = {r[0]: r[1] for r in rows}
        else:
            value = _read_mapping(path, key)
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{where}: expected a non-empty mapping of source id -> train id, got {value!r}")
    out: dict[int, int] = {}
    for raw, train in value.items():
        source = _int(raw, where, "source id")
        if source in out:
            raise ConfigError(f"{where}: source id {source} is mapped twice")
        out[source] = _int(train, where, f"train id of source id {source}:")
    return out


def _color(value: Any, where: str, name: str) -> Color:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ConfigError(f"{where}: colour of {name!r} must be [r, g, b] with values 0..255, got {value!r}")
    return rgb  # type: ignore[return-value]


def _palette_csv(path: Path, key: str) -> list[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(_read_text(path, key)))
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    if not {"name", "r", "g", "b"} <= set(columns):
        raise ConfigError(f"{key} {path}: expected a CSV header with columns name,r,g,b (CamVid class_dict.csv), "
                          f"got {reader.fieldnames}")
    return [(row[columns["name"]].strip(), [row[columns[c]] for c in "rgb"]) for row in reader]


def _palette_cvat(path: Path, key: str) -> list[tuple[str, Any]]:
    entries = []
    for lineno, line in enumerate(_read_text(path, key).splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 2:
            raise ConfigError(f"{key} {path}:{lineno}: expected 'name:r,g,b:parts:actions' (CVAT labelmap.txt), "
                              f"got {line!r}")
        entries.append((parts[0].strip(), parts[1]))
    return entries


def _palette_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of class name -> [r, g, b], got {type(value).__name__}")
    return value


def _palette_yaml(path: Path, key: str) -> list[tuple[str, Any]]:
    return list(_palette_mapping(_read_mapping(path, key), f"{key} {path}").items())


PALETTE_READERS: Mapping[str, Callable[[Path, str], list[tuple[str, Any]]]] = types.MappingProxyType({
    ".csv": _palette_csv, ".txt": _palette_cvat, ".yaml": _palette_yaml, ".yml": _palette_yaml, ".json": _palette_yaml,
})


def read_palette(value: Sequence[Any] | Mapping[str, Any] | str, classes: Sequence[str] | None,
                 key: str = "data.palette") -> list[tuple[str, Color]]:
    """(name, colour) pairs in palette order from a list of colours aligned with ``classes``, a
    mapping name -> colour, or a file (see the module docstring)."""
    where = key
    if isinstance(value, str):
        path = Path(value)
        reader = PALETTE_READERS.get(path.suffix.lower())
        if reader is None:
            raise ConfigError(f"{key}: {path}: expected a .csv (name,r,g,b), a CVAT labelmap .txt or a "
                              f".yaml/.json mapping name -> [r, g, b]")
        entries = reader(path, key)
        where = f"{key} {path}"
    elif isinstance(value, Mapping):
        entries = list(value.items())
    else:
        if classes is None or len(classes) != len(value):
            raise ConfigError(f"{key}: a list of colours needs data.classes of the same length (one colour per "
                              f"class, in order), got {len(value)} colours and "
                              f"{'no classes' if classes is None else f'{len(classes)} classes'}")
        entries = list(zip(classes, value))
    if not entries:
        raise ConfigError(f"{where}: the palette is empty")
    colors = [(str(name), _color(c, where, str(name))) for name, c in entries]
    seen: dict[Color, str] = {}
    for name, c in colors:
        if c in seen:
            raise ConfigError(f"{where}: colour {c} is given to both {seen[c]!r} and {name!r}")
        seen[c] = name
    return colors


def class_table_for(dataset: str, default_table: Callable[..., ClassTable] | None, classes: Sequence[str] | None,
                    ignore_index: int, label_map: Mapping[Any, Any] | str | None,
                    palette: Sequence[Any] | Mapping[str, Any] | str | None) -> ClassTable:
    """The class table a config describes: a palette (colour masks), a label map (source ids ->
    train ids, with ``data.classes``), class names (raw values 0..n-1), or the dataset's own table."""
    try:
        if palette is not None:
            return palette_table(read_palette(palette, classes), classes, ignore_index)
        if label_map is not None:
            if not classes:
                raise ConfigError("data.label_map needs data.classes: the names of the train ids it maps to")
            return folder_table(classes, ignore_index, id_map=read_label_map(label_map))
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"data.{'palette' if palette is not None else 'label_map'}: {err}") from None
    if classes:
        return folder_table(classes, ignore_index=ignore_index)
    if default_table is None:
        raise ConfigError(f"data.classes: the {dataset} dataset needs a list of class names "
                          "(or data.palette / data.label_map)")
    return default_table(ignore_index=ignore_index)
