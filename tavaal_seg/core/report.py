"""A selection report: one self-contained HTML file (images inline, no scripts, no network) that
shows a team what a cycle picked and why, before anyone pays for labels.

- the picks in rank order as thumbnails (segmentation: the predicted mask overlaid) with their
  score, what the score means, the predicted class or the model's confidence, and their group;
- each class's predicted share in the picks against a sample of the pool (segmentation: pixel
  share; classification: the predicted-class histogram);
- the learning curve so far (inline SVG) and the run's settings.

It reads only the run directory (``state.json``, ``metrics.csv``, ``config.yaml`` and the
cycle's ``selections/cycle_NN.preview.json``, written at selection time), so any past cycle can
be reported without the data or the model. ``tools/report.py`` / ``tavaal-report`` is its CLI.
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import flatten_dict, read_yaml
from .errors import BadInput, internal_error_message, user_message
from .preview import preview_path
from .runtime import atomic_write_text, log_traceback
from .state import RunState
from .strategies import STRATEGIES

PROG = "report.py"
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
# settings shown in the summary table (the whole config.yaml follows, folded)
KEY_SETTINGS = ("active.strategy", "active.initial", "active.budget", "active.cycles", "active.subset",
                "active.group_by", "active.max_per_group", "active.diversity", "active.diversity_candidates",
                "data.name", "data.root", "model.name", "model.encoder", "train.epochs", "seed", "labels.mode")

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555}.note{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure.pick{margin:0;width:200px;border:1px solid #ddd;border-radius:6px;overflow:hidden;background:#fafafa}
figure.pick img{display:block;width:100%;height:auto;image-rendering:auto}
figcaption{padding:4px 6px;font-size:12px;word-break:break-all}
figcaption b{font-size:13px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:10px;vertical-align:middle;border-radius:2px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:middle;margin-right:4px}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}
"""


MIN_RATIO_SHARE = 0.001   # below this pool share the picks/pool ratio is not shown


class ReportError(BadInput, ValueError):
    """The report cannot be made as asked; the message names the file or option."""


def escape_html(value: Any) -> str:
    return html.escape(str(value), quote=True)


def read_curve(metrics_csv: Path) -> tuple[str, list[tuple[int, float]]]:
    """(headline metric name, [(labeled images, metric)]) from a run's metrics.csv (its third column)."""
    if not metrics_csv.is_file():
        return "", []
    with metrics_csv.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or len(header) < 3:
            return "", []
        points = [(int(row[1]), float(row[2])) for row in reader if len(row) >= 3 and row[2] != ""]
    return header[2], points


def curve_svg(points: Sequence[tuple[int, float]], metric: str, width: int = 640, height: int = 300) -> str:
    """An inline SVG line chart of ``metric`` against labeled images."""
    left, right, top, bottom = 56, 16, 14, 40
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.1 or 0.01
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="curve" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape_html(metric)} against labeled images">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="#fcfcfc" stroke="#ccc"/>']
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" font-size="11" text-anchor="end">{yv:.3f}</text>')
    ticks = sorted(set(xs))
    for xv in ticks[:: max(1, len(ticks) // 10)]:  # the labeled counts the run trained at, at most ~10
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - bottom + 16}" font-size="11" '
                     f'text-anchor="middle">{xv}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" font-size="12" '
                 'text-anchor="middle">labeled images</text>')
    parts.append(f'<text x="14" y="{(top + height - bottom) / 2:.0f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})">{escape_html(metric)}</text>')
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#d62728" stroke-width="2"/>')
    for x, y in points:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#d62728">'
                     f'<title>{x} labeled: {escape_html(metric)} {y:.4f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _pick_caption(pick: dict[str, Any]) -> str:
    lines = [f'<b>#{pick["rank"]}</b> <span class="score">score {float(pick["score"]):.4g}</span>',
             f'<span class="id">{escape_html(pick["image_id"])}</span>']
    if pick.get("label") is not None:
        lines.append(f'predicted <b>{escape_html(pick["label"])}</b> ({float(pick["confidence"]):.0%})')
    elif pick.get("confidence") is not None:
        lines.append(f'mean confidence {float(pick["confidence"]):.0%}')
    if pick.get("group") is not None:
        lines.append(f'group {escape_html(pick["group"])}')
    return "<br>".join(lines)


