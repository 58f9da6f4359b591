"""The command line both tools share (``tools/al_cls.py``, ``tools/al_seg.py``)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import DEVICES, BaseConfig, ConfigError, allowed_values, find_config, read_yaml, shipped_configs, walk_keys
from .distributed import Distributed, exit_process, init_distributed, relayed
from .errors import BadInput, internal_error_message, user_message
from .estimate import Estimate, measure, peak_gpu_mib, plan_run, vae_image_bytes
from .labels import LabelsNeeded
from .lock import RunDirLocked
from .loop import ActiveLearningRun, check_pool_inputs
from .runtime import LOG, Precision, log_traceback, resolve_device, setup_logging
from .state import RunState
from .strategies import STRATEGIES, get_strategy
from .validation import load_config

DRY_RUN_FORMATS = ("table", "json")
# 1: an internal error (a bug, or a failure deep in torch), traceback in run.log; 3: human mode
# waits for labels (not an error: label, then --resume); 75: sysexits' EX_TEMPFAIL
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_LABELS_NEEDED, EXIT_RUN_DIR_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 75, 130

# flag -> dotted config key; every other value goes through --set
FLAG_KEYS = {
    "strategy": "active.strategy", "cycles": "active.cycles", "initial": "active.initial",
    "budget": "active.budget", "subset": "active.subset", "epochs": "train.epochs",
    "device": "device", "seed": "seed", "run_dir": "run_dir", "data_root": "data.root",
}


def describe_keys(cls: type) -> list[str]:
    """--help lines for every config key, walked from the config dataclasses: ``key = default
    (type)``, then its description and, for an enumerated key, its allowed values (read from the
    registries, so names registered later are listed too)."""
    lines = []
    for key, f, tp in walk_keys(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        type_name = str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
        lines.append(f"  {key} = {default!r}  ({type_name})")
        allowed = allowed_values(f)
        listed = "; among others: " if f.metadata.get("open_choices") else "; one of: "
        text = f.metadata.get("help", "") + (f"{listed}{', '.join(map(str, allowed))}" if allowed else "")
        lines += textwrap.wrap(text, width=110, initial_indent="      ", subsequent_indent="      ")
    return lines


def task_configs(config_cls: type) -> list[str]:
    """The shipped configs whose ``data.name`` this tool's config class accepts."""
    datasets = next((allowed_values(f) for key, f, _ in walk_keys(config_cls) if key == "data.name"), None)
    names = []
    for name in shipped_configs():
        data = read_yaml(find_config(name)).get("data") or {}
        if datasets is None or data.get("name", config_cls().data.name) in datasets:  # type: ignore[attr-defined]
            names.append(name)
    return names


