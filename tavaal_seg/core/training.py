"""Training and inference passes the strategies share: the task model with its ranker, the
evaluation, the one pass over pool images, and the VAE + discriminator game."""
from __future__ import annotations

import math
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapter import TaskAdapter
from .config import BaseConfig, TrainConfig, VAEConfig
from .ranker import RANK_LOSSES, LossRanker, pool_features
from .runtime import LOG, Precision, progress
from .vae import RANK_TRANSFORMS, ConditionalVAE, Discriminator, vae_loss

# ---------------------------------------------------------------- optimizers and schedules

OPTIMIZERS: types.MappingProxyType[str, Callable[[Any, TrainConfig], torch.optim.Optimizer]] = types.MappingProxyType({
    "sgd": lambda p, t: torch.optim.SGD(p, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay),
    "adam": lambda p, t: torch.optim.Adam(p, lr=t.lr, weight_decay=t.weight_decay),
    "adamw": lambda p, t: torch.optim.AdamW(p, lr=t.lr, weight_decay=t.weight_decay),
})


def _multistep(t: TrainConfig, steps_per_epoch: int, total: int) -> Callable[[int], float]:
    bounds = [m * steps_per_epoch for m in t.milestones]
    return lambda step: t.gamma ** sum(step >= b for b in bounds)


# Each schedule maps (config, steps per epoch, total steps) to a per-iteration LR factor.
SCHEDULES: types.MappingProxyType[str, Callable[[TrainConfig, int, int], Callable[[int], float]]] = types.MappingProxyType({
    "multistep": _multistep,
    "poly": lambda t, spe, total: (lambda step: max(0.0, 1 - step / max(1, total)) ** t.poly_power),
    "constant": lambda t, spe, total: (lambda step: 1.0),
})


@dataclass
class TrainResult:
    seconds: float
    images: int
    epoch_task_loss: list[float] = field(default_factory=list)
    epoch_rank_loss: list[float] = field(default_factory=list)


def prepare_model(model: nn.Module, device: torch.device, cfg: BaseConfig) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def train_task_model(model: nn.Module, ranker: LossRanker | None, adapter: TaskAdapter,
                     labeled: np.ndarray, cfg: BaseConfig, precision: Precision,
                     device: torch.device, generator: torch.Generator,
                     on_epoch: Callable[[int, float, float], None] | None = None) -> TrainResult:
    """L = L_task + η·L_rank; the ranker's gradient into the backbone stops after
    ``ranker.detach_fraction`` of the epochs (features detached before the ranker)."""
    t = cfg.train
    steps_per_epoch = math.ceil(len(labeled) / t.batch_size)
    total = steps_per_epoch * t.epochs
    modules = [model] + ([ranker] if ranker is not None else [])
    optimizers = [OPTIMIZERS[t.optimizer](m.parameters(), t) for m in modules]
    factor = SCHEDULES[t.schedule](t, steps_per_epoch, total)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in optimizers]
    rank_loss = RANK_LOSSES[cfg.ranker.loss]
    detach_epoch = int(round(t.epochs * cfg.ranker.detach_fraction))
    result = TrainResult(seconds=0.0, images=0)
    start = time.perf_counter()
    for m in modules:
        m.train()
    for epoch in range(t.epochs):
        sum_task = sum_rank = 0.0
        n_batches = 0
        batches = adapter.train_batches(labeled, t.batch_size, generator, device)
        for x, y in progress(batches, f"train epoch {epoch + 1}/{t.epochs}", steps_per_epoch, cfg.logging.log_every):
            with precision.autocast():
                logits, feats = model(x)
                losses = adapter.per_sample_loss(logits, y)
                loss = losses.mean()
                if ranker is not None:
                    if epoch >= detach_epoch:
                        feats = [f.detach() for f in feats]
                    r_loss = rank_loss(ranker(feats), losses, cfg.ranker.margin)
                    loss = loss + cfg.ranker.weight * r_loss
                    sum_rank += float(r_loss.detach())
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            precision.step(loss, optimizers)
            for s in schedulers:
                s.step()
            sum_task += float(losses.detach().mean())
            n_batches += 1
            result.images += x.shape[0]
        result.epoch_task_loss.append(sum_task / max(1, n_batches))
        result.epoch_rank_loss.append(sum_rank / max(1, n_batches))
        if on_epoch is not None:
            on_epoch(epoch, result.epoch_task_loss[-1], result.epoch_rank_loss[-1])
    result.seconds = time.perf_counter() - start
    return result


