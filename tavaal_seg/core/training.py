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

from .adapter import TaskAdapter, batch_slices, shuffled_batches
from .config import BaseConfig, TrainConfig, VAEConfig
from .distributed import Distributed
from .ranker import RANK_LOSSES, LossRanker, pool_features
from .runtime import Precision, progress
from .vae import RANK_TRANSFORMS, VAE_INPUT_NORMS, ConditionalVAE, Discriminator, vae_loss

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


def _rank_generator(generator: torch.Generator, dist: Distributed) -> torch.Generator:
    """Augmentation and noise randomness: the shared stream in one process (so single-process
    runs replay earlier releases exactly), one stream per rank under DDP (drawn from the shared
    stream, so it is reproducible for a fixed world size)."""
    if not dist.enabled:
        return generator
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator().manual_seed(base + dist.rank)


def train_task_model(model: nn.Module, ranker: LossRanker | None, adapter: TaskAdapter,
                     labeled: np.ndarray, cfg: BaseConfig, precision: Precision,
                     device: torch.device, generator: torch.Generator,
                     on_epoch: Callable[[int, float, float], None] | None = None,
                     dist: Distributed = Distributed()) -> TrainResult:
    """L = L_task + η·L_rank; the ranker's gradient into the backbone stops after
    ``ranker.detach_fraction`` of the epochs (features detached before the ranker).

    Under DDP, ``train.batch_size`` is the global batch: every rank draws the same shuffled
    global batches from ``generator`` and trains on its strided share of each, so the number of
    steps, the schedule and the batch composition do not depend on the world size."""
    t = cfg.train
    if dist.enabled and t.batch_size < 2 * dist.world_size:
        raise ValueError(f"train.batch_size {t.batch_size} is the global batch; with {dist.world_size} processes it "
                         f"must be at least {2 * dist.world_size} (two images per rank: a ranking pair, batch norm)")
    if dist.enabled and len(labeled) < 2 * dist.world_size:
        raise ValueError(f"{len(labeled)} labeled images cannot be split over {dist.world_size} processes with two "
                         "images each; use fewer processes (torchrun --nproc_per_node) or a larger active.initial")
    if dist.enabled and cfg.distributed.sync_bn:
        if device.type != "cuda":  # device: auto resolved to cpu (device: cpu is refused by the config check)
            raise ValueError(f"distributed.sync_bn: SyncBatchNorm runs on CUDA only, and this run is on {device.type}; "
                             "set distributed.sync_bn=false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BN layers in place
    net, rank_net = dist.wrap(model, device), (dist.wrap(ranker, device) if ranker is not None else None)
    aug_generator = _rank_generator(generator, dist)
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
        global_batches = shuffled_batches(labeled, t.batch_size, generator, min_size=2 * dist.world_size)
        batches = adapter.train_batches([dist.split_batch(b) for b in global_batches], aug_generator, device)
        for x, y in progress(batches, f"train epoch {epoch + 1}/{t.epochs}", len(global_batches),
                             cfg.logging.log_every if dist.is_main else None):
            with precision.autocast():
                logits, feats = net(x)
                losses = adapter.per_sample_loss(logits, y)
                loss = losses.mean()
                if ranker is not None:
                    if epoch >= detach_epoch:
                        feats = [f.detach() for f in feats]
                    r_loss = rank_loss(rank_net(feats), losses, cfg.ranker.margin)
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
        task_mean, rank_mean = dist.mean([sum_task / max(1, n_batches), sum_rank / max(1, n_batches)])
        result.epoch_task_loss.append(task_mean)
        result.epoch_rank_loss.append(rank_mean)
        if on_epoch is not None:
            on_epoch(epoch, result.epoch_task_loss[-1], result.epoch_rank_loss[-1])
    for m in modules:  # one model everywhere from here on: rank 0's (its BN statistics included)
        dist.sync_module(m)
    result.images = int(sum(dist.all_gather(result.images)))
    result.seconds = time.perf_counter() - start
    return result


@torch.inference_mode()
def evaluate(model: nn.Module, adapter: TaskAdapter, cfg: BaseConfig, precision: Precision,
             device: torch.device, dist: Distributed = Distributed()) -> dict[str, float]:
    """The headline metric on the test split; under DDP each rank evaluates a contiguous part
    and the counts are merged, so the numbers equal a single process's."""
    model.eval()
    metric = adapter.new_metric()
    batches = adapter.test_batches(cfg.eval.batch_size, device, (dist.rank, dist.world_size))
    for x, y in progress(batches, "evaluate", None, cfg.logging.log_every if dist.is_main else None):
        with precision.autocast():
            logits, _ = model(x)
        metric.update(logits.float(), y)
    parts = dist.all_gather(metric)
    total = parts[0]
    for other in parts[1:]:
        total.merge(other)
    return total.compute()


def _gather_rows(chunks: list[torch.Tensor], dist: Distributed) -> torch.Tensor:
    """This rank's row chunks, concatenated over ranks in rank order (shards are contiguous)."""
    local = [c for c in chunks if c.numel()]
    mine = torch.cat(local) if local else torch.empty(0)
    parts = [p for p in dist.all_gather(mine) if p.numel()]
    return torch.cat(parts) if parts else torch.empty(0)


@dataclass
class PassOutputs:
    """What one inference pass over pool images yields, aligned with ``indices``."""

    indices: np.ndarray
    rank: torch.Tensor | None = None          # ranker output r (raw)
    uncertainty: torch.Tensor | None = None   # predictive entropy
    embedding: torch.Tensor | None = None     # pooled last tapped feature map
    features: torch.Tensor | None = None      # every tapped map pooled, concatenated (N × sum of tap channels)


@torch.inference_mode()
def model_pass(model: nn.Module, ranker: LossRanker | None, adapter: TaskAdapter, indices: np.ndarray,
               want: frozenset[str], cfg: BaseConfig, precision: Precision, device: torch.device,
               dist: Distributed = Distributed()) -> PassOutputs:
    """One forward pass of the frozen task model (and ranker) over pool images, collecting only
    the outputs the strategy needs. The ranker and VAE inputs are constant while the VAE trains,
    so r is computed here once per cycle rather than on every VAE iteration (reference).

    Under DDP each rank scores a contiguous run of whole batches and the outputs are gathered
    in order on every rank (the VAE needs r for every image)."""
    all_indices = np.asarray(indices)
    indices = dist.shard_batches(all_indices, cfg.eval.batch_size)
    model.eval()
    if ranker is not None:
        ranker.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in want}
    total = math.ceil(len(indices) / cfg.eval.batch_size)
    for x in progress(adapter.pool_batches(indices, cfg.eval.batch_size, device), "score pool", total,
                      cfg.logging.log_every if dist.is_main else None):
        with precision.autocast():
            logits, feats = model(x)
            if not feats and want & {"rank", "embedding", "features"}:
                raise ValueError(f"scoring needs {', '.join(sorted(want))} from tapped feature maps, and the model taps "
                                 "none (wrap it with tap_layers, or pass taps= to select)")
            if "rank" in want:
                parts["rank"].append(ranker(feats).float().cpu())
        if "uncertainty" in want:
            parts["uncertainty"].append(adapter.uncertainty(logits.float()).cpu())
        if "embedding" in want:
            parts["embedding"].append(pool_features(feats[-1]).cpu())
        if "features" in want:
            parts["features"].append(torch.cat([pool_features(f) for f in feats], dim=1).cpu())
    out = PassOutputs(indices=all_indices)
    for key, chunks in sorted(parts.items()):  # same key order on every rank: one collective each
        setattr(out, key, _gather_rows(chunks, dist))
    return out


