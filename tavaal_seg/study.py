"""Label-efficiency studies: every (strategy, seed) run of one experiment, their aggregate,
and the TA-VAAL paper's figures.

``tools/run_study.py`` runs the grid (each run a subprocess of ``tools/al_cls.py`` or
``tools/al_seg.py``, so that one crash does not end the study and each run's memory goes back
to the system), skips finished runs, resumes unfinished ones, and aggregates the runs'
``metrics.csv`` into ``summary.csv`` and ``summary.md``. ``tools/plot_curves.py`` draws the
label-efficiency curve, the improvement over random (paper Figs 3-5), the labeled-set class
entropy (Fig 7a) and true loss vs the strategy's score (Fig 8).

Layout of a study directory::

    DIR/study.json                 what was asked (config, strategies, seeds, task, extra args, metric)
    DIR/runs/<strategy>/seed<k>/   one AL run each (metrics.csv, state.json, config.yaml, stdout.log, ...)
    DIR/runs.csv                   strategy,seed,status,exit_code,wall_s,command
    DIR/summary.csv, summary.md    the aggregate
    DIR/figures/                   plot_curves' output
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .core.config import read_yaml
from .core.runtime import atomic_write_text
from .core.strategies import STRATEGIES

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
STUDY_FORMAT = 1
TASKS = ("cls", "seg")
TASK_METRICS = types.MappingProxyType({"cls": "accuracy", "seg": "mIoU"})
# metrics in [0, 1] that read better as percent (the paper reports accuracy and mIoU in %)
FRACTION_METRICS = frozenset({"accuracy", "mIoU", "pixel_acc"})
# the study sets these per run; passing them after `--` would contradict the grid
RESERVED_FLAGS = ("--config", "--strategy", "--seed", "--run-dir", "--resume")
TIMING_COLUMNS = ("train_s", "eval_s", "select_s")
ENTROPY_COLUMN = "labeled_class_entropy"
CANDIDATE_COLUMNS = ("image_id", "score", "true_loss", "selected")
RUNS_CSV_COLUMNS = ("strategy", "seed", "status", "exit_code", "wall_s", "command")
# one colour per strategy in every figure; random grey because it is the baseline
STRATEGY_COLORS = types.MappingProxyType({
    "random": "#7f7f7f", "entropy": "#1f77b4", "coreset": "#2ca02c",
    "lloss": "#9467bd", "vaal": "#ff7f0e", "tavaal": "#d62728",
})
EXTRA_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#000000")
SCORE_LABELS = types.MappingProxyType({
    "tavaal": "discriminator P(labeled | mu, r)", "vaal": "discriminator P(labeled)",
    "lloss": "predicted loss rank r", "entropy": "predictive entropy",
    "coreset": "distance to the labeled set", "random": "random priority",
})
FIG_SIZE, FIG_DPI = (6.0, 4.0), 110


def say(line: str) -> None:
    """Progress lines, flushed: a study runs for hours, often with its output piped to a file."""
    print(line, flush=True)


class StudyError(Exception):
    """Bad input to a study (arguments, study dir, a run's files): the message says which and why."""


# ---------------------------------------------------------------------------- the run grid


@dataclasses.dataclass(frozen=True)
class RunRef:
    strategy: str
    seed: int
    path: Path


def run_path(study_dir: Path, strategy: str, seed: int) -> Path:
    return Path(study_dir) / "runs" / strategy / f"seed{seed}"


def strategy_order(strategies: Sequence[str]) -> list[str]:
    """Known strategies in the paper's order, then any others alphabetically."""
    known = [s for s in STRATEGY_COLORS if s in strategies]
    return known + sorted(s for s in set(strategies) if s not in STRATEGY_COLORS)


def strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    unknown = sorted(s for s in set(strategies) if s not in STRATEGY_COLORS)
    colors = {s: EXTRA_COLORS[i % len(EXTRA_COLORS)] for i, s in enumerate(unknown)}
    colors.update({s: c for s, c in STRATEGY_COLORS.items() if s in strategies})
    return colors


def read_study(study_dir: Path) -> dict[str, Any] | None:
    path = Path(study_dir) / "study.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("strategies"), list):
        raise StudyError(f"{path}: expected a JSON object with a 'strategies' list")
    return data


def discover_runs(study_dir: Path) -> list[RunRef]:
    """The runs under ``DIR/runs/<strategy>/seed<k>/``; limited to (and ordered like) the grid
    of ``study.json`` when there is one, so that runs left over from an earlier grid (changed
    with --force) do not leak into the summary."""
    root = Path(study_dir) / "runs"
    found: list[RunRef] = []
    if root.is_dir():
        for strat_dir in root.iterdir():
            if not strat_dir.is_dir():
                continue
            for seed_dir in strat_dir.glob("seed*"):
                suffix = seed_dir.name[len("seed"):]
                if seed_dir.is_dir() and suffix.lstrip("-").isdigit():
                    found.append(RunRef(strat_dir.name, int(suffix), seed_dir))
    study = read_study(study_dir)
    if study is not None:
        order = list(study["strategies"])
        seeds = set(study.get("seeds", []))
        found = [r for r in found if r.strategy in order and (not seeds or r.seed in seeds)]
    else:
        order = strategy_order([r.strategy for r in found])
    return sorted(found, key=lambda r: (order.index(r.strategy), r.seed))


def run_phase(run_dir: Path, cycles: int | None = None, select_after_last: bool | None = None) -> str:
    """``finished``, ``resume`` (a state.json exists but cycles are missing) or ``fresh``.

    Finished = a cycle record for every cycle 1..active.cycles, each cycle before the last with
    its selection, and the last one selected too when active.select_after_last is true. Both
    settings come from the run's own config.yaml unless the study asks for others (``cycles``,
    ``select_after_last``: e.g. a study extended with ``-- --cycles 10``, which the AL tools
    resume). An unreadable state or config counts as unfinished: the AL tool, resumed, says
    what is wrong with it in the run's stdout.log."""
    state_path, config_path = run_dir / "state.json", run_dir / "config.yaml"
    if not state_path.exists():
        return "fresh"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        records = {int(c["cycle"]): bool(c.get("selected", False)) for c in state["cycles"]}
        if cycles is None or select_after_last is None:
            active = read_yaml(config_path)["active"]
            cycles = int(active["cycles"]) if cycles is None else cycles
            if select_after_last is None:
                select_after_last = bool(active.get("select_after_last", False))
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return "resume"
    for cycle in range(1, cycles + 1):
        if cycle not in records:
            return "resume"
        wants_selection = cycle < cycles or select_after_last
        if wants_selection and not records[cycle]:
            return "resume"
    return "finished"


# ---------------------------------------------------------------------------- metrics and aggregate


@dataclasses.dataclass
class RunMetrics:
    ref: RunRef
    columns: list[str]                 # numeric columns after cycle, n_labeled (header order)
    rows: dict[int, dict[str, float]]  # cycle -> {"n_labeled": n, column: value}; empty cells absent

    @property
    def metric(self) -> str:
        return self.columns[0]


def read_metrics(ref: RunRef) -> RunMetrics | None:
    """A run's metrics.csv, numeric columns only; None when the run has no metrics yet."""
    path = ref.path / "metrics.csv"
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    if not table:
        return None
    header = table[0]
    if header[:2] != ["cycle", "n_labeled"] or len(header) < 3:
        raise StudyError(f"{path}: expected a header starting with cycle,n_labeled,<metric>; got {','.join(header)}")
    numeric = {name: True for name in header[2:]}
    rows: dict[int, dict[str, float]] = {}
    for line_no, cells in enumerate(table[1:], start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise StudyError(f"{path} line {line_no}: {len(cells)} cells, the header has {len(header)}")
        try:
            cycle, n_labeled = int(cells[0]), int(cells[1])
        except ValueError:
            raise StudyError(f"{path} line {line_no}: cycle and n_labeled must be integers, got "
                             f"{cells[0]!r}, {cells[1]!r}") from None
        row: dict[str, float] = {"n_labeled": float(n_labeled)}
        for name, cell in zip(header[2:], cells[2:]):
            if cell == "":
                continue
            try:
                row[name] = float(cell)
            except ValueError:
                numeric[name] = False  # a text column (none today): not aggregated
        rows[cycle] = row
    columns = [name for name in header[2:] if numeric[name]]
    if header[2] not in columns:
        raise StudyError(f"{path}: the headline metric column {header[2]!r} (3rd column) is not numeric")
    for row in rows.values():
        for name in [k for k in row if k != "n_labeled" and k not in columns]:
            del row[name]
    return RunMetrics(ref, columns, rows)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclasses.dataclass
class SummaryRow:
    strategy: str
    cycle: int
    n_labeled: int
    n_seeds: int
    stats: dict[str, tuple[float, float, int]]  # column -> (mean, std, number of values)


@dataclasses.dataclass
class Summary:
    metric: str
    columns: list[str]
    rows: list[SummaryRow]
    runs: list[RunMetrics]
    missing: list[RunRef]  # runs without a metrics.csv yet

    def row(self, strategy: str, cycle: int) -> SummaryRow | None:
        return next((r for r in self.rows if r.strategy == strategy and r.cycle == cycle), None)


def load_runs(study_dir: Path) -> tuple[list[RunMetrics], list[RunRef]]:
    loaded, missing = [], []
    for ref in discover_runs(study_dir):
        metrics = read_metrics(ref)
        if metrics is None:
            missing.append(ref)
        else:
            loaded.append(metrics)
    return loaded, missing


def check_metric(runs: Sequence[RunMetrics]) -> str:
    """The headline metric (3rd column of metrics.csv), which must be the same in every run."""
    metrics = {r.metric for r in runs}
    if len(metrics) > 1:
        listing = "; ".join(f"{r.ref.path / 'metrics.csv'}: {r.metric}" for r in runs)
        raise StudyError(f"the runs disagree on the headline metric (3rd column of metrics.csv): {listing}")
    return runs[0].metric


def aggregate(study_dir: Path) -> Summary:
    """Mean and sample std over seeds of every numeric column, per (strategy, cycle)."""
    runs, missing = load_runs(study_dir)
    if not runs:
        raise StudyError(f"no run under {Path(study_dir) / 'runs'} has a metrics.csv yet "
                         "(expected runs/<strategy>/seed<k>/metrics.csv)")
    metric = check_metric(runs)
    columns: list[str] = []
    for r in runs:
        columns += [c for c in r.columns if c not in columns]
    strategies = list(dict.fromkeys(r.ref.strategy for r in runs))
    rows = []
    for strategy in strategies:
        mine = [r for r in runs if r.ref.strategy == strategy]
        for cycle in sorted({c for r in mine for c in r.rows}):
            have = [r for r in mine if cycle in r.rows]
            labeled = {int(r.rows[cycle]["n_labeled"]) for r in have}
            if len(labeled) > 1:
                listing = ", ".join(f"{r.ref.path} has {int(r.rows[cycle]['n_labeled'])}" for r in have)
                raise StudyError(f"{strategy} cycle {cycle}: n_labeled differs across seeds ({listing}); "
                                 "the runs were made with different active.initial/active.budget and cannot be "
                                 "averaged")
            stats = {}
            for column in columns:
                values = [r.rows[cycle][column] for r in have if column in r.rows[cycle]]
                if values:
                    stats[column] = (*mean_std(values), len(values))
            rows.append(SummaryRow(strategy, cycle, labeled.pop(), len(have), stats))
    return Summary(metric, columns, rows, runs, missing)


def _number(value: float) -> str:
    # 10 significant digits: exact enough for any metric, and free of float noise like 0.6000000000000001
    return format(value, ".10g")


def summary_csv(summary: Summary) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["strategy", "cycle", "n_labeled", "n_seeds",
                     *[f"{c}_{stat}" for c in summary.columns for stat in ("mean", "std")]])
    for row in summary.rows:
        cells: list[str] = []
        for column in summary.columns:
            mean, std, _ = row.stats.get(column, (None, None, 0))
            cells += ["", ""] if mean is None else [_number(mean), _number(std)]
        writer.writerow([row.strategy, row.cycle, row.n_labeled, row.n_seeds, *cells])
    return buffer.getvalue()


def metric_scale(metric: str) -> tuple[float, str]:
    """(factor, unit) for showing a metric: fractions as percent."""
    return (100.0, "%") if metric in FRACTION_METRICS else (1.0, "")


def format_metric(metric: str, mean: float, std: float) -> str:
    factor, unit = metric_scale(metric)
    digits = 2 if unit == "%" else 4
    return f"{mean * factor:.{digits}f} ± {std * factor:.{digits}f}"


def read_runs_csv(study_dir: Path) -> dict[tuple[str, int], dict[str, str]]:
    path = Path(study_dir) / "runs.csv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in RUNS_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise StudyError(f"{path}: missing columns {', '.join(missing)}; expected {','.join(RUNS_CSV_COLUMNS)}")
        rows = {}
        for line_no, row in enumerate(reader, start=2):
            try:
                rows[(row["strategy"], int(row["seed"]))] = row
            except ValueError:
                raise StudyError(f"{path} line {line_no}: seed must be an integer, got {row['seed']!r}") from None
        return rows


def _wall(row: dict[str, str] | None) -> float | None:
    try:
        return float(row["wall_s"]) if row and row.get("wall_s") else None
    except ValueError:
        return None


def summary_markdown(summary: Summary, study_dir: Path) -> str:
    study = read_study(study_dir) or {}
    title = Path(study["config"]).stem if study.get("config") else Path(study_dir).name
    factor, unit = metric_scale(summary.metric)
    what = f"{summary.metric} in % (2 decimals)" if unit == "%" else f"{summary.metric} (4 decimals)"
    strategies = list(dict.fromkeys(r.strategy for r in summary.rows))
    labeled = sorted({r.n_labeled for r in summary.rows})
    seeds = {s: sum(1 for r in summary.runs if r.ref.strategy == s) for s in strategies}
    lines = [f"# Study {title}" + (f" ({study['task']})" if study.get("task") else ""), "",
             f"{what}: mean ± sample std over seeds, by number of labeled images; "
             "(n=k) marks a cell with fewer seeds than the strategy's runs.", "",
             "| strategy | " + " | ".join(str(n) for n in labeled) + " |",
             "|---|" + "---:|" * len(labeled)]
    for strategy in strategies:
        cells = []
        for n in labeled:
            row = next((r for r in summary.rows if r.strategy == strategy and r.n_labeled == n), None)
            if row is None or summary.metric not in row.stats:
                cells.append("—")
                continue
            mean, std, count = row.stats[summary.metric]
            fewer = f" (n={count})" if count < seeds[strategy] else ""
            cells.append(format_metric(summary.metric, mean, std) + fewer)
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    walls = read_runs_csv(study_dir)
    lines += ["", "Compute: seconds per cycle (mean over seeds and cycles) and wall seconds per run "
              "(mean over the finished runs with a wall time in runs.csv; a resumed run's attempts added).", "",
              "| strategy | runs | train_s / cycle | eval_s / cycle | select_s / cycle | wall_s / run |",
              "|---|---:|---:|---:|---:|---:|"]
    for strategy in strategies:
        mine = [r for r in summary.runs if r.ref.strategy == strategy]
        cells = []
        for column in TIMING_COLUMNS:
            values = [row[column] for r in mine for row in r.rows.values() if column in row]
            cells.append(f"{mean_std(values)[0]:.1f}" if values else "—")
        # only finished runs: a failed run's wall time is not the cost of a run
        finished = [walls.get((strategy, r.ref.seed)) for r in mine]
        run_walls = [w for row in finished if row and row.get("status") in ("done", "skipped")
                     and (w := _wall(row)) is not None]
        cells.append(f"{mean_std(run_walls)[0]:.1f}" if run_walls else "—")
        lines.append(f"| {strategy} | {len(mine)} | " + " | ".join(cells) + " |")
    if summary.missing:
        lines += ["", "Runs without metrics yet: " + ", ".join(f"{r.strategy}/seed{r.seed}" for r in summary.missing)]
    return "\n".join(lines) + "\n"


def write_summary(study_dir: Path) -> tuple[Summary, str]:
    """Aggregate the study's runs into summary.csv and summary.md; returns the summary and the Markdown."""
    summary = aggregate(study_dir)
    markdown = summary_markdown(summary, study_dir)
    atomic_write_text(Path(study_dir) / "summary.csv", summary_csv(summary))
    atomic_write_text(Path(study_dir) / "summary.md", markdown)
    return summary, markdown


# ---------------------------------------------------------------------------- running the grid


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise StudyError(f"{what}: expected a comma-separated list, got {text!r}")
    dupes = sorted({t for t in items if items.count(t) > 1})
    if dupes:
        raise StudyError(f"{what} lists {', '.join(dupes)} more than once")
    return items


def parse_seeds(text: str) -> list[int]:
    items = parse_list(text, "--seeds")
    try:
        return [int(s) for s in items]
    except ValueError:
        raise StudyError(f"--seeds: expected comma-separated integers such as 0,1,2; got {text!r}") from None


def requested_setting(config: Path, extra_args: Sequence[str], key: str, flag: str | None = None) -> Any:
    """A config key's value as the AL tool will resolve it from the study's config and extra args:
    the YAML's, overridden by ``flag`` (e.g. ``--cycles``), overridden by the last ``--set key=V``
    (the AL tools apply --set after the flags). None when none of them sets it (the tool's default)."""
    try:
        value: Any = read_yaml(config)
    except (OSError, ValueError) as err:
        raise StudyError(f"cannot read config {config}: {err}") from err
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    from_flag = from_set = None
    for i, arg in enumerate(extra_args):
        following = extra_args[i + 1] if i + 1 < len(extra_args) else None
        if flag is not None and (arg == flag or arg.startswith(flag + "=")):
            from_flag = following if arg == flag else arg[len(flag) + 1:]
        assignment = following if arg == "--set" else arg[len("--set="):] if arg.startswith("--set=") else None
        if assignment is not None and assignment.startswith(key + "="):
            from_set = assignment[len(key) + 1:]
    for text in (from_set, from_flag):
        if text is not None:
            try:
                return yaml.safe_load(text)  # parsed as YAML, as the AL tools parse them
            except yaml.YAMLError as err:
                raise StudyError(f"the arguments after `--` set {key} to {text!r}, which is not valid YAML: "
                                 f"{err}") from None
    return value


def dataset_name(config: Path, extra_args: Sequence[str]) -> str | None:
    """``data.name`` as the AL tool will see it: the config's, unless ``--set data.name=X`` overrides it."""
    name = requested_setting(config, extra_args, "data.name")
    return None if name is None else str(name)


def requested_active(config: Path, extra_args: Sequence[str]) -> tuple[int | None, bool | None]:
    """(active.cycles, active.select_after_last) the study asks for; None where the tool's default applies."""
    cycles = requested_setting(config, extra_args, "active.cycles", "--cycles")
    after_last = requested_setting(config, extra_args, "active.select_after_last")
    if cycles is not None and (isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1):
        raise StudyError(f"{config} / arguments after `--`: active.cycles must be a positive integer, got {cycles!r}")
    if after_last is not None and not isinstance(after_last, bool):
        raise StudyError(f"{config} / arguments after `--`: active.select_after_last must be true or false, "
                         f"got {after_last!r}")
    return cycles, after_last


def infer_task(config: Path, extra_args: Sequence[str] = ()) -> str:
    """``cls`` or ``seg`` from the dataset registries that know ``data.name``."""
    name = dataset_name(config, extra_args)
    if name is None:
        raise StudyError(f"{config}: no data.name to tell classification from segmentation; pass --task cls|seg")
    # imported here, not at the top: the registries pull in torchvision/albumentations, which
    # aggregation and plotting do not need
    from tavaal_cls.data import CLS_DATASETS
    from tavaal_seg.data import SEG_DATASETS

    tasks = [task for task, registry in (("cls", CLS_DATASETS), ("seg", SEG_DATASETS)) if name in registry]
    if len(tasks) != 1:
        where = "both among" if tasks else "neither among"
        raise StudyError(
            f"{config}: data.name {name!r} is {where} the classification datasets ({', '.join(sorted(CLS_DATASETS))}) "
            f"{'and' if tasks else 'nor'} the segmentation datasets ({', '.join(sorted(SEG_DATASETS))}); "
            "pass --task cls|seg")
    return tasks[0]


def tool_prefix(task: str, tool: Path | None = None) -> list[str]:
    """How to start the AL tool: ``tool`` (a script) when given, else ``tools/al_<task>.py`` of the
    checkout, else (an installed package without the tools folder) the package's CLI."""
    if tool is not None:
        return [sys.executable, str(tool)]
    script = REPO_ROOT / "tools" / f"al_{task}.py"
    if script.exists():
        return [sys.executable, str(script)]
    package = "tavaal_cls" if task == "cls" else "tavaal_seg"
    return [sys.executable, "-c", f"import sys; from {package}.cli import main; sys.exit(main())"]


def build_command(task: str, config: Path, strategy: str, seed: int, run_dir: Path, resume: bool,
                  extra_args: Sequence[str], tool: Path | None = None) -> list[str]:
    return [*tool_prefix(task, tool), "--config", str(config), "--strategy", strategy, "--seed", str(seed),
            "--run-dir", str(run_dir), *(["--resume"] if resume else []), *extra_args]


def study_record(config: Path, strategies: Sequence[str], seeds: Sequence[int], task: str,
                 extra_args: Sequence[str]) -> dict[str, Any]:
    return {
        "format": STUDY_FORMAT, "config": str(config.resolve()),
        # the content too: an edited config under the same name is a different study
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "strategies": list(strategies), "seeds": list(seeds), "task": task,
        "extra_args": list(extra_args), "metric": TASK_METRICS[task],
    }


def study_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Changes that make the runs already made a different study. Seeds are not among them:
    adding seeds extends the same study."""
    return [f"  {key}: {old.get(key, '<absent>')!r} -> {new[key]!r}"
            for key in ("config", "config_sha256", "strategies", "task", "extra_args")
            if old.get(key, "<absent>") != new[key]]


@dataclasses.dataclass
class PlannedRun:
    ref: RunRef
    phase: str          # fresh | resume | finished
    command: list[str]
    cycles: int | None = None               # what the study asks for (None: the run's config.yaml says)
    select_after_last: bool | None = None


class StudyRunner:
    """Runs the planned AL runs, ``jobs`` at a time, and keeps ``runs.csv`` current after each."""

    def __init__(self, study_dir: Path, plan: Sequence[PlannedRun], jobs: int, env: dict[str, str],
                 echo: Callable[[str], None] = say) -> None:
        self.study_dir, self.plan, self.jobs, self.env, self.echo = Path(study_dir), list(plan), jobs, env, echo
        self._lock = threading.Lock()  # runs.csv rows and console lines, shared by the worker threads
        previous = read_runs_csv(self.study_dir)
        self.rows: dict[tuple[str, int], dict[str, str]] = {}
        self.previous_wall: dict[tuple[str, int], float] = {}
        for p in self.plan:
            key = (p.ref.strategy, p.ref.seed)
            old = previous.get(key)
            if p.phase == "finished":
                # a skipped run keeps what its earlier study run recorded (its wall time above all)
                self.rows[key] = {**(old or {}), "strategy": p.ref.strategy, "seed": str(p.ref.seed),
                                  "status": "skipped"}
                self.rows[key].setdefault("command", "")
                for column in ("exit_code", "wall_s"):
                    self.rows[key].setdefault(column, "")
            else:
                if p.phase == "resume" and _wall(old) is not None:
                    # a resumed run's compute is all of its attempts
                    self.previous_wall[key] = _wall(old)  # type: ignore[assignment]
                self.rows[key] = {"strategy": p.ref.strategy, "seed": str(p.ref.seed), "status": "pending",
                                  "exit_code": "", "wall_s": "", "command": shlex.join(p.command)}
        self.failed: list[tuple[PlannedRun, str]] = []

    def write_runs_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RUNS_CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for p in self.plan:
            writer.writerow(self.rows[(p.ref.strategy, p.ref.seed)])
        atomic_write_text(self.study_dir / "runs.csv", buffer.getvalue())

    def _run_one(self, planned: PlannedRun, index: int, total: int) -> None:
        key = (planned.ref.strategy, planned.ref.seed)
        run_dir = planned.ref.path
        run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.rows[key]["status"] = "running"
            self.write_runs_csv()
            self.echo(f"[{index}/{total}] {planned.ref.strategy} seed {planned.ref.seed}: {planned.phase} -> "
                      f"{run_dir / 'stdout.log'}")
        start = time.perf_counter()
        with open(run_dir / "stdout.log", "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} run_study ({planned.phase}): "
                      f"{shlex.join(planned.command)}\n")
            log.flush()
            try:
                code = subprocess.run(planned.command, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self.env).returncode
            except OSError as err:  # the interpreter or the tool could not be started
                log.write(f"run_study: cannot start the run: {err}\n")
                code = 127
        wall = time.perf_counter() - start + self.previous_wall.get(key, 0.0)
        if code == 0:
            finished = run_phase(run_dir, planned.cycles, planned.select_after_last) == "finished"
            status = "done" if finished else "incomplete"
        else:
            status = "interrupted" if code == EXIT_INTERRUPTED else "failed"
        with self._lock:
            self.rows[key].update(status=status, exit_code=str(code), wall_s=f"{wall:.1f}")
            self.write_runs_csv()
            if status != "done":
                self.failed.append((planned, status))
            self.echo(f"[{index}/{total}] {planned.ref.strategy} seed {planned.ref.seed}: {status} "
                      f"(exit {code}) in {wall:.1f} s")

    def run(self) -> None:
        todo = [p for p in self.plan if p.phase != "finished"]
        for p in self.plan:
            if p.phase == "finished":
                self.echo(f"{p.ref.strategy} seed {p.ref.seed}: finished, skipped ({p.ref.path})")
        self.write_runs_csv()
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(self._run_one, p, i, len(todo)) for i, p in enumerate(todo, start=1)]
            try:
                for future in concurrent.futures.as_completed(futures):
                    future.result()
            except KeyboardInterrupt:
                # the runs got the same SIGINT and stop on their own; start no more
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def run_study_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_study.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --config X --strategies S1,S2 --seeds 0,1,2 --out DIR [--task cls|seg] [--jobs N] "
              "[--threads N] [--force] [-- args for the AL tool]\n"
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
    parser.add_argument("--strategies", help="comma-separated: random,entropy,coreset,lloss,vaal,tavaal")
    parser.add_argument("--seeds", help="comma-separated run seeds, e.g. 0,1,2")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the study directory")
    parser.add_argument("--task", choices=TASKS,
                        help="cls (tools/al_cls.py) or seg (tools/al_seg.py); default: from the config's data.name")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads per run (OMP_NUM_THREADS, MKL_NUM_THREADS); default with --jobs N > 1: "
                             "CPU cores / N, so that concurrent runs do not oversubscribe the CPU")
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


def prepare_study(args: argparse.Namespace, extra_args: list[str]) -> tuple[dict[str, Any], list[PlannedRun]]:
    """Check the arguments, write (or check) study.json, and plan every run."""
    missing = [flag for flag, value in (("--config", args.config), ("--strategies", args.strategies),
                                        ("--seeds", args.seeds)) if value is None]
    if missing:
        raise StudyError(f"{', '.join(missing)} required (or --aggregate-only)")
    if not args.config.is_file():
        raise StudyError(f"config file {args.config} not found")
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise StudyError("--jobs and --threads must be at least 1")
    strategies = parse_list(args.strategies, "--strategies")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise StudyError(f"--strategies: unknown {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
    seeds = parse_seeds(args.seeds)
    clash = [a for a in extra_args if a.split("=", 1)[0] in RESERVED_FLAGS]
    if clash:
        raise StudyError(f"the arguments after `--` may not contain {', '.join(clash)}: the study sets "
                         f"{', '.join(RESERVED_FLAGS)} for each run itself")
    if args.tool is not None and not args.tool.is_file():
        raise StudyError(f"--tool {args.tool} not found")
    task = args.task or infer_task(args.config, extra_args)
    cycles, after_last = requested_active(args.config, extra_args)
    record = study_record(args.config, strategies, seeds, task, extra_args)
    study_json = args.out / "study.json"
    old = read_study(args.out)
    if old is not None:
        diff = study_differences(old, record)
        if diff and not args.force:
            raise StudyError(f"{study_json} records another study; differences (old -> new):\n" + "\n".join(diff)
                             + "\npass --force to go on with the new settings (finished runs are kept), "
                               "or choose another --out")
        if diff:
            print("run_study.py: --force: the study changed (old -> new):\n" + "\n".join(diff), file=sys.stderr)
        # running some of the seeds again (to finish one, say) must not drop the others from the study
        record["seeds"] = list(old.get("seeds", [])) + [k for k in seeds if k not in old.get("seeds", [])]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study_json, json.dumps(record, indent=1) + "\n")
    plan = []
    for strategy in strategies:
        for seed in seeds:
            path = run_path(args.out, strategy, seed)
            phase = run_phase(path, cycles, after_last)
            plan.append(PlannedRun(RunRef(strategy, seed, path), phase, build_command(
                task, args.config, strategy, seed, path, phase == "resume", extra_args, args.tool),
                cycles, after_last))
    return record, plan


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
        _, plan = prepare_study(args, extra_args)
        runner = StudyRunner(args.out, plan, args.jobs, env)
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


# ---------------------------------------------------------------------------- figures


@dataclasses.dataclass
class PlotResult:
    written: list[Path]
    skipped: dict[str, str]  # figure name -> why it was not drawn


def _figure(size: tuple[float, float] = FIG_SIZE) -> Any:
    """A pyplot-free figure: no global figure registry, no GUI backend, nothing to close."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise StudyError("plotting needs matplotlib: pip install 'tavaal-seg[plot]' "
                         "(or pip install matplotlib)") from None
    return Figure(figsize=size, dpi=FIG_DPI)


