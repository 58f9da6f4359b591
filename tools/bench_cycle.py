#!/usr/bin/env python
"""Per-phase cost of one active-learning cycle: task training, plain inference, the tavaal
scoring pass, VAE + discriminator training. Prints wall time, images/s and peak memory.

    python tools/bench_cycle.py --config configs/cifar10.yaml --data-root DIR --device cpu \
        --labeled 1000 --subset 2000 --epochs 1 --vae-iterations 10 [--set key=value ...]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import types
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tavaal_seg.core.config import load_config  # noqa: E402
from tavaal_seg.core.ranker import LossRanker  # noqa: E402
from tavaal_seg.core.runtime import Precision, resolve_device, seed_everything  # noqa: E402
from tavaal_seg.core.training import (discriminator_logits, model_pass, prepare_model, train_task_model,  # noqa: E402
                                      train_vae, transform_rank)


def _classification():
    from tavaal_cls.adapter import ClassificationAdapter
    from tavaal_cls.config import ClsConfig

    return ClsConfig, ClassificationAdapter


def _segmentation():
    from tavaal_seg.adapter import SegmentationAdapter
    from tavaal_seg.config import SegConfig

    return SegConfig, SegmentationAdapter


# task -> (config class, adapter class), imported only when asked for
TASKS = types.MappingProxyType({"cls": _classification, "seg": _segmentation})


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
    args = p.parse_args()
    config_cls, adapter_cls = TASKS[args.task]()
    cfg = load_config(config_cls, args.config, [f"train.epochs={args.epochs}", f"device={args.device}",
                                                f"vae.iterations={args.vae_iterations}", "logging.log_every=0",
                                                *args.overrides])
    device = resolve_device(cfg.device)
    precision = Precision(device, cfg.train.amp, cfg.train.amp_on_cpu)
    gen = seed_everything(cfg.seed)
    t0 = time.perf_counter()
    adapter = adapter_cls(cfg, Path(args.data_root))
    pool = adapter.pool()
    load_s = time.perf_counter() - t0
    order = torch.randperm(len(pool), generator=gen).numpy()
    labeled, subset = np.sort(order[: args.labeled]), order[args.labeled: args.labeled + args.subset]
    model = prepare_model(adapter.build_model(), device, cfg)
    ranker = LossRanker(list(model.tap_channels), cfg.ranker.hidden).to(device)
    rows = []

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    trained = train_task_model(model, ranker, adapter, labeled, cfg, precision, device, gen)
    rows.append(("task+ranker training", trained.seconds, trained.images))
    sync()
    t = time.perf_counter()
    model_pass(model, None, adapter, subset, frozenset(), cfg, precision, device)
    sync()
    plain = time.perf_counter() - t
    rows.append(("plain inference (subset)", plain, len(subset)))
    t = time.perf_counter()
    both = np.concatenate([labeled, subset])
    r = transform_rank(model_pass(model, ranker, adapter, both, frozenset({"rank"}), cfg, precision, device).rank,
                       cfg.vae.rank_transform).to(device)
    images_l = adapter.vae_images(labeled, cfg.vae.size).to(device)
    images_u = adapter.vae_images(subset, cfg.vae.size).to(device)
    sync()
    rank_pass = time.perf_counter() - t
    rows.append(("tavaal pass: r for labeled+subset, VAE images", rank_pass, len(both)))
    game = train_vae(images_l, images_u, r[: len(labeled)], r[len(labeled):], cfg, precision, device, gen)
    rows.append((f"VAE+discriminator ({game.iterations} it, batch {cfg.vae.batch_size})", game.seconds,
                 game.iterations * cfg.vae.batch_size * 2))
    t = time.perf_counter()
    discriminator_logits(game.vae, game.discriminator, images_u, r[len(labeled):], cfg.eval.batch_size, precision)
    sync()
    d_scoring = time.perf_counter() - t
    rows.append(("tavaal scoring: VAE mu + D on subset", d_scoring, len(subset)))

    print(f"# {args.config} on {device} ({precision.name}), {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# pool {len(pool)} images loaded in {load_s:.1f}s; labeled {len(labeled)}, subset {len(subset)}")
    print(f"{'phase':58s} {'seconds':>9s} {'images/s':>10s}")
    for name, seconds, images in rows:
        print(f"{name:58s} {seconds:9.2f} {images / max(seconds, 1e-9):10.1f}")
    scoring_total = (rank_pass * len(subset) / len(both)) + d_scoring
    print(f"tavaal subset scoring / plain inference = {scoring_total / plain:.2f}x "
          "(r-pass share for the subset + VAE/D scoring, vs a plain forward pass)")
    print(f"peak RSS {peak_rss_mb():.0f} MB" + (
        f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
