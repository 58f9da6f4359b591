"""Several processes, one run: torch.distributed under ``torchrun`` (or any launcher that sets
the standard ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` variables).

Who does what:
- every rank trains the task model, ranker, VAE and discriminator as DDP replicas on its share
  of every *global* batch (the configured batch size is the global one, so a run means the same
  schedule at any world size), and scores its share of the pool;
- scores are gathered, and rank 0's selection is broadcast: it is the one every rank uses and
  the one recorded;
- only rank 0 touches the run directory (lock, state, metrics, exports, checkpoints,
  TensorBoard). Anything rank 0 does alone goes through :meth:`Distributed.on_main`, which
  hands its result, or its exception, to every rank, so an error there ends all ranks with the
  same message instead of leaving them waiting in a collective.

A single process is ``Distributed()`` (rank 0 of 1): every method is then a plain call.
"""
from __future__ import annotations

import datetime
import logging
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from .adapter import batch_slices
from .errors import ConfigError

T = TypeVar("T")
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}


class PeerFailed(RuntimeError):
    """Rank 0 failed in a step only it runs, with an error that could not be sent as itself."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for CUDA under a launcher, else ``device``."""
        return torch.device("cuda", self.local_rank) if self.enabled and device.type == "cuda" else device

    def __str__(self) -> str:
        return f"rank {self.rank}/{self.world_size}" if self.enabled else "single process"

    # ------------------------------------------------------------------ who gets which items

    def shard_batches(self, indices: np.ndarray, batch_size: int) -> np.ndarray:
        """This rank's items for an inference pass: a contiguous run of the *whole* batches a
        single process would form, so every image meets the same batch and gets bit-for-bit the
        score a single process gives it. Concatenated in rank order, the shards are ``indices``."""
        indices = np.asarray(indices)
        if not self.enabled:
            return indices
        batches = batch_slices(indices, batch_size)
        mine = np.array_split(np.arange(len(batches)), self.world_size)[self.rank]
        return np.concatenate([batches[b] for b in mine]) if len(mine) else indices[:0]

    def split_batch(self, batch: np.ndarray | torch.Tensor) -> Any:
        """This rank's part of one global training batch (strided, so parts differ by at most one)."""
        return batch[self.rank::self.world_size] if self.enabled else batch

    # ------------------------------------------------------------------ collectives

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank; an exception there is
        raised on every rank (as itself when it pickles, else as :class:`PeerFailed`); on the
        other ranks :func:`relayed` tells it apart from an error of their own."""
        if not self.enabled:
            return fn()
        outcome: tuple[bool, Any] = (True, None)
        failure: Exception | None = None
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as err:  # noqa: BLE001 - handed to every rank, then re-raised
                failure, outcome = err, (False, _portable(err))
        ok, value = self.broadcast(outcome if self.is_main else None)
        if ok:
            return value
        if failure is not None:
            raise failure
        setattr(value, RELAYED, True)
        raise value

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then (if it succeeded) on the other ranks: for steps that may
        write shared files on first use (a dataset download, synthetic demo data)."""
        if not self.enabled:
            return fn()
        kept: list[T] = []
        self.on_main(lambda: kept.append(fn()))  # only the outcome travels, not the (large) result
        return kept[0] if self.is_main else fn()

    def mean(self, values: Sequence[float]) -> list[float]:
        """Element-wise mean of per-rank numbers (loss logs)."""
        rows = self.all_gather([float(v) for v in values])
        return [float(np.mean(col)) for col in zip(*rows)] if rows and rows[0] else []

    # ------------------------------------------------------------------ models

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """A DDP replica (gradients averaged over ranks at every backward) or ``module`` itself."""
        if not self.enabled:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def sync_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank. DDP keeps parameters equal, but
        batch-norm running statistics drift apart in the last training step (each rank updates
        them from its own images), and an inference pass must see one model everywhere."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                torch_dist.broadcast(tensor.data, src=0)

    def close(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a torchrun worker that used its process group, skipping the interpreter's shutdown.

    Gloo's worker threads outlive ``destroy_process_group`` (DDP leaves references to the group
    behind, pytorch/pytorch#109478), and a worker drops a collective's tensors only after the
    caller's wait has returned. When it does so while Python is finalizing, it cannot take the
    GIL, is unwound through a noexcept destructor and aborts the process ("terminate called
    without an active exception", SIGABRT): torchrun then reports a run that finished as failed
    (one run in three on a loaded 2-core machine; tests/test_distributed.py checks it). Nothing
    is left to finalize by then: the run's files, TensorBoard writer and lock are closed, and the
    logs and standard streams are flushed here.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


RELAYED = "_tavaal_relayed_from_rank0"


def relayed(err: BaseException) -> bool:
    """Whether ``err`` is rank 0's error handed to this rank by :meth:`Distributed.on_main`
    (rank 0 reports it; the other ranks need not repeat it)."""
    return bool(getattr(err, RELAYED, False))


def _portable(err: BaseException) -> BaseException:
    """``err`` itself if it survives pickling (what a broadcast does to it), else a stand-in
    that carries its message, so rank 0 never fails inside the broadcast that reports it."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001
        return PeerFailed(f"rank 0 failed: {type(err).__name__}: {err}")


def launched_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) without one."""
    def read(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r}: expected an integer (set by torchrun)") from None

    world = read("WORLD_SIZE", 1)
    rank, local = read("RANK", 0), read("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    return rank, world, local


def init_distributed(device: torch.device, timeout_s: float) -> Distributed:
    """Join the process group the launcher describes (NCCL for CUDA, gloo for CPU) and return
    this rank's handle (its device: ``handle.local_device``). Every collective then fails after
    ``timeout_s`` instead of waiting forever for a rank that died or hangs."""
    rank, world, local = launched_world()
    if world == 1:
        return Distributed()
    dist = Distributed(rank, world, local)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local >= count:
            raise ConfigError(f"LOCAL_RANK={local} but this machine has {count} CUDA devices; start at most "
                              f"{count} processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(dist.local_device(device))
    # NCCL: abort a timed-out collective rather than hang in it (the default in recent torch)
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    torch_dist.init_process_group(backend=BACKENDS[device.type], rank=rank, world_size=world,
                                  timeout=datetime.timedelta(seconds=timeout_s))
    return dist
