"""Typed configuration: a YAML file and dotted ``key.path=value`` overrides, built into
dataclasses whose errors name the file, the key and what was expected. This module imports
nothing heavy; range and registry checks live in :mod:`core.validation`.

The core owns the sections every task shares (``active``, ``train``, ``ranker``, ``vae``,
``eval``, ``logging``); an adapter subclasses :class:`BaseConfig` and adds its own ``data`` and
``model`` sections.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
           choices: str | Sequence[Any] | None = None, open_choices: bool = False) -> Any:
    """A config field: its default, the one-line description ``--help`` shows, and for an
    enumerated key its allowed values -- a tuple, or ``"module:NAME"`` naming a registry (a
    mapping whose keys are the names), looked up only when needed, so that reading a config
    imports nothing heavy and names registered later count. :mod:`core.validation` checks every
    key that has choices (each item of a list-valued key), unless ``open_choices``: the names
    are listed in --help, and the adapter's own check also accepts others (e.g. timm models)."""
    metadata: dict[str, Any] = {"help": help, "open_choices": open_choices}
    if choices is not None:
        metadata["choices"] = choices if isinstance(choices, str) else tuple(choices)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def allowed_values(f: dataclasses.Field) -> list[Any] | None:
    """The allowed values of a config field made with ``option(choices=...)`` (None: any value)."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    if isinstance(choices, str):
        import importlib

        module, _, name = choices.partition(":")
        return sorted(getattr(importlib.import_module(module), name))
    return list(choices)


def walk_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) of every leaf key of config dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from walk_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]


@dataclass
class ActiveConfig:
    strategy: str = option("tavaal", "how the next images are chosen", choices="tavaal_seg.core.strategies:STRATEGIES")
    initial: int = option(1000, "images labeled at random before cycle 1 (cycle 0)")
    budget: int = option(1000, "images selected per cycle")
    cycles: int = option(10, "train/evaluate rounds (cycle 1 trains on the initial images)")
    subset: int = option(10000, "unlabeled images scored per cycle (a random subset of the pool)")
    select_after_last: bool = option(False, "also select after the last cycle (what to label next)")
    group_by: str | None = option(None, "what makes images 'the same place' (neighbouring frames of one drive) for "
                                        "active.max_per_group (null: no groups)",
                                  choices="tavaal_seg.core.diversity:GROUP_KEYS")
    group_pattern: str | None = option(None, "group_by regex: searched in each image id; the group is its first "
                                             "capture group")
    group_file: str | None = option(None, "group_by csv: a CSV file with columns image_id,group")
    max_per_group: int | None = option(None, "at most this many picks per group in one selection (needs group_by)")
    diversity: str = option("none", "kcenter: re-pick the budget from the top diversity_candidates by score with "
                                    "k-center greedy on the task model's features", choices="tavaal_seg.core.diversity:DIVERSITY")
    diversity_candidates: int | None = option(None, "M of diversity's top-M candidates (null: 4 x budget)")


def _fast_step_name(value: str | bool) -> str | bool:
    """YAML reads a bare ``off`` as false: that is the mode ``off``."""
    return "off" if value is False else value


@dataclass
class TrainConfig:
    epochs: int = option(200, "task-model epochs per cycle")
    batch_size: int = option(128, "global training batch (split over the processes under torchrun)")
    optimizer: str = option("sgd", "task-model optimizer", choices="tavaal_seg.core.steps:OPTIMIZERS")
    lr: float = option(0.1, "learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay")
    schedule: str = option("multistep", "learning-rate schedule", choices="tavaal_seg.core.training:SCHEDULES")
    milestones: list[int] = option(help="multistep: epochs at which the rate is multiplied by gamma",
                                   factory=lambda: [160])
    gamma: float = option(0.1, "multistep: factor at each milestone")
    poly_power: float = option(0.9, "poly: (1 - step/total) ** power")
    amp: bool = option(True, "mixed precision on CUDA: bf16 (or fp16 + GradScaler) autocast; fp32 on CPU")
    amp_on_cpu: bool = option(False, "bf16 autocast on CPU too (slow; exercises the AMP path)")
    channels_last: bool = option(True, "channels-last memory format (CUDA only)")
    fast_step: str | bool = option(
        "auto", "the training step captured as a CUDA graph (graphs) or compiled (compile); auto: graphs on "
        "CUDA in one process with bf16/fp32, off on CPU", choices="tavaal_seg.core.steps:FAST_STEP_MODES")

    def __post_init__(self) -> None:
        self.fast_step = _fast_step_name(self.fast_step)


@dataclass
class RankerConfig:
    hidden: int = option(128, "loss-ranker FC width per tapped feature map")
    loss: str = option("bce", "ranking loss: bce (TA-VAAL), margin (Learning Loss)",
                       choices="tavaal_seg.core.ranker:RANK_LOSSES")
    margin: float = option(1.0, "margin of the margin ranking loss")
    weight: float = option(1.0, "eta in L = L_task + eta * L_rank")
    detach_fraction: float = option(0.6, "stop ranker gradients into the backbone after this share of epochs")
    train_with_all_strategies: bool = option(
        False, "train the ranker jointly for every strategy (the reference's always-true `if`), so strategies "
        "compare under one training objective")


@dataclass
class VAEConfig:
    size: list[int] = option(help="[H, W] of the images the VAE sees", factory=lambda: [32, 32])
    z_dim: int = option(32, "latent size")
    width: float = option(1.0, "channel multiplier (1.0 = 128..1024 channels as in VAAL)")
    batch_size: int = option(128, "global VAE/discriminator batch")
    lr: float = option(5e-4, "VAE and discriminator learning rate")
    epochs: int = option(100, "iterations = (n_labeled + subset) * epochs // batch_size, unless vae.iterations is set")
    iterations: int | None = option(None, "VAE iterations per cycle (null: from vae.epochs)")
    beta: float = option(1.0, "KL divergence weight")
    adversary_weight: float = option(1.0, "weight of the VAE's adversarial loss")
    vae_steps: int = option(1, "VAE steps per discriminator step (TA-VAAL 1, VAAL 2)")
    disc_steps: int = option(1, "discriminator steps per iteration")
    # how r enters the game; the defaults are the TA-VAAL reference's (docs/method.md, "the VAE game")
    rank_transform: str = option("sigmoid", "r as the VAE's decoder reads it", choices="tavaal_seg.core.vae:RANK_TRANSFORMS")
    disc_rank_transform: str | None = option("raw", "r as the discriminator reads it; null: the same as vae.rank_transform",
                                             choices="tavaal_seg.core.vae:RANK_TRANSFORMS")
    input_norm: str = option("standardize", "standardize (per channel, like the reference's inputs) or unit ([-1, 1], "
                             "VAAL)", choices="tavaal_seg.core.vae:VAE_INPUT_NORMS")
    disc_init: str = option("kaiming", "kaiming (the reference's kaiming-normal, zero bias) or default (PyTorch's)",
                            choices="tavaal_seg.core.vae:DISC_INITS")
    fast_step: str | bool = option("auto", "the VAE + discriminator iteration, as train.fast_step",
                                   choices="tavaal_seg.core.steps:FAST_STEP_MODES")

    def __post_init__(self) -> None:
        self.fast_step = _fast_step_name(self.fast_step)


@dataclass
class EvalConfig:
    batch_size: int = option(256, "batch of evaluation and pool-scoring passes")


@dataclass
class LoggingConfig:
    tensorboard: bool = option(True, "write TensorBoard logs to run_dir/tb")
    log_every: int = option(50, "iterations between plain progress lines off a terminal")
    candidate_scores: bool = option(False, "oracle mode: also write selections/cycle_NN.candidates.csv (score and "
                                           "true loss of every scored candidate; one extra pass; for studies)")
    preview: bool = option(True, "after each selection: selections/cycle_NN.preview.json (thumbnails, predicted "
                                 "class shares of the picks and of a pool sample; tools/report.py) and a TensorBoard grid")
    preview_pool_sample: int = option(256, "unlabeled candidates whose predictions estimate the pool's class shares")
    thumbnail_size: int = option(192, "longest side of a preview thumbnail, pixels")
    diagnostics: bool = option(False, "sel_* columns in metrics.csv: what D separates by (mu, r), how the picks "
                                      "follow r, their true loss and class balance (core.diagnostics; for studies)")


LABEL_MODES = ("oracle", "human")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class LabelsConfig:
    mode: str = option("oracle", "oracle: the labels exist and are revealed per cycle (benchmarks); human: stop "
                                 "after each selection, export it and wait for labels", choices=LABEL_MODES)
    initial_list: str | None = option(None, "file of image ids already labeled (replaces the random initial pick)")
    initial_existing: bool = option(False, "human mode: the pool images whose labels already exist are the initial "
                                           "labeled set (replaces the random initial pick)")
    exclude_list: str | None = option(None, "file of image ids never to select (broken images, ...); may grow")


@dataclass
class ExportConfig:
    formats: list[str] = option(help="formats written to run_dir/selections/ after every selection",
                                factory=lambda: ["csv"], choices="tavaal_seg.core.export:EXPORTERS")
    uri_prefix: str | None = option(None, "s3://bucket/..., https://host/...: turns data-root-relative paths into URIs")
    pre_annotations: bool = option(False, "labelstudio: carry the model's prediction (brush masks / a choice) "
                                          "for the annotator to correct")
    labelstudio_from_name: str | None = option(None, "labelstudio: the control tag's name (null: Label Studio's "
                                                     "templates: tag / choice)")
    labelstudio_to_name: str = option("image", "labelstudio: the <Image name=...> tag the predictions belong to")


@dataclass
class DistributedConfig:
    timeout_s: float = option(1800.0, "a collective waiting this long for a dead or stuck rank fails the run")
    sync_bn: bool = option(False, "CUDA only: batch-norm statistics over the global batch (SyncBatchNorm)")


@dataclass
class BaseConfig:
    seed: int = option(0, "run seed (every step of every cycle derives its own seed from it)")
    device: str = option("auto", "compute device (auto: CUDA when available)", choices=DEVICES)
    run_dir: str = option("runs/default", "where state, metrics, selections, checkpoints and logs go")
    plugins: list[str] = option(factory=list, help="Python modules or .py files imported before the rest is "
                                "checked: they register your own strategies and models (docs/api.md)")
    active: ActiveConfig = field(default_factory=ActiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def validate_sections(self) -> None:
        """Range checks of an adapter's own sections (``data``, ``model``); the core's sections
        are checked by :func:`core.validation.validate_config`, which calls this last."""


C = TypeVar("C")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


def from_dict(cls: type[C], raw: Any, where: str = "") -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are errors."""
    label = where or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}; valid keys under '{label}': {', '.join(valid)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=0.01`` -> (['train', 'lr'], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.split("."), parsed


def set_dotted(raw: dict, path: list[str], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def config_dir() -> Path:
    """The folder of the shipped experiment configs: ``tavaal_seg/configs`` in an installed
    package (the wheel maps the checkout's ``configs/`` onto it: one set of files), else the
    checkout's ``configs/``."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def shipped_configs() -> list[str]:
    """The names ``--config`` accepts besides a path (``cityscapes`` for ``configs/cityscapes.yaml``)."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def find_config(value: str | Path) -> Path:
    """``--config``: a YAML file's path, or the name of a shipped config (``cityscapes``,
    ``cityscapes.yaml``), which works from any folder and from an installed package."""
    path = Path(value)
    if path.is_file():
        return path
    if path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml"):
        shipped = config_dir() / (path.name if path.suffix else f"{path.name}.yaml")
        if shipped.is_file():
            return shipped
    raise ConfigError(f"--config {value}: no such file, and not the name of a shipped config "
                      f"({', '.join(shipped_configs()) or 'none found'})")


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    return raw


def build_config(cls: type[C], path: Path | None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (may be None: defaults), apply dotted overrides and build ``cls``: types and
    key names are checked here, ranges and registry names by :func:`core.validation.load_config`."""
    raw = read_yaml(path) if path is not None else {}
    for text in overrides:
        key_path, value = parse_override(text)
        set_dotted(raw, key_path, value)
    try:
        return from_dict(cls, raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten_dict(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def require(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
