"""Running a study's grid: one AL run per (strategy, seed), each a subprocess of
``tools/al_cls.py`` or ``tools/al_seg.py`` (so that one crash does not end the study and each
run's memory goes back to the system); finished runs are skipped, unfinished ones resumed."""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.cli import add_run_flags, overrides_from_args
from ..core.config import parse_override, read_yaml, set_dotted
from ..core.errors import ConfigError
from ..core.plugins import import_plugins
from ..core.runtime import atomic_write_text
from ..core.strategies import STRATEGIES
from .gpus import GpuAssigner, check_memory, measure_run_mib, query_gpus, select_gpus
# the task packages a study can run, imported only when a study needs one (aggregation and
# plotting import no adapter)
from ..tasks import TASKS, load_task
from .layout import (EXIT_INTERRUPTED, RUNS_CSV_COLUMNS, STUDY_FORMAT, RunRef, StudyError, _wall, parse_list,
                     parse_seeds, read_runs_csv, read_study, run_path, run_phase, say)

REPO_ROOT = Path(__file__).resolve().parents[2]
# the study sets these per run; passing them after `--` would contradict the grid
RESERVED_FLAGS = ("--config", "--strategy", "--seed", "--run-dir", "--resume", "--dry-run")


def requested_setting(config: Path, extra_args: Sequence[str], key: str) -> Any:
    """A config key's value as the AL tool will resolve it from the study's config and the
    arguments after ``--``: the arguments are parsed by the tools' own parser and applied in the
    tools' own order (:func:`core.cli.overrides_from_args`). None when nothing sets it (the
    tool's default applies)."""
    parser = add_run_flags(argparse.ArgumentParser(add_help=False, exit_on_error=False))
    try:
        args, _ = parser.parse_known_args(list(extra_args))
    except argparse.ArgumentError as err:
        raise StudyError(f"the arguments after `--`: {err}") from None
    try:
        raw: Any = read_yaml(config)
        for text in overrides_from_args(args):
            path, value = parse_override(text)
            set_dotted(raw, path, value)
    except (OSError, ValueError) as err:  # ConfigError is a ValueError
        raise StudyError(f"{config} / arguments after `--`: {err}") from err
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def dataset_name(config: Path, extra_args: Sequence[str]) -> str | None:
    """``data.name`` as the AL tool will see it: the config's, unless ``--set data.name=X`` overrides it."""
    name = requested_setting(config, extra_args, "data.name")
    return None if name is None else str(name)


def requested_active(config: Path, extra_args: Sequence[str]) -> tuple[int | None, bool | None]:
    """(active.cycles, active.select_after_last) the study asks for; None where the tool's default applies."""
    cycles = requested_setting(config, extra_args, "active.cycles")
    after_last = requested_setting(config, extra_args, "active.select_after_last")
    if cycles is not None and (isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1):
        raise StudyError(f"{config} / arguments after `--`: active.cycles must be a positive integer, got {cycles!r}")
    if after_last is not None and not isinstance(after_last, bool):
        raise StudyError(f"{config} / arguments after `--`: active.select_after_last must be true or false, "
                         f"got {after_last!r}")
    return cycles, after_last


def infer_task(config: Path, extra_args: Sequence[str] = ()) -> str:
    """The task (``cls``, ``seg``) whose dataset registry knows ``data.name``."""
    name = dataset_name(config, extra_args)
    if name is None:
        raise StudyError(f"{config}: no data.name to tell the task; pass --task {'|'.join(TASKS)}")
    specs = {task: load_task(task) for task in TASKS}
    tasks = [task for task, spec in specs.items() if name in spec.datasets]
    if len(tasks) != 1:
        known = "; ".join(f"{task}: {', '.join(sorted(spec.datasets))}" for task, spec in specs.items())
        raise StudyError(f"{config}: data.name {name!r} is {'in several' if tasks else 'in none'} of the tasks' "
                         f"dataset registries ({known}); pass --task {'|'.join(TASKS)}")
    return tasks[0]


