"""Pools that grow: each time a run opens, the data root's image ids are compared with the
pool the run last recorded. A changed pool becomes a new version in the state (count, added,
removed, when) with its ids in ``RUN_DIR/pool/vNNNN.json``; an unchanged one records nothing,
so resuming a run on the same data stays exact.

Ids are stable (derived from paths), so an image keeps its id and its label across versions;
pool *indices* are not, which is why the run keys everything by id. Images that disappeared
are reported and can no longer be selected or trained on; one that was labeled and comes back
is labeled still (the selection history keeps it).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import RunDirError
from .runtime import atomic_write_text
from .state import PoolVersion, RunState

POOL_DIR = "pool"


class PoolChangeError(RunDirError):
    """The pool changed in a way the run cannot follow (or its recorded versions cannot be read);
    the message says what and why. Bad input: the tools exit with code 2."""


@dataclass(frozen=True)
class PoolChange:
    version: PoolVersion
    added: list[str]
    removed: list[str]


def pool_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(ids), ensure_ascii=False).encode()).hexdigest()


def version_ids(run_dir: Path, version: PoolVersion) -> list[str]:
    path = Path(run_dir) / version.file
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["ids"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PoolChangeError(f"cannot read pool version {version.version} from {path}: {err}") from None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def sync_pool(state: RunState, ids: Sequence[str], run_dir: Path) -> PoolChange | None:
    """Record ``ids`` as a new pool version of ``state`` if they differ from the latest one
    (the first call records version 1). Writes the version's id file; the caller saves the state."""
    digest = pool_digest(ids)
    latest = state.pool_versions[-1] if state.pool_versions else None
    if latest is not None and latest.sha256 == digest:
        return None
    if latest is None:
        if state.selections and state.pool_size != len(ids):
            raise PoolChangeError(
                f"{run_dir}: the state was made for a pool of {state.pool_size} images (before pool versions were "
                f"recorded) and the data now has {len(ids)}; which images are new cannot be told. Start a new run "
                "with labels.initial_list set to the ids this run selected (state.json) to keep its labels")
        before: set[str] = set()
    else:
        before = set(version_ids(run_dir, latest))
    now = set(ids)
    added = sorted(now - before)
    removed = sorted(before - now)
    number = 1 if latest is None else latest.version + 1
    rel = f"{POOL_DIR}/v{number:04d}.json"
    atomic_write_text(Path(run_dir) / rel, json.dumps(
        {"version": number, "ids": list(ids), "added": added if latest is not None else [], "removed": removed},
        ensure_ascii=False, indent=0) + "\n")
    version = PoolVersion(version=number, count=len(ids), added=len(added), removed=len(removed), when=_now(),
                          after_cycle=max((c.cycle for c in state.cycles), default=0), sha256=digest, file=rel)
    state.pool_versions.append(version)
    state.pool_size = len(ids)
    return PoolChange(version, added if latest is not None else [], removed)
