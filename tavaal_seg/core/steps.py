"""Overhead-free training steps: a step function runs eagerly, captured whole in CUDA graphs, or
with its loss compiled by ``torch.compile``; the optimizers it steps are fused, with the learning
rate in a device tensor, and its loss sums stay on the device. Nothing in a step reads a value
back to the host, so a captured step is one graph launch and the host runs ahead of the GPU.

``train.fast_step`` / ``vae.fast_step`` (:data:`FAST_STEP_MODES`):

- ``graphs``: every distinct (variant, input shapes) key of a step is run eagerly ``warmup``
  times on a side stream (cuDNN autotuning, lazy optimizer state), then captured once with
  ``torch.cuda.graph`` and replayed from then on, its inputs copied into the graph's static
  tensors. All the graphs of one training share one memory pool; they never run concurrently,
  and nothing a graph leaves in the pool is read after the next replay of another graph.
- ``compile``: the step's loss functions go through ``torch.compile`` (``reduce-overhead``, that
  is Inductor kernels replayed as CUDA graphs, on CUDA; Inductor's C++ kernels on CPU); backward,
  the fused optimizer step and the loss sums run eagerly, a handful of launches.
- ``off``: today's eager step.
- ``auto``: ``graphs`` on CUDA for a single process with bf16 or fp32, else ``off``.

A partial last batch is not padded: padding would change the batch-norm statistics and the
ranking pairs. It is a shape of its own, so it gets its own graph (one more capture per cycle).
"""
from __future__ import annotations

import contextlib
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from .config import TrainConfig
from .distributed import Distributed
from .runtime import LOG, Precision

FAST_STEP_MODES = ("auto", "graphs", "compile", "off")
WARMUP_CALLS = 3  # eager calls of a step key before it is captured (the PyTorch docs' whole-network recipe)


def resolve_fast_step(mode: str, key: str, device: torch.device, precision: Precision,
                      dist: Distributed = Distributed()) -> str:
    """The mode a step runs in: ``auto`` becomes ``graphs`` where capture is possible and ``off``
    elsewhere; an explicit mode that cannot run here is an error naming the key."""
    if mode not in FAST_STEP_MODES:
        raise ValueError(f"{key}: expected one of {', '.join(FAST_STEP_MODES)}, got {mode!r}")
    if mode == "off":
        return mode
    blockers = []
    if dist.enabled:
        blockers.append("this run is distributed (torchrun): DDP's gradient all-reduce runs outside a captured or "
                        "compiled step here")
    if mode in ("auto", "graphs") and device.type != "cuda":
        blockers.append(f"CUDA graphs need a CUDA device and this run is on {device.type}")
    if mode in ("auto", "graphs") and precision.scaler.is_enabled():
        blockers.append("fp16 autocast (this GPU has no bf16) steps through a GradScaler, which reads its "
                        "inf check on the host every step; use train.amp=false or fast_step compile")
    if mode == "auto":
        if blockers and device.type == "cuda":
            LOG.info("%s auto: eager steps (%s)", key, blockers[0])
        return "off" if blockers else "graphs"
    if blockers:
        raise ValueError(f"{key} {mode}: {blockers[0]}; set {key}=auto or off")
    return mode


# ---------------------------------------------------------------- optimizers and learning rates

# name -> (class, its hyper-parameters besides the learning rate)
OPTIMIZERS: types.MappingProxyType[str, tuple[type[torch.optim.Optimizer], Callable[[TrainConfig], dict]]] = \
    types.MappingProxyType({
        "sgd": (torch.optim.SGD, lambda t: {"momentum": t.momentum, "weight_decay": t.weight_decay}),
        "adam": (torch.optim.Adam, lambda t: {"weight_decay": t.weight_decay}),
        "adamw": (torch.optim.AdamW, lambda t: {"weight_decay": t.weight_decay}),
    })


def make_optimizer(cls: type[torch.optim.Optimizer], params: Iterable[torch.nn.Parameter], lr: float,
                   fast: bool, device: torch.device, **hyper: Any) -> torch.optim.Optimizer:
    """The eager step keeps PyTorch's default implementation and a float learning rate (so the
    CPU path is what it always was); a fast step gets the fused kernel (one launch per parameter
    group) and the learning rate as a device tensor that a captured step reads at every replay."""
    if not fast:
        return cls(params, lr=lr, **hyper)
    return cls(params, lr=torch.tensor(lr, dtype=torch.float32, device=device), fused=True, **hyper)


