"""Selection lists for labeling tools and vendors: one registry, one small render function each.

Every exporter turns one :class:`SelectionRecord` (the images a cycle picked, best first) into
the text a labeling tool imports; the file is ``cycle_NN<suffix>``:

- ``csv`` (``.csv``): ``rank,image_id,path,score,cycle,strategy``, plus ``uri`` with a prefix;
- ``jsonl`` (``.jsonl``): the same fields, one JSON object per line;
- ``labelstudio`` (``.labelstudio.json``): Label Studio tasks; the prediction score is the label
  priority (1 for the first pick down to 1/n; sort descending), the raw score rides in ``data``;
  with pre-annotations the prediction's ``result`` holds the model's brush masks or choice;
- ``cvat`` (``.cvat-manifest.jsonl``): a CVAT image manifest with each image's width/height;
- ``labelbox`` (``.labelbox.json``): Labelbox data rows (``row_data`` URI, ``global_key``);
- ``sagemaker`` (``.sagemaker.manifest``): a Ground Truth input manifest (``source-ref``);
- ``scale`` (``.scale.json``): Scale AI task payloads (``attachment``, ``labels``).

``path`` is always relative to the data root; formats whose tool fetches the image itself
(Labelbox, SageMaker, Scale) turn it into a URI with ``export.uri_prefix`` and refuse to run
without one. Exports never name a file outside the data root: a path that is absolute, has a
drive letter or a ``..`` segment is refused, and output file names carry only the cycle number,
never an image id.
"""
from __future__ import annotations

import csv
import io
import json
import math
import types
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from .errors import BadInput
from .labelstudio import PreAnnotation, prediction_results
from .runtime import atomic_write_text, displayed_image_size
from .state import SelectedItem, SelectionRecord

CSV_COLUMNS = ("rank", "image_id", "path", "score", "cycle", "strategy")
URI_SCHEMES = ("s3", "gs", "https", "http")
PREFIX_KEY = "export.uri_prefix / --uri-prefix"  # where a user sets the prefix, for error messages


class ExportError(BadInput, ValueError):
    """An export cannot be written as asked; the message names the item, path or option."""


@dataclass(frozen=True)
class ExportContext:
    """What an exporter may need beyond the selection itself."""

    data_root: Path | None = None          # dataset root; needed to read image width/height (cvat)
    uri_prefix: str | None = None          # e.g. "s3://bucket/data/" or "https://host/data/"
    class_names: tuple[str, ...] = ()      # the label set (Scale's ``labels``)
    # Label Studio pre-annotations by image id, and the labeling config's tag names they use
    pre_annotations: Mapping[str, PreAnnotation] = field(default_factory=dict)
    labelstudio_from_name: str | None = None
    labelstudio_to_name: str = "image"

    def __post_init__(self) -> None:
        # validated here so that no exporter ever sees a prefix it would join wrongly
        if self.uri_prefix is not None:
            _check_prefix(self.uri_prefix)
        if self.data_root is not None and not isinstance(self.data_root, Path):
            object.__setattr__(self, "data_root", Path(self.data_root))
        object.__setattr__(self, "class_names", tuple(self.class_names))


@dataclass(frozen=True)
class Exporter:
    name: str
    suffix: str                                        # file name ending after ``cycle_NN``
    render: Callable[[SelectionRecord, ExportContext], str]
    needs_uri: str | None                              # None, or why/which URI the tool needs
    description: str
    uri_schemes: tuple[str, ...] = URI_SCHEMES         # prefixes this tool can fetch from


# ---------------------------------------------------------------------------------- locations

@dataclass(frozen=True)
class _Located:
    item: SelectedItem
    path: str               # checked, relative, POSIX
    uri: str | None         # None without a prefix


def safe_relative_path(path: str, image_id: str | None = None) -> str:
    """Return ``path`` if it is a normalized relative POSIX path, else raise ExportError.

    Labeling tools resolve these paths against a root they were given; an absolute path, a
    drive, a backslash (a Windows separator) or a ``..`` segment would point somewhere else.
    """
    who = f"item {image_id!r}: " if image_id is not None else ""
    problem = None
    if not isinstance(path, str) or not path:
        problem = "is empty"
    elif "\x00" in path:
        problem = "contains a NUL character"
    elif path.startswith("/"):
        problem = "is absolute"
    elif "\\" in path:
        problem = "contains a backslash (paths are POSIX, relative to the data root)"
    elif len(path) >= 2 and path[1] == ":" and path[0].isalpha():
        problem = "starts with a drive letter"
    elif any(part == ".." for part in path.split("/")):
        problem = "has a '..' segment"
    elif any(part in ("", ".") for part in path.split("/")):
        problem = "is not normalized (empty or '.' segment)"
    if problem:
        raise ExportError(f"{who}path {path!r} {problem}; exports never point outside the data root")
    return path