@torch.inference_mode()
def evaluate(model: nn.Module, adapter: TaskAdapter, cfg: BaseConfig, precision: Precision,
             device: torch.device) -> dict[str, float]:
    model.eval()
    metric = adapter.new_metric()
    for x, y in progress(adapter.test_batches(cfg.eval.batch_size, device), "evaluate", None, cfg.logging.log_every):
        with precision.autocast():
            logits, _ = model(x)
        metric.update(logits.float(), y)
    return metric.compute()


@dataclass
class PassOutputs:
    """What one inference pass over pool images yields, aligned with ``indices``."""

    indices: np.ndarray
    rank: torch.Tensor | None = None          # ranker output r (raw)
    uncertainty: torch.Tensor | None = None   # predictive entropy
    embedding: torch.Tensor | None = None     # pooled last tapped feature map


@torch.inference_mode()
def model_pass(model: nn.Module, ranker: LossRanker | None, adapter: TaskAdapter, indices: np.ndarray,
               want: frozenset[str], cfg: BaseConfig, precision: Precision, device: torch.device) -> PassOutputs:
    """One forward pass of the frozen task model (and ranker) over pool images, collecting only
    the outputs the strategy needs. The ranker and VAE inputs are constant while the VAE trains,
    so r is computed here once per cycle rather than on every VAE iteration (reference)."""
    model.eval()
    if ranker is not None:
        ranker.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in want}
    total = math.ceil(len(indices) / cfg.eval.batch_size)
    for x in progress(adapter.pool_batches(indices, cfg.eval.batch_size, device), "score pool", total, cfg.logging.log_every):
        with precision.autocast():
            logits, feats = model(x)
            if "rank" in want:
                parts["rank"].append(ranker(feats).float().cpu())
        if "uncertainty" in want:
            parts["uncertainty"].append(adapter.uncertainty(logits.float()).cpu())
        if "embedding" in want:
            parts["embedding"].append(pool_features(feats[-1]).cpu())
    out = PassOutputs(indices=np.asarray(indices))
    for key, chunks in parts.items():
        setattr(out, key, torch.cat(chunks) if chunks else torch.empty(0))
    return out


@torch.no_grad()
def true_losses(model: nn.Module, adapter: TaskAdapter, indices: np.ndarray, cfg: BaseConfig,
                precision: Precision, device: torch.device) -> np.ndarray:
    """The task model's real per-image loss on labeled pool images (test-time transform): what
    the ranker tries to predict, for studies that compare it with a strategy's scores."""
    model.eval()
    losses = []
    for x, y in adapter.labeled_pool_batches(indices, cfg.eval.batch_size, device):
        with precision.autocast():
            logits, _ = model(x)
        losses.append(adapter.per_sample_loss(logits.float(), y).cpu())
    return torch.cat(losses).numpy() if losses else np.empty(0)


# ---------------------------------------------------------------- the VAE / discriminator game

def _to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1], the VAE's input and reconstruction target."""
    return x_uint8.float().div_(127.5).sub_(1.0)


