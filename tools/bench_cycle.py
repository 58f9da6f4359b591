#!/usr/bin/env python
"""Per-phase cost of one active-learning cycle: task training, plain inference, the tavaal
scoring pass, VAE + discriminator training. Prints wall time, images/s and peak memory.

    python tools/bench_cycle.py --config configs/cifar10.yaml --data-root DIR --device cpu \
        --labeled 1000 --subset 2000 --epochs 1 --vae-iterations 10 [--set key=value ...]

Under torchrun every phase runs the way a distributed run does (DDP training on shares of the
global batch, sharded scoring gathered on every rank); rank 0 prints, and images/s counts the
images of all ranks together:

    torchrun --standalone --nproc_per_node 2 tools/bench_cycle.py ... --phases infer score
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tavaal_seg.core.distributed import init_distributed  # noqa: E402
from tavaal_seg.core.ranker import LossRanker  # noqa: E402
from tavaal_seg.core.runtime import Precision, resolve_device, seed_everything  # noqa: E402
from tavaal_seg.core.training import (  # noqa: E402
    discriminator_logits,
    model_pass,
    prepare_model,
    train_task_model,
    train_vae,
    transform_rank,
)
from tavaal_seg.core.vae import ConditionalVAE, Discriminator  # noqa: E402
from tavaal_seg.core.validation import load_config  # noqa: E402


def _classification():
    from tavaal_cls.adapter import ClassificationAdapter
    from tavaal_cls.config import ClsConfig

    return ClsConfig, ClassificationAdapter


def _segmentation():
    from tavaal_seg.segmentation import SegConfig, SegmentationAdapter

    return SegConfig, SegmentationAdapter


# task -> (config class, adapter class), imported only when asked for
TASKS = types.MappingProxyType({"cls": _classification, "seg": _segmentation})
# train: task + ranker training; infer: plain inference; score: the tavaal r pass and VAE mu + D
# scoring; vae: VAE + discriminator training (score without vae scores with an untrained VAE:
# the same arithmetic, so the same throughput)
PHASES = ("train", "infer", "score", "vae")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--task", choices=sorted(TASKS), default="cls")
    p.add_argument("--data-root", required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--labeled", type=int, default=1000)
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--vae-iterations", type=int, default=10)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                   help="which phases to time (default: all)")
    args = p.parse_args()
    config_cls, adapter_cls = TASKS[args.task]()
    cfg = load_config(config_cls, args.config, [f"train.epochs={args.epochs}", f"device={args.device}",
                                                f"vae.iterations={args.vae_iterations}", "logging.log_every=0",
                                                *args.overrides])
    dist = init_distributed(resolve_device(cfg.device), cfg.distributed.timeout_s)
    device = dist.local_device(resolve_device(cfg.device))
    precision = Precision(device, cfg.train.amp, cfg.train.amp_on_cpu)
    gen = seed_everything(cfg.seed)
    t0 = time.perf_counter()
    adapter = dist.main_first(lambda: adapter_cls(cfg, Path(args.data_root)))
    pool = adapter.pool()
    load_s = time.perf_counter() - t0
    order = torch.randperm(len(pool), generator=gen).numpy()
    labeled, subset = np.sort(order[: args.labeled]), order[args.labeled: args.labeled + args.subset]
    model = prepare_model(adapter.build_model(), device, cfg)
    ranker = LossRanker(list(model.tap_channels), cfg.ranker.hidden).to(device)
    dist.sync_module(model)
    dist.sync_module(ranker)
    rows = []

    def timed(fn):  # wall time of fn on all ranks: from a common start to the last rank's end
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        return out, time.perf_counter() - t

    if "train" in args.phases:
        trained, seconds = timed(lambda: train_task_model(model, ranker, adapter, labeled, cfg, precision, device,
                                                          gen, dist=dist))
        rows.append(("task+ranker training", seconds, trained.images))
    plain = None
    if "infer" in args.phases:
        _, plain = timed(lambda: model_pass(model, None, adapter, subset, frozenset(), cfg, precision, device,
                                            dist=dist))
        rows.append(("plain inference (subset)", plain, len(subset)))
    both = np.concatenate([labeled, subset])
    if "score" in args.phases or "vae" in args.phases:
        def rank_pass():
            ranks = model_pass(model, ranker, adapter, both, frozenset({"rank"}), cfg, precision, device, dist=dist).rank
            return (transform_rank(ranks, cfg.vae.rank_transform).to(device),
                    adapter.vae_images(labeled, cfg.vae.size).to(device),
                    adapter.vae_images(subset, cfg.vae.size).to(device))
        (r, images_l, images_u), rank_s = timed(rank_pass)
        if "score" in args.phases:
            rows.append(("tavaal pass: r for labeled+subset, VAE images", rank_s, len(both)))
    if "vae" in args.phases:
        game, seconds = timed(lambda: train_vae(images_l, images_u, r[: len(labeled)], r[len(labeled):], cfg,
                                                precision, device, gen, dist=dist))
        rows.append((f"VAE+discriminator ({game.iterations} it, global batch {cfg.vae.batch_size})", seconds,
                     game.iterations * cfg.vae.batch_size * 2))
        vae, disc = game.vae, game.discriminator
    else:
        vae = ConditionalVAE(cfg.vae.size, cfg.vae.z_dim, 1, cfg.vae.width).to(device).eval()
        disc = Discriminator(cfg.vae.z_dim, 1).to(device).eval()
        dist.sync_module(vae)
        dist.sync_module(disc)
    if "score" in args.phases:
        _, d_scoring = timed(lambda: discriminator_logits(vae, disc, images_u, r[len(labeled):],
                                                          cfg.eval.batch_size, precision, dist=dist))
        rows.append(("tavaal scoring: VAE mu + D on subset", d_scoring, len(subset)))

    peaks = dist.all_gather(peak_rss_mb())
    dist.close()
    if not dist.is_main:
        return
    world = f"{dist.world_size} processes x {torch.get_num_threads()} threads" if dist.enabled \
        else f"1 process x {torch.get_num_threads()} threads"
    print(f"# {args.config} on {device.type} ({precision.name}), {platform.processor() or platform.machine()}, "
          f"{world}, torch {torch.__version__}")
    print(f"# pool {len(pool)} images loaded in {load_s:.1f}s; labeled {len(labeled)}, subset {len(subset)}")
    print(f"{'phase':58s} {'seconds':>9s} {'images/s':>10s}")
    for name, seconds, images in rows:
        print(f"{name:58s} {seconds:9.2f} {images / max(seconds, 1e-9):10.1f}")
    if plain is not None and "score" in args.phases:
        scoring_total = (rank_s * len(subset) / len(both)) + d_scoring
        print(f"tavaal subset scoring / plain inference = {scoring_total / plain:.2f}x "
              "(r-pass share for the subset + VAE/D scoring, vs a plain forward pass)")
    print(f"peak RSS per process {max(peaks):.0f} MB" + (
        f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
