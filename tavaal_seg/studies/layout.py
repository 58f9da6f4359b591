"""A study directory: its runs, its record and its runs table.

Layout::

    DIR/study.json                 what was asked (config, strategies, seeds, task, extra args, metric)
    DIR/runs/<strategy>/seed<k>/   one AL run each (metrics.csv, state.json, config.yaml, stdout.log, ...)
    DIR/runs.csv                   strategy,seed,status,exit_code,wall_s,command
    DIR/summary.csv, summary.md    the aggregate
    DIR/figures/                   plot_curves' output
"""
from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.config import read_yaml
from ..core.state import RunState
from ..core.strategies import STRATEGIES

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
STUDY_FORMAT = 1
RUNS_CSV_COLUMNS = ("strategy", "seed", "status", "exit_code", "wall_s", "command")


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
    """Registered strategies in the core registry's order (the paper's), then others alphabetically."""
    known = [s for s in STRATEGIES if s in strategies]
    return known + sorted(s for s in set(strategies) if s not in STRATEGIES)


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
    """``finished``, ``resume`` (a state.json exists but cycles are missing) or ``fresh``, by the
    core's own rule (:meth:`RunState.finished`). ``cycles`` and ``select_after_last`` come from the
    run's config.yaml unless the study asks for others (e.g. a study extended with
    ``-- --cycles 10``, which the AL tools resume). An unreadable state or config counts as
    unfinished: the AL tool, resumed, says what is wrong with it in the run's stdout.log."""
    state_path, config_path = run_dir / "state.json", run_dir / "config.yaml"
    if not state_path.exists():
        return "fresh"
    try:
        state = RunState.load(state_path)
        if cycles is None or select_after_last is None:
            active = read_yaml(config_path)["active"]
            cycles = int(active["cycles"]) if cycles is None else cycles
            if select_after_last is None:
                select_after_last = bool(active.get("select_after_last", False))
    except (OSError, ValueError, KeyError, TypeError):  # ConfigError is a ValueError
        return "resume"
    return "finished" if state.finished(cycles, select_after_last) else "resume"


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