def supported_formats() -> set[str]:
    return set(_figure().canvas.get_supported_filetypes())


def _save(fig: Any, out_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    fig.tight_layout()
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        if fmt == "png":
            # a 256-colour palette: a plot has few colours, and the file gets ~3x smaller (a scatter of
            # thousands of candidates stays well under 150 KB) with no visible change
            from PIL import Image

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=FIG_DPI)
            buffer.seek(0)
            with Image.open(buffer) as image:
                image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
                    .save(path, format="png", optimize=True)
        else:
            fig.savefig(path, format=fmt, dpi=FIG_DPI)
        paths.append(path)
    return paths


def _by_strategy(runs: Sequence[RunMetrics], column: str) -> dict[str, dict[int, dict[int, tuple[int, float]]]]:
    """strategy -> seed -> cycle -> (n_labeled, value of column)."""
    out: dict[str, dict[int, dict[int, tuple[int, float]]]] = {}
    for r in runs:
        per_cycle = {c: (int(row["n_labeled"]), row[column]) for c, row in r.rows.items() if column in row}
        if per_cycle:
            out.setdefault(r.ref.strategy, {})[r.ref.seed] = per_cycle
    return out


def _band(ax: Any, xs: Sequence[float], values: Sequence[Sequence[float]], color: str, label: str) -> None:
    stats = [mean_std(v) for v in values]
    means = [m for m, _ in stats]
    lows = [m - s for m, s in stats]
    highs = [m + s for m, s in stats]
    ax.plot(xs, means, marker="o", markersize=4, color=color, label=label)
    ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)


