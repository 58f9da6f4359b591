"""``tools/export_selection.py``: re-export a finished run's selections for a labeling tool.

A run keeps every selection in ``RUN_DIR/state.json``; this command turns one cycle's selection
(or every cycle's, ``--cycle all``) into the file a labeling tool or vendor imports, without
training or touching the data beyond image headers:

- ``csv``, ``jsonl``: ``rank, image_id, path, score, cycle, strategy`` (+ ``uri`` with a prefix);
- ``labelstudio``: a JSON list of Label Studio tasks; ``data.image`` is the URI, or without a
  prefix Label Studio's local-files URL ``/data/local-files/?d=<path>`` (served relative to
  ``LOCAL_FILES_DOCUMENT_ROOT``); the selection score rides on an empty prediction so the Data
  Manager can sort by it;
- ``cvat``: a CVAT image manifest (``{"version"}``, ``{"type":"images"}``, then name, extension,
  width, height per image), read from the image headers under ``data.root``;
- ``labelbox``: Labelbox data rows (``row_data`` URI, ``global_key`` = image id);
- ``sagemaker``: a SageMaker Ground Truth input manifest (``source-ref`` s3:// URI per line);
- ``scale``: Scale AI task payloads (``attachment`` URI, ``labels`` = the run's class names).

``path`` is relative to the data root. The URI formats build ``<prefix>/<path>`` from
``--uri-prefix``, else ``export.uri_prefix`` in ``RUN_DIR/config.yaml``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import read_yaml
from .export import EXPORTERS, ExportContext, check_export_options, export_path, render_export
from .runtime import atomic_write_text
from .state import RunState

PROG = "export_selection.py"
EXIT_OK, EXIT_BAD_INPUT = 0, 2


class _BadInput(Exception):
    """A user error: printed as ``export_selection.py: error: <message>``, exit 2."""


def _cycle(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a cycle number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cycle numbers are >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in EXPORTERS)
    formats = "\n".join(
        f"  {e.name:<{width}}  cycle_NN{e.suffix}\n  {'':<{width}}  {e.description}"
        + (f"\n  {'':<{width}}  needs a URI prefix ({', '.join(s + '://' for s in e.uri_schemes)}): {e.needs_uri}"
           if e.needs_uri else "")
        for e in EXPORTERS.values())
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export the images a run selected (RUN_DIR/state.json) for a labeling tool or vendor.",
        epilog=f"formats:\n{formats}\n\n"
               "paths are relative to the data root (data.root in RUN_DIR/config.yaml); output file names\n"
               "carry only the cycle number.\n\nexit codes: 0 written, 2 bad input")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory holding state.json")
    parser.add_argument("--cycle", type=_cycle, required=True, metavar="N|all",
                        help="the cycle whose selection to export (0 = the initial pick), or 'all'")
    parser.add_argument("--format", required=True, choices=list(EXPORTERS), metavar="FORMAT",
                        help=f"one of: {', '.join(EXPORTERS)} (see below)")
    parser.add_argument("--uri-prefix", metavar="PREFIX",
                        help="s3://, gs://, https:// or http:// prefix that turns paths into URIs "
                             "(default: export.uri_prefix in RUN_DIR/config.yaml)")
    parser.add_argument("--data-root", type=Path, metavar="DIR",
                        help="dataset root, for cvat's image sizes (default: data.root in RUN_DIR/config.yaml)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="write exactly this file (its folder must exist; single cycle only); "
                             "default: RUN_DIR/exports/cycle_NN<suffix>")
    return parser


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}  # formats that need nothing from it still work; the others say what is missing
    return read_yaml(path)  # a ConfigError (ValueError) naming the file: exit 2


def _section_value(raw: dict[str, Any], section: str, key: str, where: Path) -> str | None:
    node = raw.get(section) or {}
    value = node.get(key) if isinstance(node, dict) else None
    if value is not None and not isinstance(value, str):
        raise _BadInput(f"{where / 'config.yaml'}: {section}.{key} must be a string, got {value!r}")
    return value


def _run(args: argparse.Namespace) -> list[Path]:
    run_dir: Path = args.run_dir
    state_path = run_dir / "state.json"
    if not state_path.is_file():
        raise _BadInput(f"{run_dir} is not a run directory: {state_path} does not exist")
    state = RunState.load(state_path)
    raw = _read_config(run_dir)
    uri_prefix = args.uri_prefix
    if uri_prefix is None:
        uri_prefix = _section_value(raw, "export", "uri_prefix", run_dir)
    data_root = args.data_root
    if data_root is None:
        root = _section_value(raw, "data", "root", run_dir)
        data_root = Path(root) if root else None
    check_export_options([args.format], uri_prefix, key="--format")
    ctx = ExportContext(data_root=data_root, uri_prefix=uri_prefix, class_names=tuple(state.class_names))

    by_cycle = {record.cycle: record for record in state.selections}
    if args.cycle == "all":
        if not by_cycle:
            raise _BadInput(f"{state_path} has no selections yet")
        if args.out is not None:
            raise _BadInput("--out names one file; use it with a single --cycle, or leave it out for 'all'")
        records = [by_cycle[c] for c in sorted(by_cycle)]
    elif args.cycle not in by_cycle:
        have = ", ".join(str(c) for c in sorted(by_cycle)) or "none"
        raise _BadInput(f"cycle {args.cycle} has no selection in {state_path}; cycles with selections: {have}")
    else:
        records = [by_cycle[args.cycle]]

    if args.out is not None:
        out = args.out
        if out.is_dir():
            raise _BadInput(f"--out {out} is a directory; name the file to write")
        if not out.parent.is_dir():
            raise _BadInput(f"--out {out}: folder {out.parent} does not exist")
        targets = [out]
    else:
        targets = [export_path(run_dir / "exports", record.cycle, args.format) for record in records]
    # render everything before writing anything: a bad path in one cycle leaves no half export
    texts = [render_export(record, args.format, ctx) for record in records]
    for target, text in zip(targets, texts):
        atomic_write_text(target, text)
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or an argparse usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        written = _run(args)
    except (_BadInput, ValueError, OSError) as err:  # ExportError and RunState errors are ValueErrors
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    return EXIT_OK
