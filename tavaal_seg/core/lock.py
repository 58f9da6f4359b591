"""One process per run directory.

The lock itself is an OS advisory lock (``flock`` via the ``filelock`` package) on
``run_dir/.lock``: the kernel drops it when its process dies, however it dies (SIGKILL
included), so a lock left by a dead process is free by construction and is simply taken over.
Who holds it is written next to it in ``run_dir/lock.json`` (PID, host, start time, command),
because a refusal that cannot say *which* process holds the run is not actionable.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .runtime import LOG, atomic_write_text

LOCK_NAME, OWNER_NAME = ".lock", "lock.json"


class RunDirLocked(RuntimeError):
    """Another live process holds the run directory."""


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class RunDirLock:
    """Exclusive ownership of a run directory for the life of one process's run."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / LOCK_NAME), timeout=0)

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        owner_path = self.run_dir / OWNER_NAME
        try:
            self._lock.acquire()
        except Timeout:
            owner = _read_owner(owner_path)
            who = (f"PID {owner.get('pid')} on {owner.get('host')} since {owner.get('started')} "
                   f"({owner.get('command', '?')})") if owner else "another process"
            raise RunDirLocked(f"{self.run_dir} is in use by {who}; wait for it to finish or stop it "
                               "(a run killed in any way releases the lock)") from None
        previous = _read_owner(owner_path)
        if previous and previous.get("pid") != os.getpid():
            LOG.warning("taking over the lock of %s left by PID %s on %s (that process is gone)",
                        self.run_dir, previous.get("pid"), previous.get("host"))
        atomic_write_text(owner_path, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:500]}))

    def release(self) -> None:
        if self._lock.is_locked:
            (self.run_dir / OWNER_NAME).unlink(missing_ok=True)
            self._lock.release()
