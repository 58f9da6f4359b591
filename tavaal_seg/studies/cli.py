"""``tools/run_study.py`` and ``tools/plot_curves.py``."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .layout import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, StudyError, parse_list
from .plots import plot_study
from .runner import TASKS, StudyRunner, plan_gpus, prepare_study, write_study_record
from .summary import write_summary


def run_study_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_study.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --config X --strategies S1,S2 --seeds 0,1,2 --out DIR [--task cls|seg] [--jobs N] "
              "[--threads N] [--gpus LIST] [--gpu-memory-per-run MIB] [--force] [-- args for the AL tool]\n"
              "       %(prog)s --out DIR --aggregate-only",
        description=(
            "Run a label-efficiency study: one active-learning run per (strategy, seed), each a subprocess\n"
            "of tools/al_cls.py or tools/al_seg.py in DIR/runs/<strategy>/seed<k>, then aggregate the runs'\n"
            "metrics.csv into DIR/summary.csv and DIR/summary.md. Finished runs are skipped, unfinished ones\n"
            "resumed (--resume), so rerunning the same command continues a study. Everything after `--` is\n"
            "passed to every run, e.g. -- --data-root D --cycles 5 --set model.width=0.125"),
        epilog=(
            "outputs:\n"
            "  DIR/study.json                         what was asked (config, strategies, seeds, task, extra args)\n"
            "  DIR/runs.csv                           strategy,seed,status,exit_code,wall_s,command\n"
            "  DIR/runs/<strategy>/seed<k>/stdout.log each run's output (appended)\n"
            "  DIR/summary.csv, DIR/summary.md        mean and std over seeds per (strategy, cycle)\n"
            "exit codes: 0 all runs finished, 1 some run failed (the others are aggregated), 2 bad arguments\n"
            "or files, 130 interrupted (rerun the same command to continue)"))
    parser.add_argument("--config", type=Path, help="experiment YAML, as for the AL tools")
    parser.add_argument("--strategies", help="comma-separated: random,entropy,coreset,lloss,vaal,tavaal, or names that the config's plugins register")
    parser.add_argument("--seeds", help="comma-separated run seeds, e.g. 0,1,2")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the study directory")
    parser.add_argument("--task", choices=TASKS,
                        help="cls (tools/al_cls.py) or seg (tools/al_seg.py); default: from the config's data.name")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once (default 1); with the runs on CUDA, spread over the GPUs (--gpus) after a "
                             "check that their memory holds N runs")
    parser.add_argument("--threads", type=int,
                        help="CPU threads per run (OMP_NUM_THREADS, MKL_NUM_THREADS); default with --jobs N > 1: "
                             "CPU cores / N, so that concurrent runs do not oversubscribe the CPU")
    parser.add_argument("--gpus", metavar="LIST",
                        help="with --device cuda (or auto on a GPU machine) and --jobs N > 1: the GPUs to spread the "
                             "runs over, comma-separated nvidia-smi indices or UUIDs (default: CUDA_VISIBLE_DEVICES, "
                             "else every GPU); each run sees one GPU, the one with the fewest of the study's runs")
    parser.add_argument("--gpu-memory-per-run", type=int, metavar="MIB",
                        help="GPU memory one run needs, to check that --jobs N runs fit (default: measured by one "
                             "run's --dry-run warm-up, x1.15, plus 1024 MiB for the CUDA context)")
    parser.add_argument("--force", action="store_true",
                        help="run although DIR/study.json records other strategies, config or extra args "
                             "(finished runs are still skipped; adding seeds needs no --force)")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only (re)write summary.csv and summary.md from the runs in DIR")
    parser.add_argument("--tool", type=Path,
                        help="script to run instead of tools/al_<task>.py (takes the same flags; for tests and "
                             "custom entry points)")
    return parser


def _print_err(message: str) -> None:
    print(f"run_study.py: error: {message}", file=sys.stderr)


def _aggregate_and_print(study_dir: Path) -> int:
    try:
        _, markdown = write_summary(study_dir)
    except StudyError as err:
        _print_err(str(err))
        return EXIT_BAD_INPUT
    print(markdown, end="")
    print(f"wrote {study_dir / 'summary.csv'} and {study_dir / 'summary.md'}")
    return EXIT_OK


def run_study_main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra_args: list[str] = []
    if "--" in argv:  # split by hand: argparse would try to read the AL tool's flags as ours
        cut = argv.index("--")
        argv, extra_args = argv[:cut], argv[cut + 1:]
    args = run_study_parser().parse_args(argv)
    if args.aggregate_only:
        return _aggregate_and_print(args.out)
    env = dict(os.environ)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env["PYTHONUNBUFFERED"] = "1"  # so that stdout.log follows the run as it goes
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    try:
        record, plan = prepare_study(args, extra_args)
        if args.gpu_memory_per_run is not None and args.gpu_memory_per_run < 1:
            raise StudyError("--gpu-memory-per-run must be a positive number of MiB")
        gpus = plan_gpus(args.config, extra_args, plan, args.jobs, args.gpus, args.gpu_memory_per_run, env)
        write_study_record(args.out, record)
        runner = StudyRunner(args.out, plan, args.jobs, env, gpus=gpus)
    except StudyError as err:
        _print_err(str(err))
        return EXIT_BAD_INPUT
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.write_runs_csv()
        print("run_study.py: interrupted; rerun the same command to continue (finished runs are skipped, "
              "unfinished ones resumed)", file=sys.stderr)
        return EXIT_INTERRUPTED
    code = _aggregate_and_print(args.out)  # the failed runs' finished cycles count too
    if runner.failed:
        print(f"run_study.py: {len(runner.failed)} run(s) did not finish:", file=sys.stderr)
        for planned, status in sorted(runner.failed, key=lambda f: runner.plan.index(f[0])):
            row = runner.rows[(planned.ref.strategy, planned.ref.seed)]
            print(f"  {planned.ref.strategy} seed {planned.ref.seed}: {status} (exit {row['exit_code']}); "
                  f"see {planned.ref.path / 'stdout.log'}", file=sys.stderr)
        return EXIT_RUN_FAILED
    return code


def plot_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot_curves.py",
        description=(
            "Figures of a study made with tools/run_study.py (reads DIR/runs/<strategy>/seed<k>/): "
            "curve (metric vs labeled images, mean ± std), improvement (metric minus random's, paired by seed; "
            "the TA-VAAL paper's Figs 3-5), class_entropy (labeled-set class entropy; Fig 7a) and loss_vs_score "
            "(true loss vs the strategy's score for the last cycle with selections/cycle_NN.candidates.csv; Fig 8). "
            "A figure whose data is missing is skipped with a note. Needs matplotlib: pip install 'tavaal-seg[plot]'."),
        epilog="exit codes: 0 done, 2 bad input (no runs in DIR, unknown metric or format, matplotlib missing)")
    parser.add_argument("study_dir", type=Path, metavar="DIR", help="the study directory (run_study.py --out)")
    parser.add_argument("--format", default="png", help="comma-separated file formats, e.g. png,svg,pdf (default png)")
    parser.add_argument("--out", type=Path, metavar="FIGDIR", help="where the figures go (default DIR/figures)")
    parser.add_argument("--metric", help="metrics.csv column to plot (default: the headline metric, its 3rd column)")
    return parser


def plot_main(argv: Sequence[str] | None = None) -> int:
    args = plot_parser().parse_args(argv)
    try:
        formats = parse_list(args.format, "--format")
        plot_study(args.study_dir, args.out, formats, args.metric)
    except StudyError as err:
        print(f"plot_curves.py: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
