"""Aggregating a study: every run's metrics.csv, mean ± sample std over seeds per (strategy,
cycle), written as summary.csv and summary.md (with a compute table)."""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path

from ..core.runtime import atomic_write_text
from .layout import RunRef, StudyError, _wall, discover_runs, read_runs_csv, read_study

TIMING_COLUMNS = ("train_s", "eval_s", "select_s")
# metrics in [0, 1] that read better as percent (the paper reports accuracy and mIoU in %)
FRACTION_METRICS = frozenset({"accuracy", "mIoU", "pixel_acc"})


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