def _infinite(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless full batches of a shuffled 0..n-1, reshuffled each pass (VAAL's cycling loaders)."""
    batch = min(batch, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch + 1, batch):
            yield order[i:i + batch]


@dataclass
class VAEResult:
    vae: ConditionalVAE
    discriminator: Discriminator
    seconds: float
    iterations: int
    last_vae_loss: float
    last_disc_loss: float


def vae_iterations(v: VAEConfig, n_labeled: int, n_unlabeled: int) -> int:
    """The reference's budget: (labeled + subset) · epochs / batch, unless set explicitly."""
    if v.iterations is not None:
        return v.iterations
    return max(1, (n_labeled + n_unlabeled) * v.epochs // v.batch_size)


def train_vae(images_l: torch.Tensor, images_u: torch.Tensor, r_l: torch.Tensor | None,
              r_u: torch.Tensor | None, cfg: BaseConfig, precision: Precision, device: torch.device,
              generator: torch.Generator,
              on_log: Callable[[int, float, float], None] | None = None) -> VAEResult:
    """VAAL's adversarial game, conditioned on r when given (TA-VAAL) and unconditioned
    otherwise (VAAL). ``images_*`` are uint8 at the VAE resolution, already on ``device``."""
    v = cfg.vae
    cond = 1 if r_l is not None else 0
    vae = ConditionalVAE(v.size, v.z_dim, cond, v.width).to(device)
    disc = Discriminator(v.z_dim, cond).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        vae = vae.to(memory_format=torch.channels_last)
    opt_v = torch.optim.Adam(vae.parameters(), lr=v.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=v.lr)
    iterations = vae_iterations(v, len(images_l), len(images_u))
    batch = v.batch_size
    it_l = _infinite(len(images_l), batch, generator)
    it_u = _infinite(len(images_u), batch, generator)
    vae.train()
    disc.train()
    start = time.perf_counter()
    last_v = last_d = float("nan")

    def pick_r(r: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
        return None if r is None else r[idx.to(r.device)]

    for it in progress(range(iterations), "vae+discriminator", iterations, cfg.logging.log_every):
        idx_l, idx_u = next(it_l), next(it_u)
        x_l = _to_unit(images_l[idx_l.to(images_l.device)])
        x_u = _to_unit(images_u[idx_u.to(images_u.device)])
        rl, ru = pick_r(r_l, idx_l), pick_r(r_u, idx_u)
        ones_l = torch.ones(x_l.shape[0], device=device)
        ones_u = torch.ones(x_u.shape[0], device=device)
        for _ in range(v.vae_steps):
            with precision.autocast():
                rec_l, mu_l, lv_l = vae(x_l, rl)
                rec_u, mu_u, lv_u = vae(x_u, ru)
                adv = (F.binary_cross_entropy_with_logits(disc(mu_l, rl).float(), ones_l)
                       + F.binary_cross_entropy_with_logits(disc(mu_u, ru).float(), ones_u))
                loss_v = (vae_loss(x_l, rec_l, mu_l, lv_l, v.beta) + vae_loss(x_u, rec_u, mu_u, lv_u, v.beta)
                          + v.adversary_weight * adv)
            opt_v.zero_grad(set_to_none=True)
            precision.step(loss_v, [opt_v])
        for _ in range(v.disc_steps):
            with torch.no_grad(), precision.autocast():
                mu_l = vae.encode(x_l)[0]
                mu_u = vae.encode(x_u)[0]
            with precision.autocast():
                loss_d = (F.binary_cross_entropy_with_logits(disc(mu_l, rl).float(), ones_l)
                          + F.binary_cross_entropy_with_logits(disc(mu_u, ru).float(), torch.zeros_like(ones_u)))
            opt_d.zero_grad(set_to_none=True)
            precision.step(loss_d, [opt_d])
        last_v, last_d = float(loss_v.detach()), float(loss_d.detach())
        if on_log is not None and (it % max(1, cfg.logging.log_every) == 0 or it == iterations - 1):
            on_log(it, last_v, last_d)
    return VAEResult(vae, disc, time.perf_counter() - start, iterations, last_v, last_d)


@torch.inference_mode()
def discriminator_logits(vae: ConditionalVAE, disc: Discriminator, images: torch.Tensor,
                         r: torch.Tensor | None, batch_size: int, precision: Precision) -> torch.Tensor:
    """D(μ, r) logits for every image, in order (low = looks unlabeled = selected first)."""
    vae.eval()
    disc.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = _to_unit(images[i:i + batch_size])
        rr = None if r is None else r[i:i + batch_size]
        with precision.autocast():
            mu, _ = vae.encode(x)
            out.append(disc(mu, rr).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def transform_rank(r: torch.Tensor, name: str) -> torch.Tensor:
    return RANK_TRANSFORMS[name](r.float())
