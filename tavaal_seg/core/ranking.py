"""Ranking images outside a run's pool with the model the run already trained.

The run's latest task model and ranker are loaded from ``checkpoints/cycle_NN.pt`` and stay
frozen: nothing trains them. The new images join the adapter's pool, the run's strategy scores
every one of them against the run's labeled images (``vaal``/``tavaal`` train only their VAE and
discriminator, on the labeled images vs the new ones), and ``active.max_per_group`` /
``active.diversity`` choose the top K from the full ranking as they do in a run.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .adapter import TaskAdapter
from .config import BaseConfig, ConfigError
from .diversity import constrain, group_labels
from .errors import DataError, InputNotFound, RunDirError, WeightsError
from .labels import read_id_list
from .preview import Preview, preview_selection, unpicked_sample
from .ranker import LossRanker
from .runtime import LOG, Precision, derive_seed, resolve_device, seed_everything
from .state import RunState, SelectedItem, SelectionRecord
from .strategies import SelectionContext, get_strategy
from .training import build_models
from .weights import load_run_checkpoint, run_checkpoint_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RANKING_COLUMNS = ("rank", "image_id", "path", "score", "selected", "group", "strategy", "score_meaning")
NEW_ID_PREFIX = "rank:"   # the pool ids of ranked images (never a dataset id); the ranking shows the relative path


def find_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively, hidden files and folders skipped) as sorted
    POSIX paths relative to it: the images' ids."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFound(f"--images {folder} is not a directory")
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not found:
        raise InputNotFound(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return found


def load_trained(run_dir: Path, state: RunState, cfg: BaseConfig, adapter: TaskAdapter, device: torch.device,
                 trains_ranker: bool) -> tuple[int, torch.nn.Module, LossRanker | None]:
    """(cycle, model, ranker) of the latest trained cycle whose checkpoint is on disk."""
    for record in sorted(state.cycles, key=lambda c: -c.cycle):
        path = run_checkpoint_path(run_dir, record.cycle)
        if path.is_file():
            break
    else:
        raise RunDirError(f"{run_dir} has no trained model yet (no checkpoints/cycle_NN.pt of a trained cycle); "
                          "run at least one cycle first")
    model, ranker = build_models(adapter, cfg, device, trains_ranker)
    try:
        load_run_checkpoint(path, model, ranker, map_location=device)
    except WeightsError as err:
        raise WeightsError(f"{err} -- the checkpoint must fit the run's config (model.*, ranker.hidden, "
                           "active.strategy; --set changes them)") from None
    for module in (model, ranker):
        if module is not None:
            module.requires_grad_(False)  # frozen: scoring only
    return record.cycle, model, ranker


@dataclass(frozen=True)
class RankedImage:
    rank: int                 # 1 = the strategy's best
    image_id: str             # the path relative to the ranked folder
    path: str                 # the same (exports resolve it against the folder)
    score: float
    selected: int | None      # the position among the K picks (labeling order), None if not picked
    group: str | None


@dataclass
class Ranking:
    strategy: str
    score_meaning: str
    model_cycle: int
    images: list[RankedImage]            # every image, best first
    picks: SelectionRecord               # the top K under the group cap / diversity, in labeling order
    skipped: list[str]                   # images the run has labeled already (not ranked)
    preview: Preview | None = None

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(RANKING_COLUMNS)
        for im in self.images:
            writer.writerow([im.rank, im.image_id, im.path, repr(float(im.score)),
                             "" if im.selected is None else im.selected, "" if im.group is None else im.group,
                             self.strategy, self.score_meaning])
        return buffer.getvalue()


def _labeled_ids(state: RunState, cfg: BaseConfig, pool_ids: Sequence[str]) -> list[str]:
    excluded: set[str] = set()
    if cfg.labels.exclude_list is not None and Path(cfg.labels.exclude_list).is_file():
        excluded = set(read_id_list(Path(cfg.labels.exclude_list), "labels.exclude_list"))
    known = set(pool_ids)
    return [i for i in state.labeled if i not in excluded and i in known]


def rank_folder(cfg: BaseConfig, adapter: TaskAdapter, run_dir: Path, images: Path, budget: int | None = None, *,
                preview: bool = False, pre_annotations: bool = False) -> Ranking:
    """Score every image under ``images`` with the run's trained model and strategy (see the
    module docstring); ``preview``/``pre_annotations``: also predict on the picks for a report or
    Label Studio."""
    run_dir, images = Path(run_dir), Path(images)
    state = RunState.load(run_dir / "state.json")
    strategy = get_strategy(cfg.active.strategy)
    rels = find_images(images)
    pool = adapter.pool()
    labeled_ids = _labeled_ids(state, cfg, pool.ids)
    index_of = {i: k for k, i in enumerate(pool.ids)}
    labeled = np.sort(np.asarray([index_of[i] for i in labeled_ids], dtype=np.int64))
    if len(labeled) == 0:
        raise DataError(f"{run_dir}: none of the run's labeled images is in its pool under {adapter.data_root}; "
                        "pass --data-root where the run's data is now")
    # an image the run labeled already is not new: leave it out of the ranking
    labeled_files = {(Path(adapter.data_root) / pool.paths[i]).resolve() for i in labeled}
    skipped = [r for r in rels if (images / r).resolve() in labeled_files]
    skip = set(skipped)
    rels = [r for r in rels if r not in skip]
    if skipped:
        LOG.warning("%d images under %s are labeled in the run already and are not ranked, e.g. %s", len(skipped),
                    images, skipped[:3])
    if not rels:
        raise DataError(f"every image under {images} is labeled in {run_dir} already; nothing to rank")
    k = min(budget if budget is not None else cfg.active.budget, len(rels))
    if k < 1:
        raise ConfigError(f"--budget must be at least 1, got {budget}")
    groups = group_labels(cfg.active, rels)
    candidates = adapter.extend_pool([images / r for r in rels], [NEW_ID_PREFIX + r for r in rels], rels)
    device = resolve_device(cfg.device)
    precision = Precision(device, cfg.train.amp, force_cpu_bf16=cfg.train.amp_on_cpu)
    cycle, model, ranker = load_trained(run_dir, state, cfg, adapter, device, strategy.trains_ranker)
    LOG.info("ranking %d images under %s with %s's cycle-%d model (%s, %d labeled images)", len(rels), images,
             run_dir, cycle, strategy.name, len(labeled))
    gen = seed_everything(derive_seed(cfg.seed, cycle, "rank_images"))
    ctx = SelectionContext(cfg=cfg, adapter=adapter, model=model, ranker=ranker, labeled=labeled,
                           candidates=candidates, budget=len(candidates), precision=precision, device=device,
                           generator=gen, log_scalar=lambda tag, value, step: None)
    ranked = strategy.select(ctx)  # every candidate, best first
    rel_of = {int(c): r for c, r in zip(candidates.tolist(), rels)}
    ranked_rels = [rel_of[int(i)] for i in ranked.indices.tolist()]
    group_of = dict(zip(rels, groups or []))
    ranked_groups = None if groups is None else [group_of[r] for r in ranked_rels]
    pos = constrain(ranked.indices, k, cfg.active, ranked_groups,
                    lambda p: ctx.pass_over(ranked.indices[p], frozenset({"embedding"})).embedding)
    picked = {int(ranked.indices[p]): n + 1 for n, p in enumerate(pos.tolist())}
    out = [RankedImage(p + 1, rel, rel, float(s), picked.get(int(i)), None if ranked_groups is None else ranked_groups[p])
           for p, (i, rel, s) in enumerate(zip(ranked.indices.tolist(), ranked_rels, ranked.scores.tolist()))]
    record = SelectionRecord(cycle, strategy.name, [SelectedItem(n + 1, out[p].image_id, out[p].path, out[p].score)
                                                    for n, p in enumerate(pos.tolist())])
    ranking = Ranking(strategy.name, strategy.score_meaning, cycle, out, record, skipped)
    if preview or pre_annotations:
        picks = ranked.indices[pos]
        rest, sample = unpicked_sample(candidates, picks, cfg.logging.preview_pool_sample if preview else 0, gen)
        ranking.preview = preview_selection(
            model, adapter, record, picks, sample, batch_size=cfg.eval.batch_size, precision=precision,
            device=device, score_meaning=strategy.score_meaning,
            groups=None if ranked_groups is None else [ranked_groups[p] for p in pos.tolist()],
            thumbnails=preview, thumbnail_size=cfg.logging.thumbnail_size, pre_annotations=pre_annotations,
            pool_what=f"a random sample of the {len(rest)} ranked images not picked")
    return ranking
