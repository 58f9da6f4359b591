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
from .config import BaseConfig, ConfigError, TrainConfig, VAEConfig
from .distributed import Distributed
from .ranker import RANK_LOSSES, LossRanker, pool_features
from .runtime import Precision, progress
from .steps import (
    OPTIMIZERS,
    LearningRates,
    StepRunner,
    compiled,
    fast_kernels,
    make_optimizer,
    reset_compiled,
    resolve_fast_step,
    to_device_once,
)
from .vae import RANK_TRANSFORMS, VAE_INPUT_NORMS, ConditionalVAE, Discriminator, vae_loss

# ---------------------------------------------------------------- schedules

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
    captured_graphs: int = 0      # CUDA graphs the fast step captured (train.fast_step graphs)


def prepare_model(model: nn.Module, device: torch.device, cfg: BaseConfig) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_models(adapter: TaskAdapter, cfg: BaseConfig, device: torch.device,
                 trains_ranker: bool) -> tuple[nn.Module, LossRanker | None]:
    """A fresh task model (and ranker, for the strategies that use one) on ``device``."""
    model = prepare_model(adapter.build_model(), device, cfg)
    ranker = LossRanker(list(model.tap_channels), cfg.ranker.hidden).to(device) if trains_ranker else None
    return model, ranker


def _rank_generator(generator: torch.Generator, dist: Distributed) -> torch.Generator:
    """Augmentation and noise randomness: the shared stream in one process (so single-process
    runs replay earlier releases exactly), one stream per rank under DDP (drawn from the shared
    stream, so it is reproducible for a fixed world size)."""
    if not dist.enabled:
        return generator
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator().manual_seed(base + dist.rank)