def item_uri(path: str, ctx: ExportContext) -> str | None:
    """The URI a labeling tool fetches ``path`` from: the prefix, exactly one ``/``, the path.

    http(s) URIs are URLs, so the path is percent-encoded (``quote(path, safe="/")``).
    ``s3://`` and ``gs://`` URIs name an object key verbatim (the AWS/GCS tools and SageMaker
    read ``s3://bucket/a b.png`` as the key ``a b.png``); encoding them would name another key.
    """
    if ctx.uri_prefix is None:
        return None
    safe_relative_path(path)
    scheme = urlsplit(ctx.uri_prefix).scheme.lower()
    tail = quote(path, safe="/") if scheme in ("http", "https") else path
    return ctx.uri_prefix.rstrip("/") + "/" + tail


def _locate(record: SelectionRecord, ctx: ExportContext) -> list[_Located]:
    """The one place every exporter gets its paths and URIs from (all checked first)."""
    return [_Located(it, safe_relative_path(it.path, it.image_id), item_uri(it.path, ctx))
            for it in record.items]


def _need_uris(located: list[_Located], fmt: str) -> list[str]:
    if any(loc.uri is None for loc in located):
        raise ExportError(f"format {fmt!r} needs image URLs: {EXPORTERS[fmt].needs_uri}; "
                          f"set {PREFIX_KEY} (e.g. s3://bucket/data/ or https://host/data/)")
    return [loc.uri for loc in located]  # type: ignore[misc]


def _score(value: float) -> float | None:
    # JSON has no NaN/Infinity; a tool reading them would reject the whole file
    value = float(value)
    return value if math.isfinite(value) else None


def _check_prefix(prefix: str) -> None:
    parts = urlsplit(prefix) if isinstance(prefix, str) else None
    if parts is None or parts.scheme.lower() not in URI_SCHEMES or not parts.netloc:
        raise ExportError(f"{PREFIX_KEY}: expected a URI prefix starting with "
                          f"{', '.join(s + '://' for s in URI_SCHEMES)} and naming a bucket or host, "
                          f"got {prefix!r}")
    if parts.query or parts.fragment or "?" in prefix or "#" in prefix:
        raise ExportError(f"{PREFIX_KEY}: a prefix cannot carry a query or fragment ('?', '#'), got {prefix!r}")


def _dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent)


# ---------------------------------------------------------------------------------- renderers

def render_csv(record: SelectionRecord, ctx: ExportContext) -> str:
    located = _locate(record, ctx)
    with_uri = ctx.uri_prefix is not None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(["uri"] if with_uri else [])])
    for loc in located:
        it = loc.item
        # repr(float): the shortest text that reads back to the same float (what runs always wrote)
        writer.writerow([it.rank, it.image_id, loc.path, repr(float(it.score)), record.cycle, record.strategy,
                         *([loc.uri] if with_uri else [])])
    return buffer.getvalue()


def _fields(record: SelectionRecord, loc: _Located) -> dict[str, Any]:
    return {"rank": loc.item.rank, "image_id": loc.item.image_id, "path": loc.path,
            "score": _score(loc.item.score), "cycle": record.cycle, "strategy": record.strategy}


def render_jsonl(record: SelectionRecord, ctx: ExportContext) -> str:
    lines = []
    for loc in _locate(record, ctx):
        row = _fields(record, loc)
        if loc.uri is not None:
            row["uri"] = loc.uri
        lines.append(_dumps(row))
    return "".join(line + "\n" for line in lines)


def label_priority(rank: int, n: int) -> float:
    """1.0 for the first pick down to 1/n for the last: one direction for every strategy (their
    raw scores run both ways: the lowest discriminator score is picked first, the highest entropy)."""
    return (n - rank + 1) / n


