"""Rank a folder of new images with a run's trained model: ``rank_images(...)`` and the
``tools/rank_images.py`` / ``tavaal-rank`` command.

The run's task (classification or segmentation) is read from ``RUN_DIR/config.yaml``; its
labeled images come from the run's data root; nothing trains the task model (see
:mod:`tavaal_seg.core.ranking`). Outputs, each written atomically:

- the whole ranking as CSV: ``rank,image_id,path,score,selected,group,strategy,score_meaning``
  (ids and paths relative to the folder; ``selected`` = the position among the top K);
- the top K in any export format (``<out stem>.top<suffix>``, e.g. ``ranking.top.labelstudio.json``),
  Label Studio with the model's predictions as pre-annotations if asked;
- optionally a selection report (HTML) of the top K.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .core.config import DEVICES, ConfigError
from .core.errors import BadInput, internal_error_message, user_message
from .core.export import EXPORTERS, ExportContext, check_export_options, write_export
from .core.ranking import Ranking, rank_folder
from .core.report import escape_html, render_run_report
from .core.runtime import atomic_write_text, log_traceback, setup_logging
from .tasks import TASKS, run_config

PROG = "rank_images.py"
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class RankResult:
    ranking: Ranking
    written: list[Path] = field(default_factory=list)   # ranking CSV, exports, report (in that order)


def export_target(out: Path, fmt: str) -> Path:
    """``ranking.csv`` -> ``ranking.top.labelstudio.json`` (the csv format: ``ranking.top.csv``)."""
    return out.with_name(out.stem + ".top" + EXPORTERS[fmt].suffix)


def rank_images(run_dir: str | Path, images: str | Path, *, budget: int | None = None,
                out: str | Path | None = None, formats: Sequence[str] = (), uri_prefix: str | None = None,
                pre_annotations: bool | None = None, report: str | Path | None = None,
                data_root: str | Path | None = None, device: str | None = None,
                overrides: Sequence[str] = (), task: str | None = None) -> RankResult:
    """Rank every image under ``images`` with the trained model of ``run_dir``.

    ``budget``: K, the top picks exported (default: the run's ``active.budget``); ``out``: the
    ranking CSV (nothing is written without it, except ``report``); ``formats``: export formats
    for the top K next to ``out``; ``pre_annotations``: Label Studio results from the model
    (default: the run's ``export.pre_annotations``); ``report``: an HTML report of the top K;
    ``data_root``: where the run's labeled images are now (default: its ``data.root``);
    ``overrides``: ``key=value`` config changes (e.g. ``eval.batch_size=4``; the model keys must
    match the checkpoint).
    """
    run_dir, images = Path(run_dir), Path(images)
    sets = [*overrides]
    if budget is not None:  # K is the run's active.budget for the ranking (its checks: diversity_candidates >= K)
        sets.append(f"active.budget={int(budget)}")
    if device is not None:
        sets.append(f"device={device}")
    if data_root is not None:
        sets.append("data.root='" + str(Path(data_root)).replace("'", "''") + "'")  # a YAML string
    spec, cfg = run_config(run_dir, task, sets)
    prefix = uri_prefix if uri_prefix is not None else cfg.export.uri_prefix
    check_export_options(list(formats), prefix, key="--format")
    if formats and out is None:
        raise ConfigError("--format writes the top K next to the ranking CSV: give --out too")
    for flag, target in (("--out", out), ("--report", report)):
        if target is not None and Path(target).is_dir():
            raise ConfigError(f"{flag} {target} is a directory; name the file to write")
    root = getattr(getattr(cfg, "data", None), "root", None)
    if root is None:
        raise ConfigError(f"{run_dir / 'config.yaml'} has no data.root; pass --data-root (the run's data)")
    want_pre = (cfg.export.pre_annotations if pre_annotations is None else pre_annotations) and "labelstudio" in formats
    adapter = spec.make_adapter(cfg, Path(root))
    ranking = rank_folder(cfg, adapter, run_dir, images, cfg.active.budget, preview=report is not None,
                          pre_annotations=want_pre)
    result = RankResult(ranking)
    if out is not None:
        out = Path(out)
        ctx = ExportContext(images, prefix, tuple(adapter.class_names),
                            ranking.preview.pre_annotations if ranking.preview is not None else {},
                            cfg.export.labelstudio_from_name, cfg.export.labelstudio_to_name)
        atomic_write_text(out, ranking.csv_text())
        result.written.append(out)
        for fmt in formats:
            result.written.append(write_export(ranking.picks, fmt, ctx, export_target(out, fmt)))
    if report is not None and ranking.preview is not None:
        report = Path(report)
        summary = (f"{len(ranking.images)} images under <b>{escape_html(images)}</b> ranked by run "
                   f"<b>{escape_html(run_dir.resolve().name)}</b> (its cycle-{ranking.model_cycle} model, strategy "
                   f"<b>{escape_html(ranking.strategy)}</b>); the top {len(ranking.picks.items)} are shown.")
        notes = [f"{len(ranking.skipped)} images are labeled in the run already and were not ranked."] \
            if ranking.skipped else []
        atomic_write_text(report, render_run_report(run_dir, ranking.preview.document,
                                                    title=f"Ranking of {images.name or images}", summary=summary,
                                                    notes=notes))
        result.written.append(report)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank every image in a folder (recursively) for labeling with a run's trained model and "
                    "strategy, without training the task model (vaal/tavaal train only their VAE and "
                    "discriminator, on the run's labeled images vs the new ones).",
        epilog="outputs: the whole ranking (--out, CSV: rank,image_id,path,score,selected,group,strategy,"
               "score_meaning; ids and paths relative to --images), the top K in each --format as "
               "<out stem>.top<suffix>, and --report FILE.html.\nactive.max_per_group / active.diversity of "
               "the run's config (or --set) choose the top K.\n\nexit codes: 0 written, 1 internal error (a bug or "
               "a failure inside torch; the traceback is printed), 2 bad input (run dir, folder, config, files)")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory with a trained cycle")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="the folder of new images")
    parser.add_argument("--budget", type=int, metavar="K", help="how many to pick (default: the run's active.budget)")
    parser.add_argument("--out", type=Path, default=Path("ranking.csv"), metavar="CSV",
                        help="the ranking CSV (default: ranking.csv)")
    parser.add_argument("--format", dest="formats", action="append", default=[], choices=list(EXPORTERS),
                        metavar="FORMAT", help=f"export the top K for a labeling tool (repeatable): {', '.join(EXPORTERS)}")
    parser.add_argument("--pre-annotations", action=argparse.BooleanOptionalAction, default=None,
                        help="labelstudio: include the model's predictions (default: export.pre_annotations of the run)")
    parser.add_argument("--uri-prefix", metavar="PREFIX", help="s3://, gs://, https:// prefix for the images' URIs")
    parser.add_argument("--report", type=Path, metavar="HTML", help="also write a selection report of the top K")
    parser.add_argument("--data-root", type=Path, metavar="DIR",
                        help="where the run's own (labeled) images are now (default: data.root of the run)")
    parser.add_argument("--device", choices=list(DEVICES), help="compute device (default: the run's)")
    parser.add_argument("--task", choices=TASKS, help="the run's task (default: read from its config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config key for the ranking, e.g. --set active.max_per_group=2 (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        result = rank_images(args.run_dir, args.images, budget=args.budget, out=args.out, formats=args.formats,
                             uri_prefix=args.uri_prefix, pre_annotations=args.pre_annotations, report=args.report,
                             data_root=args.data_root, device=args.device, overrides=args.overrides, task=args.task)
    except BadInput as err:  # the config, the run dir, the folder, a file: named in the message
        print(f"{PROG}: error: {user_message(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # noqa: BLE001 - not the user's input: a bug, or a failure inside a library
        print(internal_error_message(PROG, err, log_traceback(err, None)), file=sys.stderr)
        return EXIT_INTERNAL
    r = result.ranking
    print(json.dumps({"ranked": len(r.images), "picked": len(r.picks.items), "strategy": r.strategy,
                      "model_cycle": r.model_cycle, "written": [str(p) for p in result.written]}))
    return EXIT_OK
