"""What a selection may contain besides the best scores: at most ``active.max_per_group`` images
per group (the frames of one drive, one city), and ``active.diversity: kcenter``, which re-picks
the budget from the top ``active.diversity_candidates`` by score with k-center greedy on the task
model's features. Both work on any strategy's ranked output, so every strategy gets them.

Group keys come from the image id, one registry entry per rule:

- ``city``: the id's first ``_`` field (Cityscapes ``aachen_000000_000019`` -> ``aachen``);
- ``sequence``: the id without its last ``_`` field (Cityscapes -> ``aachen_000000``, CamVid
  ``0001TP_006690`` -> ``0001TP``);
- ``folder``: the id's parent folder (folder datasets, ranked folders: ``drive7/a.png`` -> ``drive7``);
- ``regex``: the first capture group (else the whole match) of ``active.group_pattern``;
- ``csv``: the ``group`` column of ``active.group_file`` (columns ``image_id,group``).
"""
from __future__ import annotations

import csv
import re
import types
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .config import ActiveConfig, ConfigError

GroupFn = Callable[[str], str | None]
DIVERSITY = ("none", "kcenter")


def _regex(a: ActiveConfig) -> GroupFn:
    if not a.group_pattern:
        raise ConfigError(f"active.group_pattern: expected a regular expression for group_by regex "
                          f"(e.g. '^([^_]+)_'), got {a.group_pattern!r}")
    try:
        pattern = re.compile(a.group_pattern)
    except re.error as err:
        raise ConfigError(f"active.group_pattern: {a.group_pattern!r} is not a regular expression ({err})") from None

    def group(image_id: str) -> str | None:
        m = pattern.search(image_id)
        if m is None:
            return None
        return m.group(1) if pattern.groups else m.group(0)

    return group


def read_group_file(path: Path) -> dict[str, str]:
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"image_id", "group"} <= set(reader.fieldnames):
                raise ConfigError(f"active.group_file {path}: expected a header with columns image_id,group, "
                                  f"got {reader.fieldnames}")
            groups: dict[str, str] = {}
            for line, row in enumerate(reader, 2):
                image_id, group = row["image_id"], row["group"]
                if not image_id or group is None or group == "":
                    raise ConfigError(f"active.group_file {path}:{line}: empty image_id or group")
                if image_id in groups and groups[image_id] != group:
                    raise ConfigError(f"active.group_file {path}:{line}: {image_id!r} is in two groups "
                                      f"({groups[image_id]!r}, {group!r})")
                groups[image_id] = group
    except OSError as err:
        raise ConfigError(f"active.group_file: cannot read {path}: {err}") from None
    return groups


def _csv(a: ActiveConfig) -> GroupFn:
    if not a.group_file:
        raise ConfigError("active.group_file: group_by csv needs a CSV file with columns image_id,group")
    return read_group_file(Path(a.group_file)).get


GROUP_KEYS: types.MappingProxyType[str, Callable[[ActiveConfig], GroupFn]] = types.MappingProxyType({
    "city": lambda a: lambda image_id: image_id.split("_", 1)[0],
    "sequence": lambda a: lambda image_id: image_id.rsplit("_", 1)[0],
    "folder": lambda a: lambda image_id: image_id.rsplit("/", 1)[0] if "/" in image_id else ".",
    "regex": _regex,
    "csv": _csv,
})


def group_labels(a: ActiveConfig, ids: Sequence[str]) -> list[str] | None:
    """Each id's group under ``active.group_by`` (None when no grouping is set); an id the rule
    cannot place is an error naming it."""
    if a.group_by is None:
        return None
    if a.group_by not in GROUP_KEYS:
        raise ConfigError(f"active.group_by: expected one of {', '.join(GROUP_KEYS)}, got {a.group_by!r}")
    rule = GROUP_KEYS[a.group_by](a)
    labels = [rule(i) for i in ids]
    lost = [i for i, g in zip(ids, labels) if g is None]
    if lost:
        where = a.group_pattern if a.group_by == "regex" else a.group_file
        raise ConfigError(f"active.group_by {a.group_by} ({where}): {len(lost)} image ids have no group, "
                          f"e.g. {lost[:5]}")
    return labels  # type: ignore[return-value]