def render_labelstudio(record: SelectionRecord, ctx: ExportContext) -> str:
    tasks = []
    n = len(record.items)
    for loc in _locate(record, ctx):
        # without a prefix: Label Studio's local-files storage, served relative to
        # LOCAL_FILES_DOCUMENT_ROOT (point it, or a local storage, at the data root)
        image = loc.uri if loc.uri is not None else "/data/local-files/?d=" + quote(loc.path, safe="/")
        it = loc.item
        pre = ctx.pre_annotations.get(it.image_id)
        result = [] if pre is None else prediction_results(pre, ctx.class_names, ctx.labelstudio_from_name,
                                                            ctx.labelstudio_to_name)
        tasks.append({
            "data": {"image": image, "image_id": it.image_id, "path": loc.path, "rank": it.rank,
                     "score": _score(it.score), "cycle": record.cycle},
            # the prediction's score is what the Data Manager sorts by: the label priority (higher =
            # label first) rather than the raw score, whose direction varies; its result is the
            # model's prediction when pre-annotations were made, else empty
            "predictions": [{"model_version": f"tavaal-{record.strategy}-cycle{record.cycle:02d}",
                             "score": label_priority(it.rank, n), "result": result}],
        })
    # one task per line: readable, and brush masks (long byte lists) stay compact
    return "[\n" + ",\n".join(_dumps(task) for task in tasks) + "\n]\n"


def _image_size(root: Path, rel: str, image_id: str) -> tuple[int, int]:
    file = root / rel
    try:
        # CVAT shows the image EXIF-rotated, and its own manifest tool swaps the sides for 5..8
        return displayed_image_size(file)
    except ValueError as err:
        raise ExportError(f"item {image_id!r}: {file} is not a readable image file ({err}); "
                          "cvat needs image files under the data root") from None


def render_cvat(record: SelectionRecord, ctx: ExportContext) -> str:
    located = _locate(record, ctx)
    if ctx.data_root is None:
        raise ExportError("cvat needs image files to read width and height: set data.root in the run's "
                          "config.yaml (or --data-root)")
    lines = [_dumps({"version": "1.0"}), _dumps({"type": "images"})]
    for loc in located:
        rel = PurePosixPath(loc.path)
        width, height = _image_size(ctx.data_root, loc.path, loc.item.image_id)
        lines.append(_dumps({"name": rel.with_suffix("").as_posix(), "extension": rel.suffix,
                             "width": width, "height": height}))
    return "".join(line + "\n" for line in lines)


def render_labelbox(record: SelectionRecord, ctx: ExportContext) -> str:
    located = _locate(record, ctx)
    uris = _need_uris(located, "labelbox")
    dupes = [k for k, n in Counter(loc.item.image_id for loc in located).items() if n > 1]
    if dupes:
        raise ExportError(f"labelbox global keys must be unique; cycle {record.cycle} repeats "
                          f"image ids {dupes[:5]}")
    rows = [{"row_data": uri, "global_key": loc.item.image_id, "media_type": "IMAGE"}
            for loc, uri in zip(located, uris)]
    return _dumps(rows, indent=1) + "\n"


def render_sagemaker(record: SelectionRecord, ctx: ExportContext) -> str:
    located = _locate(record, ctx)
    uris = _need_uris(located, "sagemaker")
    if not all(uri.startswith("s3://") for uri in uris):
        raise ExportError(f"sagemaker reads images from S3 only: {PREFIX_KEY} must start with s3://, "
                          f"got {ctx.uri_prefix!r}")
    lines = []
    for loc, uri in zip(located, uris):
        it = loc.item
        # Ground Truth reads source-ref and carries every other key through to its output manifest
        lines.append(_dumps({"source-ref": uri, "image-id": it.image_id, "tavaal-rank": it.rank,
                             "tavaal-score": _score(it.score), "tavaal-cycle": record.cycle,
                             "tavaal-strategy": record.strategy}))
    return "".join(line + "\n" for line in lines)


def render_scale(record: SelectionRecord, ctx: ExportContext) -> str:
    located = _locate(record, ctx)
    uris = _need_uris(located, "scale")
    if not ctx.class_names:
        raise ExportError("scale tasks need the label set: the run state has no class_names")
    tasks = [{"attachment": uri, "attachment_type": "image", "unique_id": loc.item.image_id,
              "labels": list(ctx.class_names), "metadata": _fields(record, loc)}
             for loc, uri in zip(located, uris)]
    return _dumps(tasks, indent=1) + "\n"