def tool_prefix(task: str, tool: Path | None = None) -> list[str]:
    """How to start the AL tool: ``tool`` (a script) when given, else the checkout's
    ``tools/<script>``, else (an installed package without the tools folder) the task's CLI module."""
    if tool is not None:
        return [sys.executable, str(tool)]
    spec = load_task(task)
    script = REPO_ROOT / "tools" / spec.tool
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", f"import sys; from {spec.cli} import main; sys.exit(main())"]


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
        "extra_args": list(extra_args), "metric": load_task(task).metric_name,
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
                 echo: Callable[[str], None] = say, gpus: GpuAssigner | None = None) -> None:
        self.study_dir, self.plan, self.jobs, self.env, self.echo = Path(study_dir), list(plan), jobs, env, echo
        self.gpus = gpus  # runs packed on GPUs: each run gets the least-loaded one
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
        # runs of the study that this invocation does not touch (a call adding seeds 3,4 to a
        # study of seeds 0-2) keep their rows: runs.csv is the study's record, not the call's
        self.untouched = [row for key, row in previous.items() if key not in self.rows]
        self.failed: list[tuple[PlannedRun, str]] = []

    def write_runs_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RUNS_CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.untouched)
        for p in self.plan:
            writer.writerow(self.rows[(p.ref.strategy, p.ref.seed)])
        atomic_write_text(self.study_dir / "runs.csv", buffer.getvalue())

    def _run_one(self, planned: PlannedRun, index: int, total: int) -> None:
        key = (planned.ref.strategy, planned.ref.seed)
        run_dir = planned.ref.path
        run_dir.mkdir(parents=True, exist_ok=True)
        gpu = self.gpus.acquire() if self.gpus is not None else None
        env = self.env if gpu is None else {**self.env, "CUDA_VISIBLE_DEVICES": gpu.uuid}
        where = "" if gpu is None else f" on {gpu}"
        with self._lock:
            self.rows[key]["status"] = "running"
            self.write_runs_csv()
            self.echo(f"[{index}/{total}] {planned.ref.strategy} seed {planned.ref.seed}: {planned.phase}{where} -> "
                      f"{run_dir / 'stdout.log'}")
        start = time.perf_counter()
        with open(run_dir / "stdout.log", "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} run_study ({planned.phase}{where}"
                      f"{'' if gpu is None else ', CUDA_VISIBLE_DEVICES=' + gpu.uuid}): {shlex.join(planned.command)}\n")
            log.flush()
            try:
                code = subprocess.run(planned.command, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env).returncode
            except OSError as err:  # the interpreter or the tool could not be started
                log.write(f"run_study: cannot start the run: {err}\n")
                code = 127
            finally:
                if gpu is not None:
                    self.gpus.release(gpu)
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


def write_study_record(study_dir: Path, record: dict[str, Any]) -> None:
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(study_dir) / "study.json", json.dumps(record, indent=1) + "\n")


def prepare_study(args: argparse.Namespace, extra_args: list[str]) -> tuple[dict[str, Any], list[PlannedRun]]:
    """Check the arguments and study.json, and plan every run; the record to write to study.json
    (:func:`write_study_record`) once the runs are about to start."""
    missing = [flag for flag, value in (("--config", args.config), ("--strategies", args.strategies),
                                        ("--seeds", args.seeds)) if value is None]
    if missing:
        raise StudyError(f"{', '.join(missing)} required (or --aggregate-only)")
    if not args.config.is_file():
        raise StudyError(f"config file {args.config} not found")
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise StudyError("--jobs and --threads must be at least 1")
    strategies = parse_list(args.strategies, "--strategies")
    plugins = requested_setting(args.config, extra_args, "plugins") or []
    try:  # the strategies they register are the study's too (each run imports them again)
        import_plugins(plugins if isinstance(plugins, list) else [plugins])
    except ConfigError as err:
        raise StudyError(f"{args.config} / arguments after `--`: {err}") from None
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
    plan = []
    for strategy in strategies:
        for seed in seeds:
            path = run_path(args.out, strategy, seed)
            phase = run_phase(path, cycles, after_last)
            plan.append(PlannedRun(RunRef(strategy, seed, path), phase, build_command(
                task, args.config, strategy, seed, path, phase == "resume", extra_args, args.tool),
                cycles, after_last))
    return record, plan


def plan_gpus(config: Path, extra_args: Sequence[str], plan: Sequence[PlannedRun], jobs: int, wanted: str | None,
              per_run_mib: int | None, env: dict[str, str], echo: Callable[[str], None] = say) -> GpuAssigner | None:
    """Where ``jobs`` concurrent runs go when their device is CUDA (``cuda``, or ``auto`` on a
    machine whose nvidia-smi lists GPUs): a GPU per run, the least-loaded one, after checking that
    the GPUs' free memory holds them. None: leave the runs' environment alone (one run at a time,
    or runs on the CPU)."""
    todo = [p for p in plan if p.phase != "finished"]
    concurrent = min(jobs, len(todo))
    device = requested_setting(config, extra_args, "device") or "auto"
    if concurrent < 2 or device == "cpu":
        return None
    gpus = query_gpus(required=device == "cuda")
    if not gpus:
        return None
    gpus = select_gpus(gpus, wanted)
    if not gpus:
        raise StudyError("CUDA_VISIBLE_DEVICES is empty: no GPU to run on; unset it or pass --gpus")
    if per_run_mib is not None:
        need, how = per_run_mib, "--gpu-memory-per-run"
    else:  # the run that needs the most: the VAE game and the ranker where the study has them
        hungriest = max(todo, key=lambda p: (STRATEGIES[p.ref.strategy].trains_vae,
                                             STRATEGIES[p.ref.strategy].trains_ranker))
        need, how = measure_run_mib(hungriest.command, gpus[0], env, echo)
    check_memory(gpus, concurrent, need, how)
    echo(f"{concurrent} runs at a time on {', '.join(str(g) for g in gpus)}: {need:,} MiB each ({how})")
    return GpuAssigner(gpus)
