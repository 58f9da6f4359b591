"""Selection lists for labeling tools and vendors.

``csv`` is the run directory's own format: ``rank,image_id,path,score,cycle,strategy`` with
``path`` relative to the data root and ``image_id`` stable across cycles (usable as a
Labelbox global key or a Scale unique id).
"""
from __future__ import annotations

import csv
import io
import types
from collections.abc import Callable
from pathlib import Path

from .runtime import atomic_write_text
from .state import SelectionRecord

CSV_COLUMNS = ("rank", "image_id", "path", "score", "cycle", "strategy")


def selection_csv(record: SelectionRecord) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in record.items:
        writer.writerow([item.rank, item.image_id, item.path, repr(float(item.score)), record.cycle, record.strategy])
    return buffer.getvalue()


Exporter = Callable[[SelectionRecord], str]
EXPORTERS: types.MappingProxyType[str, tuple[str, Exporter]] = types.MappingProxyType({
    "csv": (".csv", selection_csv),
})


def export_selection(record: SelectionRecord, out_dir: Path, fmt: str = "csv") -> Path:
    """Write ``out_dir/cycle_NN<ext>`` atomically and return its path."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(sorted(EXPORTERS))}")
    suffix, render = EXPORTERS[fmt]
    path = Path(out_dir) / f"cycle_{record.cycle:02d}{suffix}"
    atomic_write_text(path, render(record))
    return path