def _picks_html(doc: dict[str, Any]) -> str:
    figures = []
    for pick in doc["picks"]:
        img = (f'<img src="{escape_html(pick["thumbnail"])}" alt="{escape_html(pick["image_id"])}" loading="lazy">'
               if pick.get("thumbnail") else "")
        figures.append(f'<figure class="pick" data-rank="{int(pick["rank"])}" data-image-id="{escape_html(pick["image_id"])}">'
                       f'{img}<figcaption>{_pick_caption(pick)}</figcaption></figure>')
    return f'<div class="grid">{"".join(figures)}</div>'


def _shares_html(doc: dict[str, Any]) -> str:
    names, colors = doc["class_names"], doc["class_colors"]
    n = len(doc["picks"])
    picks = [sum(p["class_share"][k] for p in doc["picks"]) / max(n, 1) for k in range(len(names))]
    pool = (doc.get("pool") or {}).get("class_share")
    what = "the predicted pixels" if doc.get("share") == "pixel" else "the images by predicted class (a histogram)"
    head = (f"<tr><th>class</th><th>picks ({n} images)</th>"
            + (f'<th>pool ({doc["pool"]["images"]} images)</th><th>picks / pool</th>' if pool else "") + "</tr>")
    rows = []
    for k, name in enumerate(names):
        swatch = f'<span class="swatch" style="background:rgb({",".join(str(int(c)) for c in colors[k])})"></span>'
        cells = [f"<td>{swatch}{escape_html(name)}</td>", _share_cell(picks[k], "#d62728")]
        if pool:
            cells.append(_share_cell(pool[k], "#7f7f7f"))
            ratio = picks[k] / pool[k] if pool[k] >= MIN_RATIO_SHARE else None  # ratios of ~0 are noise
            cells.append(f'<td class="num">{"—" if ratio is None else f"{ratio:.2f}×"}</td>')
        rows.append(f'<tr data-class="{escape_html(name)}">{"".join(cells)}</tr>')
    note = f"<p class=\"meta\">Share of {what}, from the model that made the selection. "
    if pool:
        note += f"Pool: {escape_html(doc['pool']['what'])}.</p>"
    else:
        note += "No pool sample was scored (logging.preview_pool_sample 0).</p>"
    return note + f'<table class="shares">{head}{"".join(rows)}</table>'


def _share_cell(value: float, color: str) -> str:
    return (f'<td class="num"><span class="bar" style="width:{max(1.0, value * 200):.0f}px;background:{color}">'
            f"</span> {value:.1%}</td>")