class TaskStep:
    """One optimisation step of the task model and ranker, L = L_task + η·L_rank, the ranker's
    features detached from the backbone when ``variant`` is true. The epoch's loss sums stay on
    the device, in float64 so that they equal the host sums of float32 losses exactly."""

    def __init__(self, net: nn.Module, rank_net: nn.Module | None, adapter: TaskAdapter,
                 optimizers: list[torch.optim.Optimizer], cfg: BaseConfig, precision: Precision,
                 device: torch.device, compile_loss: bool = False) -> None:
        self.net, self.rank_net, self.adapter, self.optimizers = net, rank_net, adapter, optimizers
        self.ranker_cfg, self.precision = cfg.ranker, precision
        self.rank_loss = RANK_LOSSES[cfg.ranker.loss]
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # task loss, ranking loss
        self.losses = compiled(self._losses, device) if compile_loss else self._losses

    def _losses(self, x: torch.Tensor, y: torch.Tensor, detached: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss to minimise, mean task loss, ranking loss)."""
        with self.precision.autocast():
            logits, feats = self.net(x)
            losses = self.adapter.per_sample_loss(logits, y)
            loss = losses.mean()
            r_loss = torch.zeros((), device=loss.device)
            if self.rank_net is not None:
                if detached:
                    feats = [f.detach() for f in feats]
                r_loss = self.rank_loss(self.rank_net(feats), losses, self.ranker_cfg.margin)
                loss = loss + self.ranker_cfg.weight * r_loss
        return loss, losses.detach().mean(), r_loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, variant: bool = False) -> None:
        loss, task_mean, r_loss = self.losses(x, y, variant)
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)
        self.precision.step(loss, self.optimizers)
        self.sums.add_(torch.stack([task_mean, r_loss]))


@dataclass
class TaskTraining:
    """What one training of the task model needs besides its batches (see :func:`task_training`)."""

    step: TaskStep
    runner: StepRunner
    learning_rates: LearningRates
    mode: str
    modules: list[nn.Module]


def task_training(model: nn.Module, ranker: LossRanker | None, adapter: TaskAdapter, cfg: BaseConfig,
                  precision: Precision, device: torch.device, steps_per_epoch: int,
                  dist: Distributed = Distributed()) -> TaskTraining:
    """Optimizers, schedule and the step in the mode ``train.fast_step`` resolves to here."""
    t = cfg.train
    mode = resolve_fast_step(t.fast_step, "train.fast_step", device, precision, dist)
    if mode == "compile":
        reset_compiled()
    net, rank_net = dist.wrap(model, device), (dist.wrap(ranker, device) if ranker is not None else None)
    modules = [model] + ([ranker] if ranker is not None else [])
    cls, hyper = OPTIMIZERS[t.optimizer]
    optimizers = [make_optimizer(cls, m.parameters(), t.lr, mode != "off", device, **hyper(t)) for m in modules]
    lrs = LearningRates(optimizers, SCHEDULES[t.schedule](t, steps_per_epoch, steps_per_epoch * t.epochs))
    step = TaskStep(net, rank_net, adapter, optimizers, cfg, precision, device, compile_loss=mode == "compile")
    runner = StepRunner(step, capture=mode == "graphs", fallback=t.fast_step == "auto", name="train.fast_step")
    return TaskTraining(step, runner, lrs, mode, modules)


def train_task_model(model: nn.Module, ranker: LossRanker | None, adapter: TaskAdapter,
                     labeled: np.ndarray, cfg: BaseConfig, precision: Precision,
                     device: torch.device, generator: torch.Generator,
                     on_epoch: Callable[[int, float, float], None] | None = None,
                     dist: Distributed = Distributed()) -> TrainResult:
    """L = L_task + η·L_rank; the ranker's gradient into the backbone stops after
    ``ranker.detach_fraction`` of the epochs (features detached before the ranker).

    Under DDP, ``train.batch_size`` is the global batch: every rank draws the same shuffled
    global batches from ``generator`` and trains on its strided share of each, so the number of
    steps, the schedule and the batch composition do not depend on the world size.

    Every ``train.fast_step`` mode trains on the same batches with the same augmentation draws,
    schedule and detach epoch; the losses are read once per epoch."""
    t = cfg.train
    if dist.enabled and t.batch_size < 2 * dist.world_size:
        raise ConfigError(f"train.batch_size {t.batch_size} is the global batch; with {dist.world_size} processes it "
                          f"must be at least {2 * dist.world_size} (two images per rank: a ranking pair, batch norm)")
    if dist.enabled and len(labeled) < 2 * dist.world_size:
        raise ConfigError(f"{len(labeled)} labeled images cannot be split over {dist.world_size} processes with two "
                          "images each; use fewer processes (torchrun --nproc_per_node) or a larger active.initial")
    if dist.enabled and cfg.distributed.sync_bn:
        if device.type != "cuda":  # device: auto resolved to cpu (device: cpu is refused by the config check)
            raise ConfigError(f"distributed.sync_bn: SyncBatchNorm runs on CUDA only, and this run is on {device.type}; "
                              "set distributed.sync_bn=false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BN layers in place
    aug_generator = _rank_generator(generator, dist)
    min_size = 2 * dist.world_size
    steps_per_epoch = math.ceil(len(labeled) / t.batch_size)  # what the schedule counts in (unchanged)
    training = task_training(model, ranker, adapter, cfg, precision, device, steps_per_epoch, dist)
    step, runner = training.step, training.runner
    detach_epoch = int(round(t.epochs * cfg.ranker.detach_fraction))
    result = TrainResult(seconds=0.0, images=0)
    start = time.perf_counter()
    for m in training.modules:
        m.train()
    global_step = 0
    with fast_kernels(device, training.mode != "off"):
        for epoch in range(t.epochs):
            step.sums.zero_()
            n_batches = 0
            global_batches = shuffled_batches(labeled, t.batch_size, generator, min_size=min_size)
            batches = adapter.train_batches([dist.split_batch(b) for b in global_batches], aug_generator, device)
            for x, y in progress(batches, f"train epoch {epoch + 1}/{t.epochs}", len(global_batches),
                                 cfg.logging.log_every if dist.is_main else None):
                training.learning_rates.set(global_step)
                runner(x, y, variant=ranker is not None and epoch >= detach_epoch)
                global_step += 1
                n_batches += 1
                result.images += x.shape[0]
            sum_task, sum_rank = step.sums.tolist()  # the epoch's one read-back
            task_mean, rank_mean = dist.mean([sum_task / max(1, n_batches), sum_rank / max(1, n_batches)])
            result.epoch_task_loss.append(task_mean)
            result.epoch_rank_loss.append(rank_mean)
            if on_epoch is not None:
                on_epoch(epoch, result.epoch_task_loss[-1], result.epoch_rank_loss[-1])
    result.captured_graphs = runner.captured
    runner.close(step.optimizers)
    for m in training.modules:  # one model everywhere from here on: rank 0's (its BN statistics included)
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
    """This rank's row chunks (on its device: a pass reads them back once, not batch by batch),
    concatenated over ranks in rank order (shards are contiguous), on the host."""
    local = [c for c in chunks if c.numel()]
    mine = torch.cat(local).cpu() if local else torch.empty(0)
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
                parts["rank"].append(ranker(feats).float())
        if "uncertainty" in want:
            parts["uncertainty"].append(adapter.uncertainty(logits.float()))
        if "embedding" in want:
            parts["embedding"].append(pool_features(feats[-1]))
        if "features" in want:
            parts["features"].append(torch.cat([pool_features(f) for f in feats], dim=1))
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
        losses.append(adapter.per_sample_loss(logits.float(), y))
    return _gather_rows(losses, dist).numpy().astype(np.float32)


# ---------------------------------------------------------------- the VAE / discriminator game

def cycling_batches(n: int, batch: int, generator: torch.Generator,
                    device: torch.device = torch.device("cpu")) -> Iterator[torch.Tensor]:
    """Endless full batches of a shuffled 0..n-1, reshuffled each pass (VAAL's cycling loaders).
    Each pass's order is drawn on the host and sent to ``device`` once, not batch by batch."""
    batch = min(batch, n)
    while True:
        order = to_device_once(torch.randperm(n, generator=generator), device)
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
    captured_graphs: int = 0


def vae_iterations(v: VAEConfig, n_labeled: int, n_unlabeled: int) -> int:
    """The reference's budget: (labeled + subset) · epochs / batch, unless set explicitly."""
    if v.iterations is not None:
        return v.iterations
    return max(1, (n_labeled + n_unlabeled) * v.epochs // v.batch_size)


def _rows(r: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if r is None else r[idx.to(r.device)]


class VAEGameStep:
    """One iteration of VAAL's game on index batches into the labeled and subset images (uint8,
    on the device): ``vae.vae_steps`` VAE steps (reconstruction + β·KLD of both batches, plus the
    adversarial term that asks D to call every μ labeled), then ``vae.disc_steps`` discriminator
    steps (labeled μ -> 1, subset μ -> 0), r entering both networks when given (TA-VAAL): ``r_*``
    as the VAE reads it, ``disc_r_*`` as the discriminator does. Images enter the VAE scaled by its
    ``normalize`` (``vae.input_norm``), which is also the reconstruction target. The last losses
    stay on the device until someone asks for them."""

    def __init__(self, vae: nn.Module, disc: nn.Module, encoder: ConditionalVAE, images_l: torch.Tensor,
                 images_u: torch.Tensor, r_l: torch.Tensor | None, r_u: torch.Tensor | None, v: VAEConfig,
                 precision: Precision, opt_v: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 device: torch.device, compile_loss: bool = False, disc_r_l: torch.Tensor | None = None,
                 disc_r_u: torch.Tensor | None = None) -> None:
        self.vae, self.disc, self.encoder = vae, disc, encoder
        self.images_l, self.images_u, self.r_l, self.r_u = images_l, images_u, r_l, r_u
        self.disc_r_l = r_l if disc_r_l is None else disc_r_l
        self.disc_r_u = r_u if disc_r_u is None else disc_r_u
        self.v, self.precision, self.opt_v, self.opt_d = v, precision, opt_v, opt_d
        self.last = torch.full((2,), float("nan"), device=device)  # VAE loss, discriminator loss
        self.vae_loss = compiled(self._vae_loss, device) if compile_loss else self._vae_loss
        self.disc_loss = compiled(self._disc_loss, device) if compile_loss else self._disc_loss

    def _vae_loss(self, x_l: torch.Tensor, x_u: torch.Tensor, rl: torch.Tensor | None, ru: torch.Tensor | None,
                  dl: torch.Tensor | None, du: torch.Tensor | None) -> torch.Tensor:
        ones_l = torch.ones(x_l.shape[0], device=x_l.device)
        ones_u = torch.ones(x_u.shape[0], device=x_u.device)
        with self.precision.autocast():
            rec_l, mu_l, lv_l = self.vae(x_l, rl)
            rec_u, mu_u, lv_u = self.vae(x_u, ru)
            adv = (F.binary_cross_entropy_with_logits(self.disc(mu_l, dl).float(), ones_l)
                   + F.binary_cross_entropy_with_logits(self.disc(mu_u, du).float(), ones_u))
            return (vae_loss(x_l, rec_l, mu_l, lv_l, self.v.beta) + vae_loss(x_u, rec_u, mu_u, lv_u, self.v.beta)
                    + self.v.adversary_weight * adv)

    def _disc_loss(self, x_l: torch.Tensor, x_u: torch.Tensor, dl: torch.Tensor | None,
                   du: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad(), self.precision.autocast():
            mu_l = self.encoder.encode(x_l)[0]
            mu_u = self.encoder.encode(x_u)[0]
        with self.precision.autocast():
            d_l, d_u = self.disc(mu_l, dl).float(), self.disc(mu_u, du).float()
            return (F.binary_cross_entropy_with_logits(d_l, torch.ones_like(d_l))
                    + F.binary_cross_entropy_with_logits(d_u, torch.zeros_like(d_u)))

    def __call__(self, idx_l: torch.Tensor, idx_u: torch.Tensor, variant: Any = None) -> None:
        x_l = self.encoder.normalize(self.images_l[idx_l.to(self.images_l.device)])
        x_u = self.encoder.normalize(self.images_u[idx_u.to(self.images_u.device)])
        rl, ru = _rows(self.r_l, idx_l), _rows(self.r_u, idx_u)
        dl, du = _rows(self.disc_r_l, idx_l), _rows(self.disc_r_u, idx_u)
        for _ in range(self.v.vae_steps):
            loss_v = self.vae_loss(x_l, x_u, rl, ru, dl, du)
            self.opt_v.zero_grad(set_to_none=True)
            self.precision.step(loss_v, [self.opt_v])
        for _ in range(self.v.disc_steps):
            loss_d = self.disc_loss(x_l, x_u, dl, du)
            self.opt_d.zero_grad(set_to_none=True)
            self.precision.step(loss_d, [self.opt_d])
        self.last.copy_(torch.stack([loss_v.detach().float(), loss_d.detach().float()]))


@dataclass
class VAEGame:
    """The VAE and discriminator, their optimizers and the iteration step, in the mode
    ``vae.fast_step`` resolves to (see :func:`vae_game`)."""

    vae: ConditionalVAE
    discriminator: Discriminator
    step: VAEGameStep
    runner: StepRunner
    mode: str


def vae_game(images_l: torch.Tensor, images_u: torch.Tensor, r_l: torch.Tensor | None, r_u: torch.Tensor | None,
             cfg: BaseConfig, precision: Precision, device: torch.device,
             dist: Distributed = Distributed(), *, disc_r_l: torch.Tensor | None = None,
             disc_r_u: torch.Tensor | None = None) -> VAEGame:
    """The VAE (its input scale, ``vae.input_norm``, set from labeled ∪ subset), the
    discriminator (``vae.disc_init``), their optimizers and the step, ready to iterate."""
    v = cfg.vae
    mode = resolve_fast_step(v.fast_step, "vae.fast_step", device, precision, dist)
    if mode == "compile":
        reset_compiled()
    cond = 1 if r_l is not None else 0
    vae_module = ConditionalVAE(v.size, v.z_dim, cond, v.width).to(device)
    vae_module.set_input_scale(*VAE_INPUT_NORMS[v.input_norm](torch.cat([images_l, images_u])))
    disc_module = Discriminator(v.z_dim, cond, init=v.disc_init).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        vae_module = vae_module.to(memory_format=torch.channels_last)
    fast = mode != "off"
    opt_v = make_optimizer(torch.optim.Adam, vae_module.parameters(), v.lr, fast, device)
    opt_d = make_optimizer(torch.optim.Adam, disc_module.parameters(), v.lr, fast, device)
    vae, disc = dist.wrap(vae_module, device), dist.wrap(disc_module, device)
    step = VAEGameStep(vae, disc, vae_module, images_l, images_u, r_l, r_u, v, precision, opt_v, opt_d, device,
                       compile_loss=mode == "compile", disc_r_l=disc_r_l, disc_r_u=disc_r_u)
    runner = StepRunner(step, capture=mode == "graphs", fallback=v.fast_step == "auto", name="vae.fast_step")
    return VAEGame(vae_module, disc_module, step, runner, mode)


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
    drawn identically on every rank, of which each rank takes its strided share. The losses are
    read back only when ``on_log`` is due (every ``logging.log_every`` iterations) and at the end."""
    v = cfg.vae
    batch = v.batch_size
    if len(images_l) == 0 or len(images_u) == 0:
        raise ValueError(f"the VAE and discriminator learn labeled vs unlabeled images; got {len(images_l)} labeled "
                         f"and {len(images_u)} unlabeled")
    if dist.enabled and min(batch, len(images_l), len(images_u)) < dist.world_size:
        raise ConfigError(f"vae.batch_size {batch} (global) over {len(images_l)} labeled and {len(images_u)} subset "
                          f"images leaves a rank of {dist.world_size} without images; raise vae.batch_size or use fewer "
                          "processes")
    game = vae_game(images_l, images_u, r_l, r_u, cfg, precision, device, dist, disc_r_l=disc_r_l,
                    disc_r_u=disc_r_u)
    iterations = vae_iterations(v, len(images_l), len(images_u))
    index_device = device if game.mode != "off" else torch.device("cpu")
    it_l = cycling_batches(len(images_l), batch, generator, index_device)
    it_u = cycling_batches(len(images_u), batch, generator, index_device)
    if dist.enabled:  # the reparameterisation noise: a stream per rank, not the same draws on every rank
        torch.manual_seed(int(_rank_generator(generator, dist).initial_seed()))
    game.vae.train()
    game.discriminator.train()
    start = time.perf_counter()
    with fast_kernels(device, game.mode != "off"):
        for it in progress(range(iterations), "vae+discriminator", iterations,
                           cfg.logging.log_every if dist.is_main else None):
            game.runner(dist.split_batch(next(it_l)), dist.split_batch(next(it_u)))
            if on_log is not None and (it % max(1, cfg.logging.log_every) == 0 or it == iterations - 1):
                on_log(it, *game.step.last.tolist())
    last_v, last_d = game.step.last.tolist()
    captured = game.runner.captured
    game.runner.close([game.step.opt_v, game.step.opt_d])
    dist.sync_module(game.vae)
    dist.sync_module(game.discriminator)
    return VAEResult(game.vae, game.discriminator, time.perf_counter() - start, iterations, last_v, last_d, captured)


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
        rr = _rows(r, idx)
        with precision.autocast():
            mu, _ = vae.encode(x)
            out.append(disc(mu, rr).float())
    return _gather_rows(out, dist)


def transform_rank(r: torch.Tensor, name: str) -> torch.Tensor:
    return RANK_TRANSFORMS[name](r.float())