class LearningRates:
    """Writes ``base_lr * factor(step)`` into every parameter group before each step, as
    ``LambdaLR`` would after the previous one; a tensor learning rate is filled in place (a
    captured step reads its memory) and only when the value changes."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], factor: Callable[[int], float]) -> None:
        self.groups = [g for o in optimizers for g in o.param_groups]
        self.base = [float(g["lr"]) for g in self.groups]
        self.factor = factor
        self._last: float | None = None

    def set(self, step: int) -> None:
        f = self.factor(step)
        if f == self._last:
            return
        self._last = f
        for group, base in zip(self.groups, self.base):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(base * f)
            else:
                group["lr"] = base * f


# ---------------------------------------------------------------- running a step

def compiled(fn: Callable, device: torch.device) -> Callable:
    """``fn`` through ``torch.compile``: Inductor kernels replayed as CUDA graphs on CUDA
    (``reduce-overhead``), Inductor's C++ kernels on CPU. Shapes are static (``dynamic=False``):
    a partial last batch compiles once more rather than making every kernel shape-generic."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    inner = torch.compile(fn, mode=mode, dynamic=False)
    if device.type != "cuda":
        return inner

    def call(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs are consumed: replay may reuse them
        return inner(*args, **kwargs)

    return call


def reset_compiled() -> None:
    """Forget compiled code of earlier trainings: every cycle builds new modules, and guards on
    the old ones would otherwise pile up until Dynamo's recompile limit turns compilation off.
    Inductor's on-disk cache still serves the kernels of an identical graph."""
    torch._dynamo.reset()


class CudaGraphs:
    """The ``torch.cuda`` calls a capturing :class:`StepRunner` makes, in one place (tests run the
    runner's logic on the CPU through a stand-in). The graphs of one runner share a memory pool."""

    def __init__(self) -> None:
        self.pool: Any = None

    def warmup(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` eagerly on a side stream, ordered after and before the current stream's work."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Record ``fn``'s kernels (without running them); returns what replays them."""
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread may keep allocating while this thread captures
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            fn()
        return graph.replay

    def synchronize(self) -> None:
        torch.cuda.synchronize()


class StepRunner:
    """Calls ``step(*inputs, variant=...)`` eagerly, or (``capture``) through one CUDA graph per
    (variant, input shapes and dtypes). A step must keep all its state in tensors: a replay
    repeats the kernels of the capture, not its Python side effects. ``fallback``: a capture
    that fails (a step that reads a value back to the host) turns capture off with a warning
    instead of failing the run."""

    def __init__(self, step: Callable[..., None], capture: bool, fallback: bool = False,
                 warmup: int = WARMUP_CALLS, name: str = "step", graphs: CudaGraphs | None = None) -> None:
        self.step, self.capture, self.fallback, self.warmup, self.name = step, capture, fallback, warmup, name
        self.graphs = graphs if graphs is not None else (CudaGraphs() if capture else None)
        self.replays: dict[tuple, tuple[Callable[[], None], list[torch.Tensor]]] = {}
        self.calls: Counter[tuple] = Counter()

    def __call__(self, *inputs: torch.Tensor, variant: Any = None) -> None:
        if not self.capture:
            self.step(*inputs, variant=variant)
            return
        key = (variant, *[(tuple(t.shape), t.dtype) for t in inputs])
        entry = self.replays.get(key)
        if entry is None:
            self.calls[key] += 1
            if self.calls[key] <= self.warmup:
                self.graphs.warmup(lambda: self.step(*inputs, variant=variant))
                return
            entry = self._capture(key, inputs, variant)
            if entry is None:  # capture failed and fell back: this call runs eagerly
                self.step(*inputs, variant=variant)
                return
        replay, static = entry
        for dst, src in zip(static, inputs):
            dst.copy_(src, non_blocking=True)
        replay()

    def _capture(self, key: tuple, inputs: tuple[torch.Tensor, ...],
                 variant: Any) -> tuple[Callable[[], None], list[torch.Tensor]] | None:
        static = [t.clone() for t in inputs]
        try:
            replay = self.graphs.capture(lambda: self.step(*static, variant=variant))
        except RuntimeError as err:
            if not self.fallback:
                raise RuntimeError(f"{self.name}: CUDA-graph capture failed ({err}); a step that reads values back "
                                   f"to the host (.item(), nonzero, data-dependent shapes) cannot be captured: set "
                                   f"{self.name}=off or compile") from err
            LOG.warning("%s: CUDA-graph capture failed (%s); continuing with eager steps", self.name, err)
            self.graphs.synchronize()
            self.capture = False
            return None
        self.replays[key] = (replay, static)
        return replay, static

    @property
    def captured(self) -> int:
        return len(self.replays)

    def close(self, optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        """Drop the graphs and the gradients that live in their pool."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.replays.clear()
        if self.graphs is not None:
            self.graphs.pool = None


@contextlib.contextmanager
def fast_kernels(device: torch.device, enabled: bool) -> Iterator[None]:
    """cuDNN autotuning while a fast (static-shape) step trains: every shape is tuned once and
    reused for thousands of steps. Restored afterwards; the eager path leaves it as it was."""
    if not (enabled and device.type == "cuda"):
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def to_device_once(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without blocking the host: through pinned memory on CUDA (a
    plain ``.to(cuda)`` from pageable memory waits for the GPU to drain its queue)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