def check_group_capacity(a: ActiveConfig, groups: Sequence[str] | None) -> None:
    """Refuse, before any training, caps that cannot fill one selection of the pool."""
    if a.max_per_group is None or groups is None:
        return
    n_groups = len(set(groups))
    if n_groups * a.max_per_group < a.budget:
        raise ConfigError(f"active.max_per_group: {n_groups} groups x {a.max_per_group} per group cannot give "
                          f"active.budget {a.budget} picks; raise max_per_group or lower the budget")


def ranked_count(a: ActiveConfig, n_candidates: int) -> int:
    """How many candidates the strategy must rank: the budget alone, the diversity's top M, or
    (group caps without diversity) every candidate."""
    if a.diversity != "none":
        return min(n_candidates, a.diversity_candidates or 4 * a.budget)
    if a.max_per_group is not None:
        return n_candidates
    return min(n_candidates, a.budget)


def k_center_order(features: torch.Tensor, k: int, groups: Sequence[str] | None = None,
                   max_per_group: int | None = None,
                   min_dist: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k-center greedy: each time take the item farthest from its nearest center (``min_dist``:
    the distance to centers given beforehand, e.g. the labeled set; without it the first item
    is taken first), skipping groups that reached ``max_per_group``. Returns positions into
    ``features`` and the distance each had when taken."""
    x = features.double()
    if min_dist is None:
        min_dist = torch.full((len(x),), float("inf"), dtype=torch.float64)  # argmax of all-inf: position 0
    counts: Counter[str] = Counter()
    picks: list[int] = []
    dists: list[float] = []
    while len(picks) < k:
        j = int(torch.argmax(min_dist))
        if min_dist[j] < 0:  # everything left is picked or in a full group
            break
        picks.append(j)
        dists.append(float(min_dist[j]))
        min_dist = torch.minimum(min_dist, torch.cdist(x, x[j:j + 1]).squeeze(1))
        min_dist[j] = -1.0  # never pick twice, even among duplicate features
        if groups is not None and max_per_group is not None:
            counts[groups[j]] += 1
            if counts[groups[j]] >= max_per_group:
                min_dist[[i for i, g in enumerate(groups) if g == groups[j]]] = -1.0
    return np.asarray(picks, dtype=np.int64), np.asarray(dists)


def capped_order(groups: Sequence[str], k: int, max_per_group: int) -> np.ndarray:
    """The first ``k`` ranked positions whose group is not full yet."""
    counts: Counter[str] = Counter()
    picks: list[int] = []
    for j, g in enumerate(groups):
        if counts[g] < max_per_group:
            counts[g] += 1
            picks.append(j)
            if len(picks) == k:
                break
    return np.asarray(picks, dtype=np.int64)


def constrain(ranked: np.ndarray, k: int, a: ActiveConfig, groups: Sequence[str] | None,
              features: Callable[[np.ndarray], torch.Tensor]) -> np.ndarray:
    """Positions (into ``ranked``, best first) of the ``k`` picks under the group cap and the
    diversity rule, in rank order. ``groups`` are the ranked items' groups; ``features(positions)``
    gives their task-model features (called only for diversity)."""
    m = ranked_count(a, len(ranked))
    cap = a.max_per_group
    if a.diversity == "kcenter":
        pos = np.sort(k_center_order(features(np.arange(m)), k, None if groups is None else groups[:m], cap)[0])
        where = f"the top {m} by score (active.diversity_candidates)"
    elif cap is not None and groups is not None:
        pos = capped_order(groups[:m], k, cap)
        where = f"the {m} scored candidates"
    else:
        return np.arange(min(k, len(ranked)))
    if len(pos) < k:
        raise ConfigError(f"active.max_per_group {cap}: only {len(pos)} of {where} fit under the cap, {k} are "
                          "needed; raise max_per_group, active.diversity_candidates or active.subset")
    return pos