def _curves(data: dict[str, dict[int, dict[int, tuple[int, float]]]], factor: float,
            baseline: dict[int, dict[int, tuple[int, float]]] | None = None
            ) -> dict[str, tuple[list[float], list[list[float]]]]:
    """strategy -> (x = labeled images per cycle, values per cycle over seeds); with a baseline,
    each value minus the baseline's at the same seed and cycle (paired by seed)."""
    curves = {}
    for strategy, seeds in data.items():
        cycles = sorted({c for per in seeds.values() for c in per})
        xs, values = [], []
        for cycle in cycles:
            vals, labeled = [], []
            for seed, per in seeds.items():
                if cycle not in per:
                    continue
                if baseline is not None and cycle not in baseline.get(seed, {}):
                    continue
                n, v = per[cycle]
                vals.append((v - (baseline[seed][cycle][1] if baseline is not None else 0.0)) * factor)
                labeled.append(n)
            if vals:
                xs.append(float(mean_std(labeled)[0]))
                values.append(vals)
        if xs:
            curves[strategy] = (xs, values)
    return curves


def _plot_lines(curves: dict[str, tuple[list[float], list[list[float]]]], colors: dict[str, str],
                xlabel: str, ylabel: str, title: str, zero_line: bool = False) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    for strategy, (xs, values) in curves.items():
        n = max(len(v) for v in values)
        _band(ax, xs, values, colors[strategy], f"{strategy} (n={n})")
    if zero_line:
        ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def read_candidates(path: Path) -> dict[str, list[float]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CANDIDATE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise StudyError(f"{path}: missing columns {', '.join(missing)}; expected {','.join(CANDIDATE_COLUMNS)}")
        out: dict[str, list[float]] = {"score": [], "true_loss": [], "selected": []}
        for line_no, row in enumerate(reader, start=2):
            try:
                for key in out:
                    out[key].append(float(row[key]))
            except ValueError:
                raise StudyError(f"{path} line {line_no}: score, true_loss and selected must be numbers") from None
    return out


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Rank correlation: how well the score orders the true loss (the point of Fig 8)."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = mean_std(rx)[0], mean_std(ry)[0]
    cov = math.fsum((a - mx) * (b - my) for a, b in zip(rx, ry))
    norm = math.sqrt(math.fsum((a - mx) ** 2 for a in rx) * math.fsum((b - my) ** 2 for b in ry))
    return cov / norm if norm > 0 else float("nan")


def last_candidates(ref: RunRef) -> tuple[int, Path] | None:
    """The last cycle of a run that has selections/cycle_NN.candidates.csv."""
    found = []
    for path in (ref.path / "selections").glob("cycle_*.candidates.csv"):
        number = path.name[len("cycle_"):-len(".candidates.csv")]
        if number.isdigit():
            found.append((int(number), path))
    return max(found) if found else None


def plot_study(study_dir: Path, out_dir: Path | None = None, formats: Sequence[str] = ("png",),
               metric: str | None = None, echo: Callable[[str], None] = say) -> PlotResult:
    """Draw curve, improvement, class_entropy and loss_vs_score into ``out_dir``; what cannot be
    drawn (no random run, no entropy column, no candidates file) is skipped with a note."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise StudyError(f"study directory {study_dir} not found")
    runs, _ = load_runs(study_dir)
    if not runs:
        raise StudyError(f"{study_dir} has no runs with metrics (expected runs/<strategy>/seed<k>/metrics.csv)")
    supported = supported_formats()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise StudyError(f"--format: unsupported {', '.join(bad)}; choose from {', '.join(sorted(supported))}")
    metric = metric or check_metric(runs)
    available = list(dict.fromkeys(c for r in runs for c in r.columns))
    if metric not in available:
        raise StudyError(f"--metric {metric!r} is in no run's metrics.csv; columns: {', '.join(available)}")
    out_dir = Path(out_dir) if out_dir is not None else study_dir / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    study = read_study(study_dir) or {}
    title = Path(study["config"]).stem if study.get("config") else study_dir.name
    strategies = list(dict.fromkeys(r.ref.strategy for r in runs))
    colors = strategy_colors(strategies)
    factor, unit = metric_scale(metric)
    result = PlotResult([], {})

    def save(fig: Any, name: str) -> None:
        for path in _save(fig, out_dir, name, formats):
            result.written.append(path)
            echo(f"wrote {path}")

    def skip(name: str, why: str) -> None:
        result.skipped[name] = why
        echo(f"skipped {name}: {why}")

    data = _by_strategy(runs, metric)
    ylabel = f"{metric} ({unit})" if unit else metric
    save(_plot_lines(_curves(data, factor), colors, "labeled images", ylabel,
                     f"{title}: {metric} vs labeled images (mean ± std over seeds)"), "curve")

    if "random" not in data:
        skip("improvement", "the study has no random runs to compare with")
    else:
        others = {s: v for s, v in data.items() if s != "random"}
        curves = _curves(others, factor, baseline=data["random"])
        if not curves:
            skip("improvement", "no strategy shares a seed with random")
        else:
            diff_unit = " (percentage points)" if unit == "%" else ""
            save(_plot_lines(curves, colors, "labeled images", f"{metric} − random{diff_unit}",
                             f"{title}: improvement over random, paired by seed (mean ± std)", zero_line=True),
                 "improvement")

    entropy = _by_strategy(runs, ENTROPY_COLUMN)
    if not entropy:
        skip("class_entropy", f"no run's metrics.csv has a {ENTROPY_COLUMN} column")
    else:
        save(_plot_lines(_curves(entropy, 1.0), colors, "labeled images", "class entropy of the labeled set (nats)",
                         f"{title}: labeled-set class balance (mean ± std over seeds)"), "class_entropy")

    panels = []
    for strategy in strategies:
        for r in sorted((r for r in runs if r.ref.strategy == strategy), key=lambda r: r.ref.seed):
            found = last_candidates(r.ref)
            if found is not None:
                panels.append((r.ref, *found))
                break
    if not panels:
        skip("loss_vs_score", "no run has selections/cycle_NN.candidates.csv")
    else:
        fig = _figure((min(3.3 * len(panels), 12.0), 3.8) if len(panels) > 1 else FIG_SIZE)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (ref, cycle, path) in zip(axes, panels):
            cand = read_candidates(path)
            picked = [s > 0.5 for s in cand["selected"]]
            for chosen, color, label, size in ((False, "#c8c8c8", "not selected", 5), (True, colors[ref.strategy],
                                                                                       "selected", 9)):
                xs = [x for x, p in zip(cand["score"], picked) if p is chosen]
                ys = [y for y, p in zip(cand["true_loss"], picked) if p is chosen]
                # rasterized: thousands of points would make the SVG huge
                ax.scatter(xs, ys, s=size, color=color, alpha=0.6 if chosen else 0.5, linewidths=0,
                           label=f"{label} ({len(xs)})", rasterized=True)
            rho = spearman(cand["score"], cand["true_loss"]) if len(cand["score"]) > 2 else float("nan")
            ax.set_title(f"{ref.strategy}, seed {ref.seed}, cycle {cycle}\nSpearman ρ = {rho:.2f}", fontsize=9)
            ax.set_xlabel(SCORE_LABELS.get(ref.strategy, "score"), fontsize=8)
            ax.set_ylabel("true task loss", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, markerscale=1.5)
        fig.suptitle(f"{title}: true loss vs the strategy's score of the candidates", fontsize=10)
        save(fig, "loss_vs_score")
    return result


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
