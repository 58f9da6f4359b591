"""Runs packed on GPUs: which GPUs a study may use, how much memory one run needs, and which GPU
each run gets.

One run of the paper's CIFAR protocol leaves a large GPU mostly idle, so a study starts
``--jobs N`` runs at once: each run sees one GPU (``CUDA_VISIBLE_DEVICES`` set to its UUID), the
one with the fewest of the study's runs on it when the run starts (ties: the lowest index). The
memory one run needs comes from ``--gpu-memory-per-run`` or from a measured warm-up (the AL tool's
``--dry-run json``, whose peak includes the largest cycle's VAE images), plus a margin and the
CUDA context, which PyTorch's allocator does not count. ``N`` runs that do not fit in the free
memory of the GPUs are refused before any starts.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .layout import StudyError

NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index,uuid,name,memory.total,memory.used", "--format=csv,noheader,nounits")
CUDA_CONTEXT_MIB = 1024    # per process outside PyTorch's allocator: CUDA context, cuBLAS/cuDNN handles, kernels
MEMORY_MARGIN = 1.15       # over a warm-up's peak: allocator fragmentation, cycles the warm-up did not reach


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    name: str
    total_mib: int
    used_mib: int

    @property
    def free_mib(self) -> int:
        return self.total_mib - self.used_mib

    def __str__(self) -> str:
        return f"GPU {self.index} ({self.name})"


def query_gpus(required: bool) -> list[GPU]:
    """The GPUs ``nvidia-smi`` lists. Without nvidia-smi (or GPUs): [] when not ``required``, else
    a StudyError."""
    try:
        out = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired) as err:
        if not required:
            return []
        raise StudyError(f"--device cuda: cannot list the GPUs with nvidia-smi ({err}); install the NVIDIA driver "
                         "tools or run the study with --jobs 1") from None
    if out.returncode != 0:
        if not required:
            return []
        raise StudyError(f"--device cuda: nvidia-smi failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
    gpus = []
    for line in out.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5:
            continue
        try:
            gpus.append(GPU(int(fields[0]), fields[1], fields[2], int(float(fields[3])), int(float(fields[4]))))
        except ValueError:
            raise StudyError(f"nvidia-smi printed a line this study cannot read: {line!r}") from None
    if required and not gpus:
        raise StudyError("--device cuda: nvidia-smi lists no GPU")
    return gpus


def select_gpus(gpus: Sequence[GPU], wanted: str | None) -> list[GPU]:
    """The GPUs named by ``wanted`` (``--gpus``), else by ``CUDA_VISIBLE_DEVICES``, else all:
    comma-separated nvidia-smi indices or UUIDs."""
    source = "--gpus" if wanted else "CUDA_VISIBLE_DEVICES"
    spec = wanted if wanted else os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(gpus)
    chosen = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        match = [g for g in gpus if str(g.index) == item or g.uuid == item or g.uuid.startswith(item)]
        if not match:
            raise StudyError(f"{source}: no GPU {item!r}; nvidia-smi lists "
                             + ", ".join(f"{g.index} ({g.uuid})" for g in gpus))
        if match[0] not in chosen:
            chosen.append(match[0])
    return chosen


def runs_per_gpu(jobs: int, n_gpus: int) -> list[int]:
    """How many of ``jobs`` concurrent runs each GPU holds when every run goes to the least-loaded one."""
    return [jobs // n_gpus + (1 if i < jobs % n_gpus else 0) for i in range(n_gpus)]


def per_run_mib(peak_mib: float) -> int:
    return int(math.ceil(peak_mib * MEMORY_MARGIN)) + CUDA_CONTEXT_MIB


def check_memory(gpus: Sequence[GPU], jobs: int, need_mib: int, how: str) -> None:
    """Refuse ``jobs`` runs of ``need_mib`` each that the GPUs' free memory cannot hold."""
    counts = runs_per_gpu(jobs, len(gpus))
    short = [(g, k) for g, k in zip(gpus, counts) if k * need_mib > g.free_mib]
    if not short:
        return
    fits = sum(g.free_mib // need_mib for g in gpus)
    gpu, k = short[0]
    raise StudyError(
        f"--jobs {jobs} on {len(gpus)} GPU{'s' if len(gpus) > 1 else ''}: {gpu} would hold {k} runs of {need_mib:,} MiB "
        f"each ({how}) = {k * need_mib:,} MiB, but it has {gpu.free_mib:,} MiB free of {gpu.total_mib:,} MiB; "
        + (f"use --jobs {fits} or fewer" if fits else "not even one run fits: free GPU memory or shrink the run")
        + ", or pass --gpu-memory-per-run MIB if you know a run needs less")


def measure_run_mib(command: Sequence[str], gpu: GPU, env: dict[str, str], echo: Callable[[str], None]) -> tuple[int, str]:
    """One run's GPU memory from its tool's ``--dry-run json`` warm-up on ``gpu``: (MiB to reserve, how)."""
    echo(f"measuring one run's GPU memory: a --dry-run warm-up on {gpu} ...")
    try:
        out = subprocess.run([*command, "--dry-run", "json"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             env={**env, "CUDA_VISIBLE_DEVICES": gpu.uuid}, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise StudyError(f"the --dry-run warm-up that measures a run's GPU memory did not run: {err}") from None
    try:
        peak = json.loads(out.stdout)["peak_gpu_mib"] if out.returncode == 0 else None
    except (json.JSONDecodeError, KeyError, TypeError):
        peak = None
    if not isinstance(peak, (int, float)):
        raise StudyError(f"the --dry-run warm-up that measures a run's GPU memory failed (exit {out.returncode}; "
                         f"pass --gpu-memory-per-run MIB to skip it): {(out.stderr or out.stdout).strip()[-1500:]}")
    need = per_run_mib(peak)
    return need, (f"measured: a --dry-run warm-up peaked at {peak:,.0f} MiB; x{MEMORY_MARGIN} + {CUDA_CONTEXT_MIB} "
                  "MiB CUDA context")


class GpuAssigner:
    """Hands each starting run the GPU with the fewest of the study's runs on it (ties: lowest
    index); thread-safe, for the runner's worker threads."""

    def __init__(self, gpus: Sequence[GPU]) -> None:
        self.gpus = list(gpus)
        self.running = {g.uuid: 0 for g in self.gpus}
        self._lock = threading.Lock()

    def acquire(self) -> GPU:
        with self._lock:
            gpu = min(self.gpus, key=lambda g: (self.running[g.uuid], self.gpus.index(g)))
            self.running[gpu.uuid] += 1
            return gpu

    def release(self, gpu: GPU) -> None:
        with self._lock:
            self.running[gpu.uuid] -= 1
