"""The task packages (adapters) by name, imported only when used: the studies runner, the
ranking of new images and anything else that works from a run directory or a ``--task`` name."""
from __future__ import annotations

import importlib
import types
from collections.abc import Sequence
from pathlib import Path

from .core.adapter import TaskSpec
from .core.config import BaseConfig, ConfigError
from .core.errors import RunDirError
from .core.validation import load_config

# --task name -> the package exposing TASK (a core.adapter.TaskSpec)
TASK_PACKAGES = types.MappingProxyType({"cls": "tavaal_cls", "seg": "tavaal_seg.segmentation"})
TASKS = tuple(TASK_PACKAGES)


def load_task(name: str) -> TaskSpec:
    if name not in TASK_PACKAGES:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(TASK_PACKAGES[name]).TASK


def run_config(run_dir: Path, task: str | None = None, overrides: Sequence[str] = ()) -> tuple[TaskSpec, BaseConfig]:
    """A run directory's task and its config (``RUN_DIR/config.yaml`` plus ``overrides``): the one
    task whose config class reads the file (each refuses the other's keys), or ``task`` if given."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory: {path} does not exist")
    errors = []
    for name in [task] if task else TASKS:
        spec = load_task(name)
        try:
            return spec, load_config(spec.config_cls, path, overrides)
        except ConfigError as err:
            errors.append(f"  as {name}: {err}")
    raise ConfigError(f"{path} is not a config of {'task ' + task if task else 'any task'}:\n" + "\n".join(errors))
