"""``plugins:`` in a config: the Python modules that register a user's own strategies and models.

A registration (``register_strategy``, ``register_cls_model``, ``register_seg_model``) lives in
the process that made it. The command-line tools, a study's runs (each a new process), a
``--resume`` and ``tavaal-rank`` on a finished run all start from a config, so the config names
what to import first, as mmcv's ``custom_imports`` does. An entry is a module name importable from
the Python path (``mylab.al_strategies``) or a ``.py`` file; a relative file is resolved against
the working directory when the config is read, and the run directory records the absolute path,
so the run resumes from anywhere. Each module is imported once per process.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from .errors import ConfigError

KEY = "plugins"


def resolve_plugins(entries: Sequence[str]) -> list[str]:
    """``entries`` with every ``.py`` file made absolute (module names unchanged)."""
    return [str(Path(e).expanduser().resolve()) if is_file_entry(e) else e for e in entries]


def is_file_entry(entry: str) -> bool:
    return entry.endswith(".py")


def import_plugins(entries: Sequence[str]) -> list[ModuleType]:
    """Import every entry (a module name or a ``.py`` file) once; a ConfigError names the entry
    that cannot be imported and why (for an error raised by the plugin itself: where)."""
    return [_import_file(entry) if is_file_entry(entry) else _import_module(entry) for entry in entries]


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            raise ConfigError(f"{KEY}: cannot import {name!r}: no module named {err.name!r} on the Python path "
                              f"(expected a module name such as mylab.strategies, or a .py file)") from None
        raise _failed(name, err) from err
    except Exception as err:  # noqa: BLE001 - the plugin's own code failed: name it and where
        raise _failed(name, err) from err


def _import_file(entry: str) -> ModuleType:
    path = Path(entry).expanduser().resolve()
    if not path.is_file():
        given = "" if entry == str(path) else f" ({entry!r} from {Path.cwd()})"
        raise ConfigError(f"{KEY}: no such file: {path}{given}; expected a .py file that registers strategies or "
                          f"models, or a module name")
    # one module per file, named after its absolute path: read again (a resume, a second config
    # in the same process) it is not executed twice, which would register its names twice
    name = f"tavaal_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{KEY}: {entry!r}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the plugin's own code failed: name it and where
        del sys.modules[name]
        raise _failed(entry, err) from err
    return module


def _failed(entry: str, err: BaseException) -> ConfigError:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return ConfigError(f"{KEY}: importing {entry!r} failed{where}: {type(err).__name__}: {err}")
