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
from .diversity import DIVERSITY, GROUP_KEYS
from .export import check_export_options
from .ranker import RANK_LOSSES
from .strategies import STRATEGIES
from .training import OPTIMIZERS, SCHEDULES
from .vae import DISC_INITS, RANK_TRANSFORMS, VAE_INPUT_NORMS

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
    require(a.group_by is None or a.group_by in GROUP_KEYS, "active.group_by", "null or " + _one_of(GROUP_KEYS),
            a.group_by)
    require(a.group_by != "regex" or bool(a.group_pattern), "active.group_pattern",
            "a regular expression for group_by regex", a.group_pattern)
    require(a.group_by != "csv" or bool(a.group_file), "active.group_file", "a CSV file (image_id,group) for "
            "group_by csv", a.group_file)
    if a.group_by == "regex":
        GROUP_KEYS["regex"](a)  # compiles the pattern: a ConfigError naming it
    require(a.max_per_group is None or (a.max_per_group >= 1 and a.group_by is not None), "active.max_per_group",
            "null, or at least 1 together with active.group_by", a.max_per_group)
    require(a.diversity in DIVERSITY, "active.diversity", " or ".join(DIVERSITY), a.diversity)
    require(a.diversity_candidates is None or a.diversity_candidates >= a.budget, "active.diversity_candidates",
            f"null (4 x budget) or at least active.budget ({a.budget})", a.diversity_candidates)
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
    require(v.disc_rank_transform is None or v.disc_rank_transform in RANK_TRANSFORMS, "vae.disc_rank_transform",
            "null (= vae.rank_transform) or " + _one_of(RANK_TRANSFORMS), v.disc_rank_transform)
    require(v.input_norm in VAE_INPUT_NORMS, "vae.input_norm", _one_of(VAE_INPUT_NORMS), v.input_norm)
    require(v.disc_init in DISC_INITS, "vae.disc_init", _one_of(DISC_INITS), v.disc_init)
    require(cfg.distributed.timeout_s > 0, "distributed.timeout_s", "a positive number of seconds",
            cfg.distributed.timeout_s)
    require(not cfg.distributed.sync_bn or cfg.device != "cpu", "distributed.sync_bn",
            "false with device cpu (SyncBatchNorm runs on CUDA only)", cfg.distributed.sync_bn)
    require(cfg.labels.mode in LABEL_MODES, "labels.mode", " or ".join(LABEL_MODES), cfg.labels.mode)
    lg = cfg.logging
    require(lg.preview_pool_sample >= 0, "logging.preview_pool_sample", "0 or more images", lg.preview_pool_sample)
    require(16 <= lg.thumbnail_size <= 1024, "logging.thumbnail_size", "16..1024 pixels", lg.thumbnail_size)
    require(bool(cfg.export.labelstudio_to_name), "export.labelstudio_to_name", "a tag name", cfg.export.labelstudio_to_name)
    require(cfg.export.labelstudio_from_name is None or bool(cfg.export.labelstudio_from_name),
            "export.labelstudio_from_name", "null or a tag name", cfg.export.labelstudio_from_name)
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