def add_run_flags(parser: argparse.ArgumentParser, label_csv: bool = True) -> argparse.ArgumentParser:
    """The flags every AL tool takes besides ``--config`` (also parsed by the studies runner, which
    must read the arguments it passes on exactly as the tool will). ``label_csv``: the tool's
    labels arrive as ``image_id,label`` CSV files (classification), so ``--labels`` is offered."""
    parser.add_argument("--data-root", help="dataset folder (config data.root; else $TAVAAL_DATA_ROOT)")
    parser.add_argument("--run-dir", help="where state, metrics, selections and logs go (config run_dir)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its last completed step")
    parser.add_argument("--force", action="store_true",
                        help="with --resume: continue although the config differs from the run's (the diff is logged)")
    if label_csv:
        parser.add_argument("--labels", dest="label_files", type=Path, action="append", default=[], metavar="CSV",
                            help="labels.mode human: import an image_id,label CSV of delivered labels before "
                                 "resuming (repeatable; stored in the run dir)")
    parser.add_argument("--strategy", help=f"{' | '.join(sorted(STRATEGIES))} (active.strategy; a module named in "
                                           "the config key plugins adds more with register_strategy)")
    parser.add_argument("--cycles", type=int, help="train/evaluate rounds (active.cycles)")
    parser.add_argument("--initial", type=int, help="images labeled at random before cycle 1 (active.initial)")
    parser.add_argument("--budget", type=int, help="images selected per cycle (active.budget)")
    parser.add_argument("--subset", type=int, help="unlabeled images scored per cycle (active.subset)")
    parser.add_argument("--epochs", type=int, help="task-model epochs per cycle (train.epochs)")
    parser.add_argument("--device", choices=list(DEVICES), help="compute device (device)")
    parser.add_argument("--seed", type=int, help="run seed (seed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.lr=0.01 (repeatable; value parsed as YAML)")
    return parser


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The dotted overrides that the flags and ``--set`` give, in the order they apply: the flags
    (``--cycles 7`` -> ``active.cycles=7``), then every ``--set``, so that ``--set`` wins."""
    overrides = []
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}" if not isinstance(value, str) else f"{key}={_quote(value)}")
    return [*overrides, *args.overrides]


def build_parser(prog: str, description: str, config_cls: type, default_config: str,
                 label_csv: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (set in the YAML file or with --set key=value; shown with their defaults):\n"
               + "\n".join(describe_keys(config_cls))
               + "\n\nexit codes: 0 done, 1 internal error (a bug or a failure inside torch; the full traceback "
                 "is in RUN_DIR/run.log), 2 bad input (config, data, weights, labels, run dir), 3 waiting for "
                 "labels (labels.mode human: label what the message lists, then --resume), 75 run dir in use by "
                 "another process, 130 interrupted"
               + "\n\nseveral processes: start the same command under torchrun (e.g. torchrun --standalone "
                 "--nproc_per_node 4 ...); batch sizes are global, only rank 0 writes the run dir "
                 "(docs/distributed.md)")
    parser.add_argument("--config", default=default_config,
                        help=f"experiment YAML: a path, or the name of a shipped config "
                             f"({', '.join(task_configs(config_cls))}; default: {default_config})")
    add_run_flags(parser, label_csv)
    parser.add_argument("--dry-run", nargs="?", const="table", choices=DRY_RUN_FORMATS, metavar="FORMAT",
                        help="print what the run will cost and write nothing: per cycle and in total the training "
                             "steps, VAE iterations, images scored and evaluated, and an estimated time from a short "
                             "warm-up of the real steps on the chosen device (FORMAT: table, the default, or json); "
                             "with --resume, only the cycles still to do. The run dir is not touched; data a config "
                             "generates on first use (the demo's synthetic scenes) is generated, as the run would")
    return parser


def resolve(args: argparse.Namespace, config_cls: type[BaseConfig]) -> BaseConfig:
    cfg = load_config(config_cls, find_config(args.config), overrides_from_args(args))
    data = getattr(cfg, "data", None)
    if data is not None and data.root is None and os.environ.get("TAVAAL_DATA_ROOT"):
        data.root = os.environ["TAVAAL_DATA_ROOT"]
    return cfg


def _quote(value: str) -> str:
    """Keep a string flag a string through the YAML parse of overrides."""
    return "'" + value.replace("'", "''") + "'"


def report(message: str, dist: Distributed, rank0_speaks: bool) -> None:
    """Print the run's final word on stderr. Under torchrun, an outcome every rank shares (rank
    0's decision or its relayed error) is printed by rank 0 alone; an error a rank met on its own
    is printed by that rank, prefixed with its number."""
    if dist.is_main:
        print(message, file=sys.stderr)
    elif not rank0_speaks:
        print(f"[rank {dist.rank}] {message}", file=sys.stderr)


def dry_run(args: argparse.Namespace, cfg: BaseConfig, prog: str, make_adapter: Callable[[Any, Path], Any]) -> int:
    """``--dry-run``: the run's plan and a time estimate from a short warm-up; reads the run dir
    (with ``--resume``) but writes nothing to it (data the adapter generates on first use, the
    demo's synthetic scenes, is generated as the run would)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--dry-run estimates a single process; run it without torchrun")
    run_dir = Path(cfg.run_dir)
    cfg.logging.log_every = 0  # the warm-up's passes print no progress lines
    device = resolve_device(cfg.device)
    precision = Precision(device, cfg.train.amp, force_cpu_bf16=cfg.train.amp_on_cpu)
    strategy = get_strategy(cfg.active.strategy)
    start = time.perf_counter()
    adapter = make_adapter(cfg, Path(cfg.data.root))
    load_s = time.perf_counter() - start
    pool = adapter.pool()
    state_path = run_dir / "state.json"
    resumed = bool(args.resume) and state_path.exists()
    inputs = check_pool_inputs(cfg, pool, adapter.data_root, resumed)
    state = RunState.load(state_path) if resumed else None
    if state_path.exists() and not args.resume:
        LOG.warning("%s already holds a run: the real command needs --resume (or another --run-dir)", run_dir)
    plans = plan_run(cfg, strategy, len(pool), adapter.test_size(), len(inputs.excluded), len(inputs.initial_ids),
                     state)
    rates = measure(cfg, adapter, strategy, device, precision)
    rates.load_s = load_s
    est = Estimate(plans, rates, peak_gpu_mib(plans, rates, vae_image_bytes(cfg)))
    if args.dry_run == "json":
        print(est.to_json({"config": str(args.config), "strategy": strategy.name, "run_dir": str(run_dir),
                           "pool": len(pool)}))
    else:
        print(est.to_table(f"{prog} --dry-run: {args.config}, strategy {strategy.name}, {cfg.active.cycles} cycles, "
                           f"pool {len(pool):,} images, run dir {run_dir}" + (" (resuming)" if state else "")))
        print(f"nothing was written{'' if run_dir.exists() else f'; {run_dir} was not created'}")
    return EXIT_OK


def main(argv: Sequence[str] | None, *, prog: str, description: str, config_cls: type[BaseConfig],
         default_config: str, make_adapter: Callable[[Any, Path], Any], label_csv: bool = True) -> int:
    parser = build_parser(prog, description, config_cls, default_config, label_csv)
    args = parser.parse_args(argv)
    setup_logging()
    code, dist = _run_tool(args, prog, config_cls, make_adapter)
    if dist.enabled:  # a torchrun worker that used its process group: see exit_process
        exit_process(code)
    return code


def _run_tool(args: argparse.Namespace, prog: str, config_cls: type[BaseConfig],
              make_adapter: Callable[[Any, Path], Any]) -> tuple[int, Distributed]:
    """The tool's exit code, and the process group handle it ran under (closed by now)."""
    dist = Distributed()
    run_dir: Path | None = Path(args.run_dir) if args.run_dir else None
    try:
        cfg = resolve(args, config_cls)
        if cfg.data.root is None:
            raise ConfigError("no data root: pass --data-root DIR, set data.root in the config or $TAVAAL_DATA_ROOT")
        if args.dry_run:
            return dry_run(args, cfg, prog, make_adapter), dist
        run_dir = Path(cfg.run_dir)
        # under torchrun: join the group; ranks other than 0 log warnings and errors only
        dist = init_distributed(resolve_device(cfg.device), cfg.distributed.timeout_s)
        if not dist.is_main:
            setup_logging(level=logging.WARNING, prefix=f"[rank {dist.rank}] ")
        adapter = dist.main_first(lambda: make_adapter(cfg, Path(cfg.data.root)))
        run = ActiveLearningRun(cfg, adapter, run_dir, resume=args.resume, force=args.force,
                                label_files=getattr(args, "label_files", []), dist=dist)
        if dist.is_main:
            setup_logging(run_dir)
        state = run.run()
    except LabelsNeeded as wait:  # rank 0's decision, broadcast: rank 0 tells the user
        report(f"{prog}: waiting for labels: {wait}", dist, rank0_speaks=True)
        return EXIT_LABELS_NEEDED, dist
    except RunDirLocked as err:
        report(f"{prog}: error: {err}", dist, relayed(err))
        return EXIT_RUN_DIR_BUSY, dist
    except BadInput as err:
        report(f"{prog}: error: {user_message(err)}", dist, relayed(err))
        return EXIT_BAD_INPUT, dist
    except KeyboardInterrupt:
        report(f"{prog}: interrupted; continue with --resume --run-dir {getattr(args, 'run_dir', None) or ''}".rstrip(),
               dist, rank0_speaks=True)
        return EXIT_INTERRUPTED, dist
    except Exception as err:  # noqa: BLE001 - not the user's input: a bug, or a failure inside a library
        # rank 0 writes its run.log; another rank's own error goes to its stderr (torchrun shows it),
        # and rank 0's error relayed to the other ranks is rank 0's to report
        where = "rank 0's run.log" if relayed(err) else log_traceback(err, run_dir if dist.is_main else None)
        report(internal_error_message(prog, err, where), dist, relayed(err))
        return EXIT_INTERNAL, dist
    finally:
        dist.close()
    LOG.info("done: %d labeled images; outputs in %s", len(state.labeled), run_dir)
    return EXIT_OK, dist
