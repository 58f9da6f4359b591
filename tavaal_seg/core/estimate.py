"""What a run will cost before it runs (``--dry-run``): per cycle and in total, the training
steps, VAE iterations and images scored and evaluated that the config implies, and a time
estimate from a short warm-up of the real steps (in the configured ``fast_step`` modes) on the
chosen device. Nothing is written to the run directory.

The estimate is (steps × measured seconds per step) + (one-time cost of each step shape: eager
warm-up calls and the capture or compile, once per cycle) for training and for the VAE game,
plus images × measured seconds per image for the scoring and evaluation passes, plus the data
loading measured before the warm-up. The warm-up trains on full batches: a cycle's partial last
batch is counted as a full step (an upper bound).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .adapter import TaskAdapter, batch_slices, shuffled_batches
from .config import BaseConfig
from .runtime import Precision, seed_everything
from .state import RunState
from .steps import WARMUP_CALLS
from .strategies import Strategy
from .training import (
    build_models,
    cycling_batches,
    discriminator_logits,
    model_pass,
    task_training,
    vae_game,
    vae_iterations,
)

TIMED_CALLS = (3, 30)      # timed steps after the warm-up calls: at least, at most ...
TIMED_SECONDS = 3.0        # ... stopping once this much time has passed


@dataclass
class CyclePlan:
    cycle: int
    labeled: int
    train_steps: int
    train_images: int
    step_shapes: int          # distinct (batch size, ranker detached) training steps: each warms up and captures once
    evaluated: int
    candidates: int           # unlabeled images scored for the selection after this cycle (0: no selection)
    model_scored: int         # images the task model scores while selecting
    vae_iterations: int
    vae_scored: int           # images VAE μ + D score
    done: bool = False        # --resume: already complete in the run dir


def plan_run(cfg: BaseConfig, strategy: Strategy, pool_size: int, test_size: int, n_excluded: int = 0,
             n_initial_listed: int = 0, state: RunState | None = None) -> list[CyclePlan]:
    """The work of every cycle, counted the way the cycle does it (oracle labels: every selected
    image trains from the next cycle on)."""
    a, t = cfg.active, cfg.train
    initial = n_initial_listed or a.initial
    detach_epoch = int(round(t.epochs * cfg.ranker.detach_fraction))
    variants = 2 if strategy.ranker_in_training(cfg) and 0 < detach_epoch < t.epochs else 1
    # the true-loss pass for studies (candidates.csv, diagnostics), as the cycle makes it
    extra_pass = cfg.labels.mode == "oracle" and (cfg.logging.candidate_scores or cfg.logging.diagnostics)
    plans = []
    for cycle in range(1, a.cycles + 1):
        labeled = initial + a.budget * (cycle - 1)
        batches = batch_slices(np.arange(labeled), t.batch_size)
        selects = cycle < a.cycles or a.select_after_last
        candidates = min(a.subset, pool_size - n_excluded - labeled) if selects else 0
        scored = strategy.model_pass(labeled, candidates) + (candidates if extra_pass else 0) if selects else 0
        uses_vae = selects and strategy.trains_vae
        plans.append(CyclePlan(
            cycle=cycle, labeled=labeled, train_steps=len(batches) * t.epochs, train_images=labeled * t.epochs,
            step_shapes=len({len(b) for b in batches}) * variants, evaluated=test_size, candidates=candidates,
            model_scored=scored, vae_iterations=vae_iterations(cfg.vae, labeled, candidates) if uses_vae else 0,
            vae_scored=candidates if uses_vae else 0,
            done=state is not None and state.cycle_complete(cycle, a.cycles, a.select_after_last)))
    return plans


@dataclass
class Rates:
    """What the warm-up measured (seconds)."""

    device: str
    precision: str
    train_mode: str
    vae_mode: str
    train_batch: int
    train_step_s: float
    train_first_s: float      # extra cost of a step shape's first calls (eager warm-up + capture, or compile)
    infer_image_s: float      # task-model pass per image (scoring, evaluation)
    vae_batch: int = 0
    vae_iteration_s: float = 0.0
    vae_first_s: float = 0.0
    vae_score_image_s: float = 0.0
    load_s: float = 0.0       # building the adapter (decoding the data)
    warmup_s: float = 0.0
    peak_gpu_mib: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[], None], first: int, device: torch.device) -> tuple[float, float]:
    """(extra seconds of the ``first`` calls over steady ones, seconds per steady call)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(first):
        call()
    _sync(device)
    t1 = time.perf_counter()
    n = 0
    while n < TIMED_CALLS[1] and (n < TIMED_CALLS[0] or time.perf_counter() - t1 < TIMED_SECONDS):
        call()
        n += 1
    _sync(device)
    per_call = (time.perf_counter() - t1) / max(1, n)
    return max(0.0, (t1 - t0) - first * per_call), per_call


