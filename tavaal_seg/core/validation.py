"""Config validation: every enumerated key against its registry (read from the config
fields' ``option(choices=...)``, so a newly registered strategy, loss or schedule needs no edit
here), the core sections' ranges, then the adapter's own sections. Kept apart from
:mod:`core.config` so that reading a config imports nothing heavy and the registries' modules
may import the config types."""
from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from .config import BaseConfig, ConfigError, allowed_values, build_config, require, walk_keys
from .export import check_export_options

C = TypeVar("C", bound=BaseConfig)


def validate_choices(cfg: BaseConfig) -> None:
    """Every key declared with allowed values holds one of them (each item, for a list)."""
    for key, f, _ in walk_keys(type(cfg)):
        allowed = allowed_values(f)
        if allowed is None or f.metadata.get("open_choices"):
            continue
        value = operator.attrgetter(key)(cfg)
        for item in value if isinstance(value, list) else [value]:
            require(item in allowed, key, "one of " + ", ".join(map(str, allowed)), item)


def validate_core(cfg: BaseConfig) -> None:
    """Range checks of the sections every task shares (names: :func:`validate_choices`)."""
    a, t, r, v = cfg.active, cfg.train, cfg.ranker, cfg.vae
    require(a.initial > 0, "active.initial", "a positive number of images", a.initial)
    require(a.budget > 0, "active.budget", "a positive number of images", a.budget)
    require(a.cycles >= 1, "active.cycles", "at least 1", a.cycles)
    require(a.subset > 0, "active.subset", "a positive number of images", a.subset)
    require(t.epochs >= 1, "train.epochs", "at least 1", t.epochs)
    require(t.batch_size >= 2, "train.batch_size", "at least 2 (the ranking loss pairs samples)", t.batch_size)
    require(t.lr > 0, "train.lr", "a positive learning rate", t.lr)
    require(0.0 <= r.detach_fraction <= 1.0, "ranker.detach_fraction", "a fraction in [0, 1]", r.detach_fraction)
    require(len(v.size) == 2 and all(s >= 16 for s in v.size), "vae.size", "[H, W], each at least 16", v.size)
    require(v.z_dim > 0 and v.width > 0, "vae.z_dim/vae.width", "positive values", (v.z_dim, v.width))
    require(v.iterations is None or v.iterations >= 0, "vae.iterations", "null or >= 0", v.iterations)
    require(v.vae_steps >= 1 and v.disc_steps >= 1, "vae.vae_steps/disc_steps", "at least 1", (v.vae_steps, v.disc_steps))
    require(not cfg.labels.initial_existing or cfg.labels.mode == "human", "labels.initial_existing",
            "false unless labels.mode is human (in oracle mode every pool image has its label)",
            cfg.labels.initial_existing)
    require(not (cfg.labels.initial_existing and cfg.labels.initial_list), "labels.initial_existing",
            "false when labels.initial_list is set (one initial set)", cfg.labels.initial_existing)
    require(cfg.distributed.timeout_s > 0, "distributed.timeout_s", "a positive number of seconds",
            cfg.distributed.timeout_s)
    require(not cfg.distributed.sync_bn or cfg.device != "cpu", "distributed.sync_bn",
            "false with device cpu (SyncBatchNorm runs on CUDA only)", cfg.distributed.sync_bn)
    try:
        check_export_options(cfg.export.formats, cfg.export.uri_prefix)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate_config(cfg: BaseConfig) -> None:
    """Names, the core sections, then the adapter's (``cfg.validate_sections()``)."""
    validate_choices(cfg)
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