def render_report(doc: dict[str, Any], *, title: str, summary: str, settings: dict[str, Any],
                  config_yaml: str, curve: Sequence[tuple[int, float]], metric: str,
                  notes: Sequence[str] = ()) -> str:
    """The HTML text of a report of one preview document (see :mod:`core.preview`)."""
    sections = [f"<h1>{escape_html(title)}</h1>", f'<p class="meta">{summary}</p>']
    sections += [f'<p class="note">{escape_html(n)}</p>' for n in notes]
    sections.append(f'<section id="picks"><h2>Picks in rank order ({len(doc["picks"])})</h2>'
                    f'<p class="meta">score: {escape_html(doc.get("score_meaning", ""))}</p>{_picks_html(doc)}</section>')
    if doc.get("class_names") and doc["picks"] and "class_share" in doc["picks"][0]:
        sections.append(f'<section id="classes"><h2>Predicted classes: picks against the pool</h2>'
                        f"{_shares_html(doc)}</section>")
    if curve:
        sections.append(f'<section id="curve"><h2>Learning curve</h2>{curve_svg(curve, metric)}</section>')
    rows = "".join(f"<tr><td>{escape_html(k)}</td><td>{escape_html(v)}</td></tr>" for k, v in settings.items())
    sections.append(f'<section id="settings"><h2>Settings</h2><table class="settings">{rows}</table>'
                    f"<details><summary>config.yaml</summary><pre>{escape_html(config_yaml)}</pre></details></section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape_html(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    flat = flatten_dict(config)
    return {k: flat[k] for k in KEY_SETTINGS if k in flat}


def render_run_report(run_dir: Path, doc: dict[str, Any], *, title: str, summary: str,
                      notes: Sequence[str] = ()) -> str:
    """:func:`render_report` of ``doc`` with the run's learning curve (``metrics.csv``) and
    settings (``config.yaml``; none when the run dir has no config)."""
    config_path = Path(run_dir) / "config.yaml"
    config = read_yaml(config_path) if config_path.is_file() else {}
    metric, curve = read_curve(Path(run_dir) / "metrics.csv")
    return render_report(doc, title=title, summary=summary, settings=settings_of(config),
                         config_yaml=config_path.read_text(encoding="utf-8") if config_path.is_file() else "",
                         curve=curve, metric=metric, notes=notes)


def run_report(run_dir: Path, cycle: int | None = None) -> tuple[int, str]:
    """(cycle, HTML) of ``cycle``'s selection (default: the latest one with a preview, else the latest)."""
    run_dir = Path(run_dir)
    state_path = run_dir / "state.json"
    if not state_path.is_file():
        raise ReportError(f"{run_dir} is not a run directory: {state_path} does not exist")
    state = RunState.load(state_path)
    by_cycle = {s.cycle: s for s in state.selections}
    if not by_cycle:
        raise ReportError(f"{state_path} has no selections yet")
    if cycle is None:
        with_preview = [c for c in sorted(by_cycle) if preview_path(run_dir, c).is_file()]
        cycle = with_preview[-1] if with_preview else max(by_cycle)
    if cycle not in by_cycle:
        raise ReportError(f"cycle {cycle} has no selection in {state_path}; cycles with selections: "
                          f"{', '.join(map(str, sorted(by_cycle)))}")
    record = by_cycle[cycle]
    notes = []
    path = preview_path(run_dir, cycle)
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ReportError(f"cannot read {path}: {err}") from None
    else:
        why = "the initial pick is made before any model exists" if cycle == 0 else \
            "logging.preview was off, or the run predates previews"
        notes.append(f"No preview for cycle {cycle} ({why}): the picks are listed without thumbnails.")
        strategy = STRATEGIES.get(record.strategy)
        doc = {"picks": [{"rank": it.rank, "image_id": it.image_id, "score": it.score} for it in record.items],
               "score_meaning": strategy.score_meaning if strategy else record.strategy}
    version = next((v for v in state.pool_versions if v.version == record.pool_version), None)
    pool = f", pool version {version.version} ({version.count} images, {version.added} added, {version.removed} " \
           f"removed, {version.when})" if version is not None and len(state.pool_versions) > 1 else ""
    summary = (f"Cycle {cycle} of <b>{escape_html(run_dir.resolve().name)}</b>: strategy "
               f"<b>{escape_html(record.strategy)}</b>, {len(record.items)} images picked{escape_html(pool)}; "
               f"{len(state.labeled)} images selected so far.")
    return cycle, render_run_report(run_dir, doc, title=f"Selection report: cycle {cycle}", summary=summary,
                                    notes=notes)


def write_report(run_dir: Path, cycle: int | None = None, out: Path | None = None) -> Path:
    """Write the report atomically (default ``RUN_DIR/reports/cycle_NN.html``) and return its path."""
    shown, text = run_report(run_dir, cycle)
    out = Path(out) if out is not None else Path(run_dir) / "reports" / f"cycle_{shown:02d}.html"
    if out.is_dir():
        raise ReportError(f"--out {out} is a directory; name the file to write")
    atomic_write_text(out, text)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Write a self-contained HTML report of what a run selected: thumbnails of the picks "
                               "in rank order with their scores, predicted classes of picks vs pool, the learning "
                               "curve and the settings.",
        epilog="exit codes: 0 written, 1 internal error (a bug; the traceback is printed), 2 bad input (run dir, "
               "cycle, files)")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory holding state.json")
    parser.add_argument("--cycle", type=int, metavar="N",
                        help="the cycle whose selection to show (default: the latest one with a preview)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="the HTML file to write (default: RUN_DIR/reports/cycle_NN.html)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.run_dir, args.cycle, args.out)
    except BadInput as err:  # ReportError, the run's state or config
        print(f"{PROG}: error: {user_message(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # noqa: BLE001 - not the user's input: a bug, or a failure inside a library
        print(internal_error_message(PROG, err, log_traceback(err, None)), file=sys.stderr)
        return EXIT_INTERNAL
    print(out)
    return EXIT_OK