@torch.no_grad()
def true_losses(model: nn.Module, adapter: TaskAdapter, indices: np.ndarray, cfg: BaseConfig,
                precision: Precision, device: torch.device, dist: Distributed = Distributed()) -> np.ndarray:
    """The task model's real per-image loss on labeled pool images (test-time transform): what
    the ranker tries to predict, for studies that compare it with a strategy's scores."""
    model.eval()
    losses = []
    mine = dist.shard_batches(np.asarray(indices), cfg.eval.batch_size)
    for x, y in adapter.labeled_pool_batches(mine, cfg.eval.batch_size, device):
        with precision.autocast():
            logits, _ = model(x)
        losses.append(adapter.per_sample_loss(logits.float(), y).cpu())
    return _gather_rows(losses, dist).numpy().astype(np.float32)


# ---------------------------------------------------------------- the VAE / discriminator game

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
              on_log: Callable[[int, float, float], None] | None = None,
              dist: Distributed = Distributed(), *, disc_r_l: torch.Tensor | None = None,
              disc_r_u: torch.Tensor | None = None) -> VAEResult:
    """VAAL's adversarial game, conditioned on r when given (TA-VAAL) and unconditioned
    otherwise (VAAL). ``images_*`` are uint8 at the VAE resolution, already on ``device``.
    ``r_*`` is r as the VAE reads it, ``disc_r_*`` as the discriminator reads it (default: the
    same; the reference gives the VAE sigmoid(r) and D raw r). The VAE's input scale
    (``vae.input_norm``) is set from labeled ∪ subset and kept in the returned VAE.

    Under DDP the VAE and discriminator are replicas; ``vae.batch_size`` is the global batch,
    drawn identically on every rank, of which each rank takes its strided share."""
    v = cfg.vae
    batch = v.batch_size
    if len(images_l) == 0 or len(images_u) == 0:
        raise ValueError(f"the VAE and discriminator learn labeled vs unlabeled images; got {len(images_l)} labeled "
                         f"and {len(images_u)} unlabeled")
    if dist.enabled and min(batch, len(images_l), len(images_u)) < dist.world_size:
        raise ValueError(f"vae.batch_size {batch} (global) over {len(images_l)} labeled and {len(images_u)} subset "
                         f"images leaves a rank of {dist.world_size} without images; raise vae.batch_size or use fewer "
                         "processes")
    cond = 1 if r_l is not None else 0
    disc_r_l = r_l if disc_r_l is None else disc_r_l
    disc_r_u = r_u if disc_r_u is None else disc_r_u
    vae_module = ConditionalVAE(v.size, v.z_dim, cond, v.width).to(device)
    vae_module.set_input_scale(*VAE_INPUT_NORMS[v.input_norm](torch.cat([images_l, images_u])))
    disc_module = Discriminator(v.z_dim, cond, init=v.disc_init).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        vae_module = vae_module.to(memory_format=torch.channels_last)
    opt_v = torch.optim.Adam(vae_module.parameters(), lr=v.lr)
    opt_d = torch.optim.Adam(disc_module.parameters(), lr=v.lr)
    vae, disc = dist.wrap(vae_module, device), dist.wrap(disc_module, device)
    iterations = vae_iterations(v, len(images_l), len(images_u))
    it_l = _infinite(len(images_l), batch, generator)
    it_u = _infinite(len(images_u), batch, generator)
    if dist.enabled:  # the reparameterisation noise: a stream per rank, not the same draws on every rank
        torch.manual_seed(int(_rank_generator(generator, dist).initial_seed()))
    vae.train()
    disc.train()
    start = time.perf_counter()
    last_v = last_d = float("nan")

    def pick_r(r: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
        return None if r is None else r[idx.to(r.device)]

    for it in progress(range(iterations), "vae+discriminator", iterations,
                       cfg.logging.log_every if dist.is_main else None):
        idx_l, idx_u = dist.split_batch(next(it_l)), dist.split_batch(next(it_u))
        x_l = vae_module.normalize(images_l[idx_l.to(images_l.device)])
        x_u = vae_module.normalize(images_u[idx_u.to(images_u.device)])
        rl, ru = pick_r(r_l, idx_l), pick_r(r_u, idx_u)
        dl, du = pick_r(disc_r_l, idx_l), pick_r(disc_r_u, idx_u)
        ones_l = torch.ones(x_l.shape[0], device=device)
        ones_u = torch.ones(x_u.shape[0], device=device)
        for _ in range(v.vae_steps):
            with precision.autocast():
                rec_l, mu_l, lv_l = vae(x_l, rl)
                rec_u, mu_u, lv_u = vae(x_u, ru)
                adv = (F.binary_cross_entropy_with_logits(disc(mu_l, dl).float(), ones_l)
                       + F.binary_cross_entropy_with_logits(disc(mu_u, du).float(), ones_u))
                loss_v = (vae_loss(x_l, rec_l, mu_l, lv_l, v.beta) + vae_loss(x_u, rec_u, mu_u, lv_u, v.beta)
                          + v.adversary_weight * adv)
            opt_v.zero_grad(set_to_none=True)
            precision.step(loss_v, [opt_v])
        for _ in range(v.disc_steps):
            with torch.no_grad(), precision.autocast():
                mu_l = vae_module.encode(x_l)[0]
                mu_u = vae_module.encode(x_u)[0]
            with precision.autocast():
                loss_d = (F.binary_cross_entropy_with_logits(disc(mu_l, dl).float(), ones_l)
                          + F.binary_cross_entropy_with_logits(disc(mu_u, du).float(), torch.zeros_like(ones_u)))
            opt_d.zero_grad(set_to_none=True)
            precision.step(loss_d, [opt_d])
        last_v, last_d = float(loss_v.detach()), float(loss_d.detach())
        if on_log is not None and (it % max(1, cfg.logging.log_every) == 0 or it == iterations - 1):
            on_log(it, last_v, last_d)
    dist.sync_module(vae_module)
    dist.sync_module(disc_module)
    return VAEResult(vae_module, disc_module, time.perf_counter() - start, iterations, last_v, last_d)


@torch.inference_mode()
def vae_means(vae: ConditionalVAE, images: torch.Tensor, batch_size: int, precision: Precision,
              dist: Distributed = Distributed()) -> torch.Tensor:
    """The VAE's μ for every image, in order (sharded over ranks and gathered like the scores)."""
    vae.eval()
    out = []
    for batch in batch_slices(dist.shard_batches(np.arange(len(images)), batch_size), batch_size):
        idx = torch.as_tensor(batch)
        with precision.autocast():
            out.append(vae.encode(vae.normalize(images[idx.to(images.device)]))[0].float().cpu())
    return _gather_rows(out, dist)


@torch.inference_mode()
def discriminator_logits(vae: ConditionalVAE, disc: Discriminator, images: torch.Tensor,
                         r: torch.Tensor | None, batch_size: int, precision: Precision,
                         dist: Distributed = Distributed()) -> torch.Tensor:
    """D(μ, r) logits for every image, in order (low = looks unlabeled = selected first);
    ``r`` as the discriminator reads it. Under DDP each rank scores a contiguous run of whole
    batches, gathered in order."""
    vae.eval()
    disc.eval()
    out = []
    for batch in batch_slices(dist.shard_batches(np.arange(len(images)), batch_size), batch_size):
        idx = torch.as_tensor(batch)
        x = vae.normalize(images[idx.to(images.device)])
        rr = None if r is None else r[idx.to(r.device)]
        with precision.autocast():
            mu, _ = vae.encode(x)
            out.append(disc(mu, rr).float().cpu())
    return _gather_rows(out, dist)


def transform_rank(r: torch.Tensor, name: str) -> torch.Tensor:
    return RANK_TRANSFORMS[name](r.float())
