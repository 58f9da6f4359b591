"""Config validation: every enumerated key against its registry (read from the config
fields' ``option(choices=...)``, so a newly registered strategy, loss or schedule needs no edit
here), the core sections' ranges, then the adapter's own sections. Kept apart from
:mod:`core.config` so that reading a config imports nothing heavy and the registries' modules
may import the config types."""
from __future__ import annotations

import operator
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from .config import BaseConfig, ConfigError, allowed_values, build_config, require, walk_keys
from .diversity import GROUP_KEYS
from .export import check_export_options
from .plugins import import_plugins, resolve_plugins

C = TypeVar("C", bound=BaseConfig)


def validate_choices(cfg: BaseConfig) -> None:
    """Every key declared with allowed values holds one of them (each item, for a list); null
    passes where the key's type allows it (an optional key left unset)."""
    for key, f, tp in walk_keys(type(cfg)):
        allowed = allowed_values(f)
        if allowed is None or f.metadata.get("open_choices"):
            continue
        value = operator.attrgetter(key)(cfg)
        optional = type(None) in typing.get_args(tp)
        if value is None and optional:
            continue
        expected = ("null or " if optional else "") + "one of " + ", ".join(map(str, allowed))
        for item in value if isinstance(value, list) else [value]:
            require(item in allowed, key, expected, item)


def validate_core(cfg: BaseConfig) -> None:
    """Range checks of the sections every task shares (names: :func:`validate_choices`)."""
    a, t, r, v = cfg.active, cfg.train, cfg.ranker, cfg.vae
    require(a.initial > 0, "active.initial", "a positive number of images", a.initial)
    require(a.budget > 0, "active.budget", "a positive number of images", a.budget)
    require(a.cycles >= 1, "active.cycles", "at least 1", a.cycles)
    require(a.subset > 0, "active.subset", "a positive number of images", a.subset)
    require(a.group_by != "csv" or bool(a.group_file), "active.group_file", "a CSV file (image_id,group) for "
            "group_by csv", a.group_file)
    if a.group_by == "regex":
        GROUP_KEYS["regex"](a)  # compiles the pattern: a ConfigError naming it if it is missing or invalid
    require(a.max_per_group is None or (a.max_per_group >= 1 and a.group_by is not None), "active.max_per_group",
            "null, or at least 1 together with active.group_by", a.max_per_group)
    require(a.diversity_candidates is None or a.diversity_candidates >= a.budget, "active.diversity_candidates",
            f"null (4 x budget) or at least active.budget ({a.budget})", a.diversity_candidates)
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
    lg = cfg.logging
    require(lg.preview_pool_sample >= 0, "logging.preview_pool_sample", "0 or more images", lg.preview_pool_sample)
    require(16 <= lg.thumbnail_size <= 1024, "logging.thumbnail_size", "16..1024 pixels", lg.thumbnail_size)
    require(bool(cfg.export.labelstudio_to_name), "export.labelstudio_to_name", "a tag name", cfg.export.labelstudio_to_name)
    require(cfg.export.labelstudio_from_name is None or bool(cfg.export.labelstudio_from_name),
            "export.labelstudio_from_name", "null or a tag name", cfg.export.labelstudio_from_name)
    for key, mode in (("train.fast_step", t.fast_step), ("vae.fast_step", v.fast_step)):
        require(not (mode == "graphs" and cfg.device == "cpu"), key,
                "auto, compile or off with device cpu (CUDA graphs need a CUDA device)", mode)
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
        # first: the names the plugins register are then known to the checks below
        import_plugins(cfg.plugins)
        cfg.plugins = resolve_plugins(cfg.plugins)  # the run dir records absolute files: resumable anywhere
        validate_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None
    return cfg