def _first_calls(mode: str) -> int:
    """Calls that carry one-time costs: warm-up calls and the capture for graphs, else the first."""
    return WARMUP_CALLS + 1 if mode == "graphs" else 1


def measure(cfg: BaseConfig, adapter: TaskAdapter, strategy: Strategy, device: torch.device,
            precision: Precision) -> Rates:
    """Time the training step, a task-model pass and (for strategies that train it) the VAE
    game on real pool images, with the modes the run would use."""
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = seed_everything(cfg.seed)
    pool_size = len(adapter.pool())
    order = torch.randperm(pool_size, generator=gen).numpy()
    t = cfg.train
    model, ranker = build_models(adapter, cfg, device, strategy.ranker_in_training(cfg))
    training = task_training(model, ranker, adapter, cfg, precision, device, steps_per_epoch=1)
    first = _first_calls(training.mode)
    # whole batches only: a partial one would be a second step shape, warming up inside the timing
    batch = min(t.batch_size, pool_size)
    labeled = np.sort(order[: min(pool_size, batch * 8) // batch * batch])

    def epochs() -> Iterator:  # as many epochs over the warm-up images as the timing asks for
        while True:
            yield from adapter.train_batches(shuffled_batches(labeled, t.batch_size, gen), gen, device)

    batches = epochs()
    model.train()
    if ranker is not None:
        ranker.train()

    def train_call() -> None:
        x, y = next(batches)
        training.learning_rates.set(0)
        training.runner(x, y, variant=False)

    train_first_s, train_step_s = time_calls(train_call, first, device)
    training.runner.close(training.step.optimizers)

    scored = order[: min(pool_size, 2 * cfg.eval.batch_size)]
    want = frozenset({"rank"} if strategy.trains_ranker else {"uncertainty"})
    model_pass(model, ranker, adapter, scored[: cfg.eval.batch_size], want, cfg, precision, device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    model_pass(model, ranker, adapter, scored, want, cfg, precision, device)
    _sync(device)
    rates = Rates(device=device.type, precision=precision.name, train_mode=training.mode, vae_mode="-",
                  train_batch=batch, train_step_s=train_step_s, train_first_s=train_first_s,
                  infer_image_s=(time.perf_counter() - t0) / max(1, len(scored)))
    model = ranker = training = None  # frees their GPU memory before the VAE timing (train_call holds training)
    if strategy.trains_vae:
        _measure_vae(cfg, adapter, order, device, precision, gen, rates, conditioned=strategy.trains_ranker)
    if device.type == "cuda":
        rates.peak_gpu_mib = torch.cuda.max_memory_reserved(device) / 2**20
    rates.warmup_s = time.perf_counter() - start
    return rates


def _measure_vae(cfg: BaseConfig, adapter: TaskAdapter, order: np.ndarray, device: torch.device,
                 precision: Precision, gen: torch.Generator, rates: Rates, conditioned: bool) -> None:
    v = cfg.vae
    n = min(len(order) // 2, v.batch_size)
    images = adapter.vae_images(order[: 2 * n], v.size).to(device)
    # r's values do not change the cost; TA-VAAL conditions on it, VAAL does not
    r = torch.zeros(2 * n, device=device) if conditioned else None
    game = vae_game(images[:n], images[n:], None if r is None else r[:n], None if r is None else r[n:], cfg,
                    precision, device)
    index_device = device if game.mode != "off" else torch.device("cpu")
    it_l, it_u = cycling_batches(n, n, gen, index_device), cycling_batches(n, n, gen, index_device)
    game.vae.train()
    game.discriminator.train()

    def vae_call() -> None:
        game.runner(next(it_l), next(it_u))

    rates.vae_mode, rates.vae_batch = game.mode, n
    rates.vae_first_s, rates.vae_iteration_s = time_calls(vae_call, _first_calls(game.mode), device)
    game.runner.close([game.step.opt_v, game.step.opt_d])
    r_u = None if r is None else r[n:]
    discriminator_logits(game.vae, game.discriminator, images[n:], r_u, cfg.eval.batch_size, precision)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    discriminator_logits(game.vae, game.discriminator, images[n:], r_u, cfg.eval.batch_size, precision)
    _sync(device)
    rates.vae_score_image_s = (time.perf_counter() - t0) / max(1, n)


def cycle_seconds(plan: CyclePlan, rates: Rates) -> dict[str, float]:
    """Estimated seconds of one cycle's phases."""
    vae = plan.vae_iterations * rates.vae_iteration_s + (rates.vae_first_s if plan.vae_iterations else 0.0)
    return {
        "train": plan.train_steps * rates.train_step_s + plan.step_shapes * rates.train_first_s,
        "vae": vae,
        "score": plan.model_scored * rates.infer_image_s + plan.vae_scored * rates.vae_score_image_s,
        "evaluate": plan.evaluated * rates.infer_image_s,
    }


def peak_gpu_mib(plans: list[CyclePlan], rates: Rates, vae_image_bytes: int) -> float | None:
    """The warm-up's peak plus the VAE images of the largest selection beyond what it held."""
    if rates.peak_gpu_mib is None:
        return None
    most = max((p.labeled + p.candidates for p in plans if p.vae_iterations), default=0)
    return rates.peak_gpu_mib + max(0, most - 2 * rates.vae_batch) * vae_image_bytes / 2**20


@dataclass
class Estimate:
    plans: list[CyclePlan]
    rates: Rates
    peak_gpu_mib: float | None

    def seconds(self) -> dict[str, float]:
        total = {"load": self.rates.load_s, "train": 0.0, "vae": 0.0, "score": 0.0, "evaluate": 0.0}
        for plan in self.plans:
            if not plan.done:
                for phase, s in cycle_seconds(plan, self.rates).items():
                    total[phase] += s
        return total

    def to_json(self, header: dict[str, Any]) -> str:
        todo = [p for p in self.plans if not p.done]
        totals = {k: sum(getattr(p, k) for p in todo) for k in
                  ("train_steps", "train_images", "vae_iterations", "model_scored", "vae_scored", "evaluated")}
        return json.dumps({
            **header, "rates": dataclasses.asdict(self.rates),
            "cycles": [{**dataclasses.asdict(p), "seconds": cycle_seconds(p, self.rates)} for p in self.plans],
            "total": totals, "seconds": self.seconds(), "estimated_s": sum(self.seconds().values()),
            "peak_gpu_mib": self.peak_gpu_mib}, indent=1)

    def to_table(self, header: str) -> str:
        r = self.rates
        lines = [header, f"measured in a {r.warmup_s:.1f} s warm-up on {r.device} ({r.precision}); data loaded in "
                         f"{r.load_s:.1f} s:"]
        lines.append(f"  training step ({r.train_mode}): {r.train_step_s * 1e3:.2f} ms at batch {r.train_batch} "
                     f"({r.train_batch / max(r.train_step_s, 1e-12):,.0f} images/s); first use of a step shape "
                     f"+{r.train_first_s:.2f} s")
        lines.append(f"  task-model pass: {r.infer_image_s * 1e3:.3f} ms per image "
                     f"({1 / max(r.infer_image_s, 1e-12):,.0f} images/s)")
        if r.vae_batch:
            lines.append(f"  VAE + discriminator iteration ({r.vae_mode}): {r.vae_iteration_s * 1e3:.2f} ms at batch "
                         f"{r.vae_batch} ({1 / max(r.vae_iteration_s, 1e-12):,.1f} it/s); first use "
                         f"+{r.vae_first_s:.2f} s; VAE μ + D scoring {r.vae_score_image_s * 1e3:.3f} ms per image")
        if self.peak_gpu_mib is not None:
            lines.append(f"  peak GPU memory ~{self.peak_gpu_mib:,.0f} MiB (the warm-up's "
                         f"{r.peak_gpu_mib:,.0f} MiB + the largest cycle's VAE images)")
        cols = ("cycle", "labeled", "train steps", "train images", "VAE it.", "scored (model)", "scored (VAE)",
                "evaluated", "est. min")
        rows = []
        for p in self.plans:
            minutes = sum(cycle_seconds(p, r).values()) / 60
            rows.append([str(p.cycle), f"{p.labeled:,}", f"{p.train_steps:,}", f"{p.train_images:,}",
                         f"{p.vae_iterations:,}", f"{p.model_scored:,}", f"{p.vae_scored:,}", f"{p.evaluated:,}",
                         "done" if p.done else f"{minutes:.1f}"])
        todo = [p for p in self.plans if not p.done]
        seconds = self.seconds()
        rows.append(["total", "", *[f"{sum(getattr(p, k) for p in todo):,}" for k in
                                    ("train_steps", "train_images", "vae_iterations", "model_scored", "vae_scored",
                                     "evaluated")], f"{sum(seconds.values()) / 60:.1f}"])
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
        lines.append("")
        lines.append("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
        lines.append("")
        lines.append(f"estimated wall time: {sum(seconds.values()) / 60:.1f} min = training {seconds['train'] / 60:.1f}"
                     f" + VAE game {seconds['vae'] / 60:.1f} + scoring {seconds['score'] / 60:.1f} + evaluation "
                     f"{seconds['evaluate'] / 60:.1f} + data loading {seconds['load'] / 60:.1f} (checkpoints, exports "
                     "and logs not counted)")
        return "\n".join(lines)


def vae_image_bytes(cfg: BaseConfig) -> int:
    return 3 * math.prod(cfg.vae.size)
