"""The run's durable state: every selection (with scores) and every finished cycle step.

Like baal's labelled map, each labeled image id maps to the cycle it was selected at (0 = the
initial random pick); that map is derived from the selection history, so the two can never
disagree. The file is rewritten atomically after every completed step, and a run resumes from
whatever the last write recorded.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import RunDirError
from .runtime import atomic_write_text

STATE_FORMAT = 1


@dataclass
class SelectedItem:
    rank: int
    image_id: str
    path: str
    score: float


@dataclass
class SelectionRecord:
    cycle: int
    strategy: str
    items: list[SelectedItem]
    pool_version: int = 1   # the pool version (RunState.pool_versions) the selection chose from


@dataclass
class PoolVersion:
    """The pool as the data root held it from some point of the run on (see core.pool)."""

    version: int
    count: int              # images in the pool
    added: int              # images new in this version (all of them in version 1)
    removed: int            # images of the previous version that are gone
    when: str               # UTC, ISO 8601
    after_cycle: int        # the last cycle trained before this version (0: before any)
    sha256: str             # of the sorted id list (core.pool.pool_digest)
    file: str               # run-dir-relative JSON file with its ids and the added/removed ones


@dataclass
class CycleRecord:
    cycle: int
    n_labeled: int
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    selected: bool = False


@dataclass
class RunState:
    seed: int
    strategy: str
    pool_size: int
    class_names: list[str] = field(default_factory=list)   # for exports (Scale labels) without the data
    selections: list[SelectionRecord] = field(default_factory=list)
    cycles: list[CycleRecord] = field(default_factory=list)
    pool_versions: list[PoolVersion] = field(default_factory=list)
    format: int = STATE_FORMAT

    @property
    def labeled(self) -> dict[str, int]:
        """image id -> the cycle whose selection labeled it (0 = initial)."""
        return {item.image_id: sel.cycle for sel in self.selections for item in sel.items}

    def cycle(self, number: int) -> CycleRecord | None:
        return next((c for c in self.cycles if c.cycle == number), None)

    def cycle_complete(self, number: int, cycles: int, select_after_last: bool) -> bool:
        """Cycle ``number`` is trained and evaluated and, when the run selects after it (every cycle
        but the last, and the last with ``select_after_last``), has its selection."""
        record = self.cycle(number)
        wants_selection = number < cycles or select_after_last
        return record is not None and (record.selected or not wants_selection)

    def finished(self, cycles: int, select_after_last: bool) -> bool:
        """The one rule for a finished run: every cycle 1..``cycles`` complete."""
        return all(self.cycle_complete(c, cycles, select_after_last) for c in range(1, cycles + 1))

    def add_selection(self, record: SelectionRecord) -> None:
        already = self.labeled
        dupes = [it.image_id for it in record.items if it.image_id in already]
        if dupes:
            raise RuntimeError(f"cycle {record.cycle} selected already-labeled ids: {dupes[:5]}")
        if any(s.cycle == record.cycle for s in self.selections):
            raise RuntimeError(f"cycle {record.cycle} already has a selection")
        self.selections.append(record)

    def to_json(self) -> str:
        data = asdict(self)
        data["labeled"] = self.labeled  # for readers; derived, ignored on load
        return json.dumps(data, indent=1, ensure_ascii=False)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "RunState":
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RunDirError(f"cannot read run state {path}: {err}") from err
        if data.get("format") != STATE_FORMAT:
            raise RunDirError(f"{path}: state format {data.get('format')!r} is not the supported {STATE_FORMAT}")
        try:
            return cls(
                seed=data["seed"], strategy=data["strategy"], pool_size=data["pool_size"],
                class_names=list(data.get("class_names", [])),
                selections=[SelectionRecord(s["cycle"], s["strategy"], [SelectedItem(**i) for i in s["items"]],
                                            s.get("pool_version", 1)) for s in data["selections"]],
                cycles=[CycleRecord(**c) for c in data["cycles"]],
                pool_versions=[PoolVersion(**v) for v in data.get("pool_versions", [])],
            )
        except (KeyError, TypeError) as err:
            raise RunDirError(f"{path}: malformed run state ({err})") from err
