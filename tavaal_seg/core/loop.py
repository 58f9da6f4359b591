"""The active-learning cycle: train -> evaluate -> score -> select -> export -> (label) -> repeat.

Every step starts from a seed derived from (run seed, cycle, step) and ends with an atomic
write, so a run killed anywhere resumes from its last completed step and finishes with the
same selections as an uninterrupted run.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adapter import Pool, TaskAdapter
from .config import BaseConfig, ConfigError, dump_yaml, flatten_dict, read_yaml, to_dict
from .diagnostics import pick_diagnostics
from .distributed import Distributed
from .diversity import check_group_capacity, constrain, group_labels, ranked_count
from .errors import DataError, RunDirError
from .export import ExportContext, export_selection
from .labels import LabelsNeeded, needed_csv, read_id_list, read_labels_csv, write_labels_csv
from .lock import RunDirLock
from .pool import sync_pool
from .preview import preview_path, preview_selection, tensorboard_grid, unpicked_sample
from .ranker import LossRanker
from .runtime import (
    LOG,
    Precision,
    atomic_torch_save,
    atomic_write_text,
    derive_seed,
    resolve_device,
    seed_everything,
    sweep_temp_files,
)
from .state import CycleRecord, RunState, SelectedItem, SelectionRecord
from .strategies import Selection, SelectionContext, get_strategy
from .training import build_models, evaluate, train_task_model, true_losses
from .weights import load_run_checkpoint, run_checkpoint_path

# Keys that may change between a run and its resume without changing what it computes.
# The exclude list may grow during a run (a vendor reports a broken image); exports can be added.
# The fast_step modes, like the device, change how a step executes (floating-point rounding on a
# GPU), not what it computes: the same batches, augmentation, schedule and iterations.
RESUME_FREE_KEYS = ("run_dir", "device", "active.cycles", "active.select_after_last", "logging", "eval.batch_size",
                    "export", "labels.exclude_list", "distributed.timeout_s", "train.fast_step", "vae.fast_step")
LABELS_FILE, NEEDED_FILE = "labels.csv", "labels_needed.csv"


def config_differences(old: dict, new: dict, defaults: dict | None = None) -> list[str]:
    """Changed keys, less the resume-free ones; with ``defaults``, a key the old config lacks (it
    predates the key) and the new one leaves at its default is no change."""
    a, b, d = flatten_dict(old), flatten_dict(new), flatten_dict(defaults or {})
    lines = []
    for key in sorted(set(a) | set(b)):
        if any(key == free or key.startswith(free + ".") for free in RESUME_FREE_KEYS):
            continue
        if key not in a and key in d and b.get(key) == d[key]:
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"  {key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return lines

def read_pool_ids(path: str | None, key: str, pool: Pool, index_of: dict[str, int], resumed: bool = False) -> list[str]:
    """The image ids listed in the file at ``path`` (config key ``key``), all of them in the pool;
    ``resumed``: a resumed run whose pool lost images drops them with a warning (they are gone anyway)."""
    if path is None:
        return []
    ids = read_id_list(Path(path), key)
    unknown = [i for i in ids if i not in index_of]
    if unknown and resumed:
        LOG.warning("%s %s: %d ids are no longer in the pool, e.g. %s", key, path, len(unknown), unknown[:5])
        return [i for i in ids if i in index_of]
    if unknown:
        raise ConfigError(f"{key} {path}: {len(unknown)} ids are not in the training pool, e.g. {unknown[:5]} "
                          f"(pool ids look like {list(pool.ids[:3])})")
    return ids


def check_budget(cfg: BaseConfig, pool_size: int, n_excluded: int, n_initial_listed: int, data_root: Path,
                 existing: int | None = None) -> None:
    """The run's selections fit in the pool, and the scored subset holds a selection; ``existing``:
    the size of the initial set of ``labels.initial_existing`` (checked again once it is known)."""
    a = cfg.active
    selections = a.cycles - 1 + (1 if a.select_after_last else 0)
    if existing is None and cfg.labels.initial_existing:
        existing = 0
    initial = existing if existing is not None else n_initial_listed or a.initial
    needed = initial + a.budget * selections
    available = pool_size - n_excluded
    if needed > available:
        excluded = f" minus {n_excluded} excluded" if n_excluded else ""
        raise ConfigError(
            f"active.budget/active.initial/active.cycles: the run needs {initial} initial + "
            f"{selections} x {a.budget} selected = {needed} images, but the training pool has only "
            f"{pool_size}{excluded} (data root {data_root}); lower active.budget, "
            "active.initial or active.cycles")
    if a.subset < a.budget:
        raise ConfigError(f"active.subset ({a.subset}) must be at least active.budget ({a.budget})")


@dataclasses.dataclass
class PoolInputs:
    """The run's id lists resolved against the pool, checked before anything trains."""

    index_of: dict[str, int]
    excluded: list[str]
    initial_ids: list[str]
    groups: list[str] | None  # each pool image's group (None without active.group_by)


