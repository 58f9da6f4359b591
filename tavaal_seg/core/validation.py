"""Config validation: the core sections' ranges and names (checked against the registries
themselves, so a newly registered strategy, loss or schedule needs no edit here), then the
adapter's own sections. Kept apart from :mod:`core.config` so that reading a config imports
nothing heavy and the registries' modules may import the config types."""
from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from .config import LABEL_MODES, BaseConfig, ConfigError, build_config, require
from .export import check_export_options
from .ranker import RANK_LOSSES
from .strategies import STRATEGIES
from .steps import FAST_STEP_MODES, OPTIMIZERS
from .training import SCHEDULES
from .vae import RANK_TRANSFORMS

C = TypeVar("C", bound=BaseConfig)


def _one_of(registry: typing.Mapping[str, Any]) -> str:
    return "one of " + ", ".join(sorted(registry))


def validate_core(cfg: BaseConfig) -> None:
    """Range and name checks of the sections every task shares."""
    a, t, r, v = cfg.active, cfg.train, cfg.ranker, cfg.vae
    require(a.strategy in STRATEGIES, "active.strategy", _one_of(STRATEGIES), a.strategy)
    require(a.initial > 0, "active.initial", "a positive number of images", a.initial)
    require(a.budget > 0, "active.budget", "a positive number of images", a.budget)
    require(a.cycles >= 1, "active.cycles", "at least 1", a.cycles)
    require(a.subset > 0, "active.subset", "a positive number of images", a.subset)
    require(t.epochs >= 1, "train.epochs", "at least 1", t.epochs)
    require(t.batch_size >= 2, "train.batch_size", "at least 2 (the ranking loss pairs samples)", t.batch_size)
    require(t.optimizer in OPTIMIZERS, "train.optimizer", _one_of(OPTIMIZERS), t.optimizer)
    require(t.schedule in SCHEDULES, "train.schedule", _one_of(SCHEDULES), t.schedule)
    require(t.lr > 0, "train.lr", "a positive learning rate", t.lr)
    require(cfg.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda", cfg.device)
    require(r.loss in RANK_LOSSES, "ranker.loss", _one_of(RANK_LOSSES), r.loss)
    require(0.0 <= r.detach_fraction <= 1.0, "ranker.detach_fraction", "a fraction in [0, 1]", r.detach_fraction)
    require(len(v.size) == 2 and all(s >= 16 for s in v.size), "vae.size", "[H, W], each at least 16", v.size)
    require(v.z_dim > 0 and v.width > 0, "vae.z_dim/vae.width", "positive values", (v.z_dim, v.width))
    require(v.iterations is None or v.iterations >= 0, "vae.iterations", "null or >= 0", v.iterations)
    require(v.vae_steps >= 1 and v.disc_steps >= 1, "vae.vae_steps/disc_steps", "at least 1", (v.vae_steps, v.disc_steps))
    require(v.rank_transform in RANK_TRANSFORMS, "vae.rank_transform", _one_of(RANK_TRANSFORMS), v.rank_transform)
    require(cfg.distributed.timeout_s > 0, "distributed.timeout_s", "a positive number of seconds",
            cfg.distributed.timeout_s)
    require(not cfg.distributed.sync_bn or cfg.device != "cpu", "distributed.sync_bn",
            "false with device cpu (SyncBatchNorm runs on CUDA only)", cfg.distributed.sync_bn)
    for key, mode in (("train.fast_step", t.fast_step), ("vae.fast_step", v.fast_step)):
        require(mode in FAST_STEP_MODES, key, ", ".join(FAST_STEP_MODES), mode)
        require(not (mode == "graphs" and cfg.device == "cpu"), key,
                "auto, compile or off with device cpu (CUDA graphs need a CUDA device)", mode)
    require(cfg.labels.mode in LABEL_MODES, "labels.mode", " or ".join(LABEL_MODES), cfg.labels.mode)
    try:
        check_export_options(cfg.export.formats, cfg.export.uri_prefix)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate_config(cfg: BaseConfig) -> None:
    """The core sections, then the adapter's (``cfg.validate_sections()``)."""
    validate_core(cfg)
    cfg.validate_sections()


def load_config(cls: type[C], path: Path | None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (may be None: defaults), apply dotted overrides, build and validate; every
    error is a :class:`ConfigError` naming the file and the key."""
    cfg = build_config(cls, path, overrides)
    try:
        validate_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None
    return cfg
