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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml


class ConfigError(ValueError):
    """A config value or key is wrong; the message says which and what was expected."""


@dataclass
class ActiveConfig:
    strategy: str = "tavaal"          # random | entropy | coreset | lloss | vaal | tavaal
    initial: int = 1000               # images labeled at random before cycle 1
    budget: int = 1000                # images selected per cycle
    cycles: int = 10                  # train/evaluate rounds (cycle 1 trains on `initial`)
    subset: int = 10000               # unlabeled images scored per cycle (random subset of the pool)
    select_after_last: bool = False   # also select after the last cycle (what to label next)
    # what makes images "the same place" (neighbouring frames of one drive): city | sequence | folder | regex | csv
    group_by: str | None = None
    group_pattern: str | None = None  # group_by regex: searched in each image id; the group is its first capture group
    group_file: str | None = None     # group_by csv: a CSV with columns image_id,group
    max_per_group: int | None = None  # at most this many picks per group in one selection (needs group_by)
    diversity: str = "none"           # none | kcenter: re-pick the budget from the top diversity_candidates by score
                                      # with k-center greedy on the task model's features
    diversity_candidates: int | None = None  # M of that top-M; null = 4 x budget


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "sgd"            # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"       # multistep | poly | constant
    milestones: list[int] = field(default_factory=lambda: [160])
    gamma: float = 0.1
    poly_power: float = 0.9
    amp: bool = True                  # bf16 (or fp16 + GradScaler) autocast on CUDA; fp32 on CPU
    amp_on_cpu: bool = False          # bf16 autocast on CPU too (slow; exercises the AMP path)
    channels_last: bool = True        # on CUDA only


@dataclass
class RankerConfig:
    hidden: int = 128                 # FC width per tapped feature map
    loss: str = "bce"                 # bce (TA-VAAL) | margin (Learning Loss)
    margin: float = 1.0
    weight: float = 1.0               # eta in L = L_task + eta * L_rank
    detach_fraction: float = 0.6      # stop ranker gradients into the backbone after this share of epochs
    train_with_all_strategies: bool = False  # train the ranker jointly for every strategy (the reference's
                                      # always-true `if`), so strategies compare under one training objective


@dataclass
class VAEConfig:
    size: list[int] = field(default_factory=lambda: [32, 32])  # H, W the VAE sees
    z_dim: int = 32
    width: float = 1.0                # channel multiplier (1.0 = 128..1024 as in VAAL)
    batch_size: int = 128
    lr: float = 5e-4
    epochs: int = 100                 # iterations = (n_labeled + subset) * epochs // batch_size ...
    iterations: int | None = None     # ... unless set explicitly
    beta: float = 1.0                 # KLD weight
    adversary_weight: float = 1.0
    vae_steps: int = 1                # VAE steps per discriminator step (TA-VAAL 1, VAAL 2)
    disc_steps: int = 1
    # how r enters the game; the defaults are the TA-VAAL reference's (docs/method.md, "the VAE game")
    rank_transform: str = "sigmoid"   # sigmoid | zscore | raw — r as the VAE's decoder reads it
    disc_rank_transform: str | None = "raw"  # r as the discriminator reads it; null = the same as rank_transform
    input_norm: str = "standardize"   # standardize (per channel, like the reference's inputs) | unit ([-1, 1], VAAL)
    disc_init: str = "kaiming"        # kaiming (the reference's kaiming-normal, zero bias) | default (PyTorch's)


@dataclass
class EvalConfig:
    batch_size: int = 256


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    log_every: int = 50               # iterations between plain log lines off a terminal
    candidate_scores: bool = False    # oracle mode: also write selections/cycle_NN.candidates.csv (score and
                                      # true loss of every scored candidate; one extra pass; for studies)
    preview: bool = True              # after each selection: selections/cycle_NN.preview.json (thumbnails, predicted
                                      # class shares of the picks and of a pool sample; tools/report.py) + a TB grid
    preview_pool_sample: int = 256    # unlabeled candidates whose predictions estimate the pool's class shares
    thumbnail_size: int = 192         # longest side of a preview thumbnail, pixels
    diagnostics: bool = False         # sel_* columns in metrics.csv: what D separates by (mu, r), how the picks
                                      # follow r, their true loss and class balance (core.diagnostics; for studies)


LABEL_MODES = ("oracle", "human")


@dataclass
class LabelsConfig:
    mode: str = "oracle"              # oracle (benchmark: labels exist, revealed per cycle) | human (stop, export, wait)
    initial_list: str | None = None   # file of image ids already labeled (replaces the random initial pick)
    exclude_list: str | None = None   # file of image ids never to select (broken images, ...); may grow during a run


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: ["csv"])  # written to run_dir/selections/ after every selection
    uri_prefix: str | None = None     # s3://bucket/..., https://host/...: turns data-root-relative paths into URIs
    pre_annotations: bool = False     # labelstudio: carry the model's prediction (brush masks / a choice) to correct
    labelstudio_from_name: str | None = None  # the control tag's name; null = Label Studio's templates: tag / choice
    labelstudio_to_name: str = "image"  # the <Image name=...> tag the predictions belong to


@dataclass
class DistributedConfig:
    timeout_s: float = 1800.0         # a collective waiting this long for a dead or stuck rank fails the run
    sync_bn: bool = False             # CUDA only: batch-norm statistics over the global batch (SyncBatchNorm)


@dataclass
class BaseConfig:
    seed: int = 0
    device: str = "auto"
    run_dir: str = "runs/default"
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


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def require(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