EXPORTERS: types.MappingProxyType[str, Exporter] = types.MappingProxyType({e.name: e for e in (
    Exporter("csv", ".csv", render_csv, None,
             "rank,image_id,path,score,cycle,strategy (+ uri with a prefix); the run's own list"),
    Exporter("jsonl", ".jsonl", render_jsonl, None, "the csv fields as JSON Lines"),
    Exporter("labelstudio", ".labelstudio.json", render_labelstudio, None,
             "Label Studio tasks; image = the URI, else /data/local-files/?d=<path>; prediction score = label priority (1 = label first)"),
    Exporter("cvat", ".cvat-manifest.jsonl", render_cvat, None,
             "CVAT image manifest (name, extension, width, height); reads image headers under data.root"),
    Exporter("labelbox", ".labelbox.json", render_labelbox,
             "Labelbox fetches row_data itself (public/signed https, or a bucket with delegated access)",
             "Labelbox data rows: row_data URI, global_key = image id, media_type IMAGE"),
    Exporter("sagemaker", ".sagemaker.manifest", render_sagemaker,
             "Ground Truth reads source-ref from S3 (an s3:// prefix)",
             "SageMaker Ground Truth input manifest: source-ref s3:// URI + tavaal metadata keys",
             uri_schemes=("s3",)),
    Exporter("scale", ".scale.json", render_scale,
             "Scale fetches the attachment itself",
             "Scale AI task payloads: attachment URI, unique_id, labels = the class names, metadata"),
)})


# ---------------------------------------------------------------------------------- entry points

def _unknown(fmt: str, key: str) -> ExportError:
    return ExportError(f"{key}: unknown export format {fmt!r}; choose from {', '.join(EXPORTERS)}")


def check_export_options(formats: Sequence[str], uri_prefix: str | None, key: str = "export.formats") -> None:
    """Refuse, before any work, formats that do not exist or cannot run with this prefix."""
    if isinstance(formats, str):  # "csv" would otherwise be read as the formats c, s, v
        formats = [formats]
    for fmt in formats:
        if fmt not in EXPORTERS:
            raise _unknown(fmt, key)
    if uri_prefix is not None:
        _check_prefix(uri_prefix)
    for fmt in formats:
        exporter = EXPORTERS[fmt]
        if exporter.needs_uri is None:
            continue
        if uri_prefix is None:
            raise ExportError(f"{key}: format {fmt!r} needs image URLs ({exporter.needs_uri}); set "
                              f"{PREFIX_KEY}, e.g. s3://bucket/data/ or https://host/data/")
        scheme = urlsplit(uri_prefix).scheme.lower()
        if scheme not in exporter.uri_schemes:
            raise ExportError(f"{key}: format {fmt!r} needs a {' or '.join(s + '://' for s in exporter.uri_schemes)} "
                              f"{PREFIX_KEY}, got {uri_prefix!r}")


def render_export(record: SelectionRecord, fmt: str, ctx: ExportContext) -> str:
    """The export's text (nothing written): every path is checked before any is used."""
    if fmt not in EXPORTERS:
        raise _unknown(fmt, "export format")
    check_export_options([fmt], ctx.uri_prefix, key="export format")
    return EXPORTERS[fmt].render(record, ctx)


def export_path(out_dir: Path, cycle: int, fmt: str) -> Path:
    """``out_dir/cycle_NN<suffix>``: the name holds only the cycle, never an image id."""
    if fmt not in EXPORTERS:
        raise _unknown(fmt, "export format")
    return Path(out_dir) / f"cycle_{int(cycle):02d}{EXPORTERS[fmt].suffix}"


def write_export(record: SelectionRecord, fmt: str, ctx: ExportContext, out: Path) -> Path:
    """Render, then write exactly ``out`` atomically (an existing directory is refused)."""
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"output {out} is a directory; name the file to write")
    atomic_write_text(out, render_export(record, fmt, ctx))
    return out


def export_selection(record: SelectionRecord, out_dir: Path, fmt: str = "csv",
                     ctx: ExportContext | None = None) -> Path:
    """Write ``out_dir/cycle_NN<suffix>`` atomically and return its path."""
    return write_export(record, fmt, ctx if ctx is not None else ExportContext(),
                        export_path(out_dir, record.cycle, fmt))