def check_pool_inputs(cfg: BaseConfig, pool: Pool, data_root: Path, resumed: bool) -> PoolInputs:
    """Read ``labels.exclude_list`` and ``labels.initial_list`` against the pool, place the images in
    their groups, and refuse what the run cannot do (a listed id in both lists, group caps that
    cannot fill a selection, a budget the pool cannot hold): the run and its ``--dry-run`` alike."""
    index_of = {image_id: i for i, image_id in enumerate(pool.ids)}
    excluded = read_pool_ids(cfg.labels.exclude_list, "labels.exclude_list", pool, index_of, resumed)
    initial_ids = read_pool_ids(cfg.labels.initial_list, "labels.initial_list", pool, index_of, resumed)
    excluded_ids = set(excluded)
    clash = [i for i in initial_ids if i in excluded_ids]
    if clash:
        raise ConfigError(f"labels.initial_list and labels.exclude_list both name {clash[:5]}")
    groups = group_labels(cfg.active, pool.ids)
    check_group_capacity(cfg.active, groups)
    check_budget(cfg, len(pool), len(excluded), len(initial_ids), data_root)
    return PoolInputs(index_of, excluded, initial_ids, groups)


class ActiveLearningRun:
    """One run of the cycle for a task adapter, persisted in ``run_dir``.

    Under torchrun every rank builds one of these with its ``dist`` handle; all of them train
    and score, and rank 0 alone owns the run directory (see ``core.distributed``)."""

    def __init__(self, cfg: BaseConfig, adapter: TaskAdapter, run_dir: Path, resume: bool = False,
                 force: bool = False, label_files: Sequence[Path] = (), dist: Distributed = Distributed()) -> None:
        self.cfg, self.adapter, self.run_dir, self.dist = cfg, adapter, Path(run_dir), dist
        self.strategy = get_strategy(cfg.active.strategy)
        self.device = dist.local_device(resolve_device(cfg.device))
        self.precision = Precision(self.device, cfg.train.amp, force_cpu_bf16=cfg.train.amp_on_cpu)
        self.state_path = self.run_dir / "state.json"
        self.pool = adapter.pool()
        inputs = check_pool_inputs(cfg, self.pool, adapter.data_root, resumed=self.state_path.exists())
        self.index_of, self.excluded, self.initial_ids = inputs.index_of, inputs.excluded, inputs.initial_ids
        self.groups = inputs.groups
        t = cfg.train
        if t.schedule == "multistep" and t.milestones and min(t.milestones) >= t.epochs:
            # easy to miss: --epochs 40 keeps the config's milestones [160], so the LR never drops
            LOG.warning("train.milestones %s are all at or after train.epochs %d: the learning rate never decays; "
                        "scale them with the epochs (the paper drops at 80%%: --set train.milestones=[%d])",
                        t.milestones, t.epochs, max(1, int(t.epochs * 0.8)))
        self._writer: Any = None
        self._lock = RunDirLock(self.run_dir)

        def open_run() -> tuple[RunState, dict[str, str]]:
            if self.state_path.exists() and not resume:  # refuse before taking a lock we do not need
                raise RunDirError(f"{self.run_dir} already holds a run (state.json); pass --resume to continue it "
                                  "or choose another --run-dir")
            self._lock.acquire()
            try:
                swept = sweep_temp_files(self.run_dir)
                if swept:
                    LOG.info("removed %d temp files of writes interrupted earlier", len(swept))
                self.state = self._open_state(resume, force)
                return self.state, self._take_labels(label_files)
            except BaseException:
                self._lock.release()
                raise

        # rank 0 owns the run directory; the other ranks get its state and the labels it imported
        self.state, labels = dist.on_main(open_run)
        if not dist.is_main and labels:
            self.adapter.assign_labels({self.index_of[i]: v for i, v in labels.items()}, "labels imported by rank 0")

    # ------------------------------------------------------------------ setup

    def _check_budget(self, existing: int | None = None) -> None:
        check_budget(self.cfg, len(self.pool), len(self.excluded), len(self.initial_ids), self.adapter.data_root,
                     existing)

    def _open_state(self, resume: bool, force: bool) -> RunState:
        config_path = self.run_dir / "config.yaml"
        new_config = to_dict(self.cfg)
        if self.state_path.exists():
            state = RunState.load(self.state_path)
            if config_path.exists():
                old = read_yaml(config_path)
                diff = config_differences(old, new_config, to_dict(type(self.cfg)()))
                if diff and not force:
                    raise RunDirError(f"{self.run_dir} was started with another config; differences (old -> new):\n"
                                      + "\n".join(diff) + "\npass --force to continue with the new config anyway")
                if diff:
                    LOG.warning("--force: continuing %s with a changed config (old -> new):\n%s", self.run_dir,
                                "\n".join(diff))
            self._follow_pool(state)
            LOG.info("resuming %s: %d labeled, %d cycles recorded", self.run_dir, len(state.labeled), len(state.cycles))
        else:
            state = RunState(seed=self.cfg.seed, strategy=self.strategy.name, pool_size=len(self.pool),
                             class_names=list(self.adapter.class_names))
            sync_pool(state, self.pool.ids, self.run_dir)  # version 1; saved with the initial selection
        atomic_write_text(config_path, dump_yaml(self.cfg))
        return state

    def _follow_pool(self, state: RunState) -> None:
        """A data root with new or vanished images: record the new pool version (and save it)."""
        change = sync_pool(state, self.pool.ids, self.run_dir)  # a PoolChangeError is a RunDirError
        if change is None:
            return
        v = change.version
        LOG.warning("the pool changed: version %d has %d images, %d new (e.g. %s), %d gone (e.g. %s); selections "
                    "from now on choose among all %d", v.version, v.count, v.added, change.added[:3], v.removed,
                    change.removed[:3], v.count)
        gone = [i for i in state.labeled if i not in self.index_of]
        if gone:
            LOG.warning("%d selected images are gone from the data root and are left out of training from now on "
                        "(the selection history keeps them): %s", len(gone), gone[:10])
        state.save(self.state_path)

    def _take_labels(self, label_files: Sequence[Path]) -> dict[str, str]:
        """Human mode: labels stored by earlier imports, then the new ``--labels`` files,
        validated against the selections before anything is written. Returns every label taken."""
        human = self.cfg.labels.mode == "human"
        if label_files and not human:
            raise ConfigError("--labels imports labels in labels.mode human; this run is labels.mode "
                              f"{self.cfg.labels.mode!r} (its labels come with the dataset)")
        stored_path = self.run_dir / LABELS_FILE
        merged = read_labels_csv(stored_path) if human and stored_path.exists() else {}
        if merged:  # labels of images that left the pool stay stored, unused
            self.adapter.assign_labels({self.index_of[i]: v for i, v in merged.items() if i in self.index_of},
                                       str(stored_path))
        selected = self.state.labeled
        for path in label_files:  # later files win, as a correction should
            new = read_labels_csv(Path(path))
            unknown = [i for i in new if i not in self.index_of]
            if unknown:
                raise DataError(f"labels file {path}: {len(unknown)} ids are not in the training pool, e.g. "
                                f"{unknown[:5]}")
            unselected = [i for i in new if i not in selected]
            if unselected:
                raise DataError(f"labels file {path}: {len(unselected)} ids were never selected for labeling in "
                                f"{self.run_dir}, e.g. {unselected[:5]}; label only the ids in its selections/")
            changed = [i for i in new if i in merged and merged[i] != new[i]]
            if changed:
                LOG.warning("labels file %s relabels %d images, e.g. %s", path, len(changed), changed[:5])
            self.adapter.assign_labels({self.index_of[i]: v for i, v in new.items()}, str(path))
            merged.update(new)
        if label_files:
            write_labels_csv(stored_path, merged)
            LOG.info("imported labels from %s: %d images labeled in %s", ", ".join(map(str, label_files)),
                     len(merged), stored_path)
        return merged

    # ------------------------------------------------------------------ logging

    def _tb(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"))
        return self._writer

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        if not self.cfg.logging.tensorboard or not self.dist.is_main:
            return
        self._tb().add_scalar(tag, value, step)

    def close(self) -> None:
        """Flush the logs and give the run directory back (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._lock.release()

    def _write_metrics_csv(self) -> None:
        metric_keys: list[str] = [self.adapter.metric_name]
        timing_keys: list[str] = []
        for rec in self.state.cycles:
            metric_keys += [k for k in rec.metrics if k not in metric_keys]
            timing_keys += [k for k in rec.timings if k not in timing_keys]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["cycle", "n_labeled", *metric_keys, *timing_keys])
        for rec in self.state.cycles:
            writer.writerow([rec.cycle, rec.n_labeled, *[rec.metrics.get(k, "") for k in metric_keys],
                             *[f"{rec.timings[k]:.3f}" if k in rec.timings else "" for k in timing_keys]])
        atomic_write_text(self.run_dir / "metrics.csv", buffer.getvalue())

    def _commit(self, write_first: Callable[[], None] | None = None) -> None:
        """Persist the state (rank 0, after ``write_first``) and give every rank rank 0's copy."""
        def write() -> RunState:
            if write_first is not None:
                write_first()
            self.state.save(self.state_path)
            self._write_metrics_csv()
            return self.state

        self.state = self.dist.on_main(write)

    # ------------------------------------------------------------------ steps

    def _record_selection(self, cycle: int, strategy: str, selection: Selection,
                          model: torch.nn.Module | None = None, candidates: np.ndarray | None = None) -> SelectionRecord:
        selection = self.dist.broadcast(selection)  # rank 0 decides; every rank goes on with its choice
        record = SelectionRecord(cycle, strategy, [
            SelectedItem(rank + 1, self.pool.ids[i], self.pool.paths[i], float(s))
            for rank, (i, s) in enumerate(zip(selection.indices.tolist(), selection.scores.tolist()))
        ], pool_version=self.state.pool_versions[-1].version)
        self.state.add_selection(record)

        # the preview and exports first, then the state: a kill in between redoes the (deterministic) step
        def export() -> None:
            pre = {}
            if model is not None and candidates is not None:
                pre = self._preview(record, model, selection.indices, candidates)
            e = self.cfg.export
            ctx = ExportContext(Path(self.adapter.data_root), e.uri_prefix, tuple(self.state.class_names), pre,
                                e.labelstudio_from_name, e.labelstudio_to_name)
            for fmt in e.formats:
                export_selection(record, self.run_dir / "selections", fmt, ctx)

        self._commit(write_first=export)
        return record

    def _preview(self, record: SelectionRecord, model: torch.nn.Module, picks: np.ndarray,
                 candidates: np.ndarray) -> dict:
        """Rank 0: the selection preview (file + TensorBoard grid) and the Label Studio pre-annotations."""
        lg, e = self.cfg.logging, self.cfg.export
        want_pre = e.pre_annotations and "labelstudio" in e.formats
        if not (lg.preview or want_pre):
            return {}
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, record.cycle, "preview"))
        rest, sample = unpicked_sample(candidates, picks, lg.preview_pool_sample if lg.preview else 0, gen)
        preview = preview_selection(
            model, self.adapter, record, picks, sample, batch_size=self.cfg.eval.batch_size, precision=self.precision,
            device=self.device, score_meaning=get_strategy(record.strategy).score_meaning,
            groups=None if self.groups is None else [self.groups[i] for i in picks.tolist()], thumbnails=lg.preview,
            thumbnail_size=lg.thumbnail_size, pre_annotations=want_pre,
            pool_what=f"a random sample of the {len(rest)} scored candidates not picked")
        if lg.preview:
            atomic_write_text(preview_path(self.run_dir, record.cycle),
                              json.dumps(preview.document, ensure_ascii=False, allow_nan=False) + "\n")
            if lg.tensorboard and preview.thumbnails:
                self._tb().add_image("selection/picks", tensorboard_grid(preview.thumbnails), record.cycle)
        return preview.pre_annotations

    def _existing_labels(self) -> np.ndarray:
        """``labels.initial_existing``: the selectable pool images whose labels already exist
        (rank 0 checks them, as for delivered labels), in pool order."""
        candidates = self._selectable(set())
        missing = set(self.dist.on_main(lambda: self.adapter.missing_labels(candidates)))
        order = np.asarray([i for i in candidates.tolist() if i not in missing], dtype=np.int64)
        if not len(order):
            raise ConfigError(f"labels.initial_existing: none of the {len(candidates)} pool images has a label yet "
                              f"(e.g. {self.adapter.label_path(int(candidates[0])) or self.pool.ids[0]}); set it to "
                              "false to start from a random pick")
        self._check_budget(len(order))
        return order

    def _initial_selection(self) -> None:
        if any(s.cycle == 0 for s in self.state.selections):
            return
        if self.initial_ids:
            order = np.asarray([self.index_of[i] for i in self.initial_ids], dtype=np.int64)
            how = f"from {self.cfg.labels.initial_list}"
        elif self.cfg.labels.initial_existing:
            order = self._existing_labels()
            how = "that were labeled already (labels.initial_existing)"
        else:
            gen = seed_everything(derive_seed(self.cfg.seed, 0, "initial"))
            candidates = self._selectable(set())
            order = candidates[torch.randperm(len(candidates), generator=gen).numpy()[: self.cfg.active.initial]]
            how = "at random"
        keys = np.linspace(1.0, 0.0, len(order), endpoint=False)  # rank order of the list / the random draw
        source = "initial_list" if self.initial_ids else "initial_existing" if self.cfg.labels.initial_existing \
            else "initial"
        self._record_selection(0, source, Selection(order, keys))
        LOG.info("cycle 0: %d initial images %s", len(order), how)

    def _selectable(self, taken: set[str]) -> np.ndarray:
        """Pool indices that are neither taken nor excluded (all of them, in order, when nothing is)."""
        skip = taken | set(self.excluded)
        return np.fromiter((i for i, image_id in enumerate(self.pool.ids) if image_id not in skip), dtype=np.int64)

    def labeled_indices(self) -> np.ndarray:
        """Selected images the task model trains on: every selection minus excluded ids."""
        excluded = set(self.excluded)  # and images that left the pool (a grown pool may also lose some)
        return np.sort(np.fromiter((self.index_of[i] for i in self.state.labeled
                                    if i not in excluded and i in self.index_of), dtype=np.int64))

    def _require_labels(self, cycle: int, labeled: np.ndarray) -> None:
        """Oracle mode: a no-op check. Human mode: stop until every selected image has its label."""
        # rank 0 checks (for segmentation: reads and validates the delivered masks) and decides
        # for all; a bad mask is reported once, by rank 0
        missing = self.dist.on_main(lambda: self.adapter.missing_labels(labeled))
        needed_path = self.run_dir / NEEDED_FILE
        if not missing:
            self.dist.on_main(lambda: needed_path.unlink(missing_ok=True))
            return
        ids = [self.pool.ids[i] for i in missing]
        self.dist.on_main(lambda: atomic_write_text(needed_path, needed_csv(
            (self.pool.ids[i], self.pool.paths[i], self.adapter.label_path(i)) for i in missing)))
        last = max(s.cycle for s in self.state.selections)
        raise LabelsNeeded(
            f"cycle {cycle} needs labels for {len(missing)} of {len(labeled)} selected images before it can train "
            f"(first: {ids[:5]}).\n  what to label: {needed_path} (image_id,path,label_path); the latest selection "
            f"is {self.run_dir / 'selections'}/cycle_{last:02d}.* in formats {', '.join(self.cfg.export.formats)}\n"
            f"  how: {self.adapter.label_help}\n"
            f"  then: run the same command again with --resume (images that cannot be labeled go in "
            f"labels.exclude_list)", ids)

    def _checkpoint_path(self, cycle: int) -> Path:
        return run_checkpoint_path(self.run_dir, cycle)

    def _build(self) -> tuple[torch.nn.Module, LossRanker | None]:
        return build_models(self.adapter, self.cfg, self.device, self.strategy.ranker_in_training(self.cfg))

    def _train_and_evaluate(self, cycle: int, labeled: np.ndarray) -> tuple[torch.nn.Module, LossRanker | None]:
        gen = seed_everything(derive_seed(self.cfg.seed, cycle, "train"))
        model, ranker = self._build()
        LOG.info("cycle %d: training on %d labeled images (%s, %s%s)", cycle, len(labeled), self.device,
                 self.precision.name, f", {self.dist.world_size} processes" if self.dist.enabled else "")
        epochs = self.cfg.train.epochs

        def on_epoch(epoch: int, task_loss: float, rank_loss: float) -> None:
            step = (cycle - 1) * epochs + epoch
            self.log_scalar("train/task_loss", task_loss, step)
            if ranker is not None:
                self.log_scalar("train/rank_loss", rank_loss, step)

        trained = train_task_model(model, ranker, self.adapter, labeled, self.cfg, self.precision, self.device, gen,
                                   on_epoch, self.dist)
        self.dist.on_main(lambda: atomic_torch_save(
            {"model": model.state_dict(), "ranker": None if ranker is None else ranker.state_dict()},
            self._checkpoint_path(cycle)))
        start = time.perf_counter()
        metrics = evaluate(model, self.adapter, self.cfg, self.precision, self.device, self.dist)
        metrics.update(self.adapter.labeled_stats(labeled))
        eval_s = time.perf_counter() - start
        LOG.info("cycle %d: %d labeled -> %s %.4f", cycle, len(labeled), self.adapter.metric_name,
                 metrics[self.adapter.metric_name])
        for key, value in metrics.items():
            self.log_scalar(f"metric/{key}", value, cycle)
        self.log_scalar(f"metric_vs_labeled/{self.adapter.metric_name}", metrics[self.adapter.metric_name], len(labeled))
        self.state.cycles.append(CycleRecord(cycle, len(labeled), metrics, {
            "train_s": trained.seconds, "train_img_per_s": trained.images / max(trained.seconds, 1e-9), "eval_s": eval_s}))
        self._commit()
        return model, ranker

    def _load_trained(self, cycle: int) -> tuple[torch.nn.Module, LossRanker | None]:
        model, ranker = self._build()

        def load() -> None:  # rank 0 reads the checkpoint; the others need no shared file system
            load_run_checkpoint(self._checkpoint_path(cycle), model, ranker, map_location=self.device)

        self.dist.on_main(load)
        for module in (model, ranker):
            if module is not None:
                self.dist.sync_module(module)
        return model, ranker

    def _select(self, cycle: int, model: torch.nn.Module, ranker: LossRanker | None, labeled: np.ndarray) -> None:
        a = self.cfg.active
        unlabeled = self._selectable(set(self.state.labeled))
        if a.budget > len(unlabeled):
            raise ConfigError(f"active.budget ({a.budget}) is larger than the unlabeled pool ({len(unlabeled)} images)")
        gen = seed_everything(derive_seed(self.cfg.seed, cycle, "select"))
        subset = unlabeled[torch.randperm(len(unlabeled), generator=gen).numpy()[: a.subset]]
        ctx = SelectionContext(
            cfg=self.cfg, adapter=self.adapter, model=model, ranker=ranker, labeled=labeled, candidates=subset,
            budget=ranked_count(a, len(subset)), precision=self.precision, device=self.device, generator=gen,
            log_scalar=lambda tag, value, step: self.log_scalar(f"cycle_{cycle:02d}/{tag}", value, step),
            dist=self.dist)
        start = time.perf_counter()
        selection = constrained(self.strategy.select(ctx), ctx, a.budget, self.groups)
        seconds = time.perf_counter() - start
        record = self.state.cycle(cycle)
        record.timings["select_s"] = seconds
        record.selected = True
        oracle = self.cfg.labels.mode == "oracle"
        writes_candidates = oracle and self.cfg.logging.candidate_scores and selection.candidate_scores is not None
        losses = None
        if writes_candidates or (oracle and self.cfg.logging.diagnostics):  # one true-loss pass serves both
            losses = true_losses(model, self.adapter, subset, self.cfg, self.precision, self.device, self.dist)
        if writes_candidates:
            self._write_candidates(cycle, subset, selection, losses)
        if self.cfg.logging.diagnostics:
            entropy = self.adapter.labeled_stats(selection.indices).get("labeled_class_entropy") if oracle else None
            record.metrics.update(selection.diagnostics)
            record.metrics.update(pick_diagnostics(subset, selection.indices, selection.candidate_scores,
                                                   selection.candidate_rank, losses, entropy))
        self._record_selection(cycle, self.strategy.name, selection, model, subset)
        LOG.info("cycle %d: %s selected %d of %d scored images in %.1fs", cycle, self.strategy.name,
                 len(selection.indices), len(subset), seconds)

    def _write_candidates(self, cycle: int, subset: np.ndarray, selection: Selection, losses: np.ndarray) -> None:
        """``image_id,score,true_loss,selected`` for every scored candidate (the paper's Fig. 8)."""
        if not self.dist.is_main:
            return
        chosen = set(selection.indices.tolist())
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image_id", "score", "true_loss", "selected"])
        for i, score, loss in zip(subset.tolist(), selection.candidate_scores.tolist(), losses.tolist()):
            writer.writerow([self.pool.ids[i], repr(float(score)), repr(float(loss)), int(i in chosen)])
        atomic_write_text(self.run_dir / "selections" / f"cycle_{cycle:02d}.candidates.csv", buffer.getvalue())

    def _prune_checkpoints(self, keep: int) -> None:
        for path in (self.run_dir / "checkpoints").glob("cycle_*.pt"):
            if path != self._checkpoint_path(keep):
                path.unlink(missing_ok=True)

    def run(self) -> RunState:
        try:
            self._initial_selection()
            a = self.cfg.active
            for cycle in range(1, a.cycles + 1):
                if self.state.cycle_complete(cycle, a.cycles, a.select_after_last):
                    continue
                wants_selection = cycle < a.cycles or a.select_after_last
                record = self.state.cycle(cycle)
                labeled = self.labeled_indices()
                if record is None:
                    self._require_labels(cycle, labeled)
                    model, ranker = self._train_and_evaluate(cycle, labeled)
                else:
                    model, ranker = self._load_trained(cycle)
                if wants_selection:
                    self._select(cycle, model, ranker, labeled)
                self.dist.on_main(lambda: self._prune_checkpoints(cycle))  # noqa: B023 - called at once
            return self.state
        finally:
            self.close()

def constrained(ranked: Selection, ctx: SelectionContext, k: int, pool_groups: Sequence[str] | None) -> Selection:
    """The budget's picks from a strategy's ranked output under ``active.max_per_group`` and
    ``active.diversity`` (every strategy gets both); the picks stay in rank order."""
    groups = None if pool_groups is None else [pool_groups[i] for i in ranked.indices.tolist()]
    pos = constrain(ranked.indices, k, ctx.cfg.active, groups,
                    lambda p: ctx.pass_over(ranked.indices[p], frozenset({"embedding"})).embedding)
    return dataclasses.replace(ranked, indices=ranked.indices[pos], scores=ranked.scores[pos])


def run_active_learning(cfg: BaseConfig, adapter: TaskAdapter, run_dir: Path, resume: bool = False,
                        force: bool = False, label_files: Sequence[Path] = (),
                        dist: Distributed = Distributed()) -> RunState:
    return ActiveLearningRun(cfg, adapter, run_dir, resume, force, label_files, dist).run()
