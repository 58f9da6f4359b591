#!/usr/bin/env python
"""Per-phase cost of one active-learning cycle: task training, plain inference, the tavaal
scoring pass, VAE + discriminator training. Prints wall time, images/s and peak memory.

    python tools/bench_cycle.py --config configs/cifar10.yaml --data-root DIR --device cpu \
        --labeled 1000 --subset 2000 --epochs 1 --vae-iterations 10 [--set key=value ...]

Several settings of one machine back to back, the data loaded once (``--variant NAME:KEY=VALUE,...``,
repeatable; values may not contain commas), e.g. eager against captured steps on a GPU:

    python tools/bench_cycle.py ... --device cuda --phases train vae steady \
        --variant eager:train.fast_step=off,vae.fast_step=off --variant graphs:train.fast_step=graphs,vae.fast_step=graphs

``steady`` times the training step and the VAE iteration after their warm-up and capture (what
``--dry-run`` measures); ``train`` and ``vae`` time whole phases, first calls included.
``--json FILE`` writes the numbers (with each phase's wall-clock start and end), ``--start-at T``
waits until the Unix time T before the first timed phase (so that processes started side by side
on one GPU time the same interval).

Under torchrun every phase runs the way a distributed run does (DDP training on shares of the
global batch, sharded scoring gathered on every rank); rank 0 prints, and images/s counts the
images of all ranks together:

    torchrun --standalone --nproc_per_node 2 tools/bench_cycle.py ... --phases infer score
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tavaal_seg.core.distributed import exit_process, init_distributed  # noqa: E402
from tavaal_seg.core.estimate import measure  # noqa: E402
from tavaal_seg.core.ranker import LossRanker  # noqa: E402
from tavaal_seg.core.runtime import Precision, atomic_write_text, resolve_device, seed_everything  # noqa: E402
from tavaal_seg.core.strategies import get_strategy  # noqa: E402
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
from tavaal_seg.tasks import TASKS, load_task  # noqa: E402

# train: task + ranker training; infer: plain inference; score: the tavaal r pass and VAE mu + D
# scoring; vae: VAE + discriminator training (score without vae scores with an untrained VAE:
# the same arithmetic, so the same throughput); steady: the training step and the VAE iteration
# after warm-up and capture
PHASES = ("train", "infer", "score", "vae", "steady")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name or not overrides:
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    return name, [o for o in overrides.split(",") if o]


def run_phases(args, cfg, adapter, labeled, subset, device, dist, gen) -> dict:
    """Time the asked phases on a fresh model; rows of (phase, seconds, images, start, end)."""
    precision = Precision(device, cfg.train.amp, cfg.train.amp_on_cpu)
    model = prepare_model(adapter.build_model(), device, cfg)
    ranker = LossRanker(list(model.tap_channels), cfg.ranker.hidden).to(device)
    dist.sync_module(model)
    dist.sync_module(ranker)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows: list[dict] = []
    notes: dict = {"precision": precision.name}

    def timed(name, fn, images=None):  # wall time of fn on all ranks: from a common start to the last rank's end
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        start = time.time()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        seconds = time.perf_counter() - t
        if name is not None:
            rows.append({"phase": name, "seconds": seconds, "images": images(out) if callable(images) else images,
                         "start": start, "end": time.time()})
        return out, seconds

    if "train" in args.phases:
        trained, _ = timed(f"task+ranker training ({cfg.train.fast_step})",
                           lambda: train_task_model(model, ranker, adapter, labeled, cfg, precision, device, gen,
                                                    dist=dist), lambda t: t.images)
        notes["train_captured_graphs"] = trained.captured_graphs
    plain = None
    if "infer" in args.phases:
        _, plain = timed("plain inference (subset)", lambda: model_pass(
            model, None, adapter, subset, frozenset(), cfg, precision, device, dist=dist), len(subset))
    both = np.concatenate([labeled, subset])
    r = images_l = images_u = None
    if "score" in args.phases or "vae" in args.phases:
        def rank_pass():
            ranks = model_pass(model, ranker, adapter, both, frozenset({"rank"}), cfg, precision, device, dist=dist).rank
            return (transform_rank(ranks, cfg.vae.rank_transform).to(device),
                    adapter.vae_images(labeled, cfg.vae.size).to(device),
                    adapter.vae_images(subset, cfg.vae.size).to(device))
        (r, images_l, images_u), rank_s = timed(
            "tavaal pass: r for labeled+subset, VAE images" if "score" in args.phases else None, rank_pass, len(both))
    if "vae" in args.phases:
        game, _ = timed(f"VAE+discriminator ({cfg.vae.iterations} it, global batch {cfg.vae.batch_size}, "
                        f"{cfg.vae.fast_step})",
                        lambda: train_vae(images_l, images_u, r[: len(labeled)], r[len(labeled):], cfg, precision,
                                          device, gen, dist=dist), lambda g: g.iterations * cfg.vae.batch_size * 2)
        notes["vae_iterations"], notes["vae_captured_graphs"] = game.iterations, game.captured_graphs
        vae, disc = game.vae, game.discriminator
    else:
        vae = ConditionalVAE(cfg.vae.size, cfg.vae.z_dim, 1, cfg.vae.width).to(device).eval()
        disc = Discriminator(cfg.vae.z_dim, 1).to(device).eval()
        dist.sync_module(vae)
        dist.sync_module(disc)
    if "score" in args.phases:
        _, d_scoring = timed("tavaal scoring: VAE mu + D on subset", lambda: discriminator_logits(
            vae, disc, images_u, r[len(labeled):], cfg.eval.batch_size, precision, dist=dist), len(subset))
        if plain is not None:
            notes["scoring_over_plain"] = ((rank_s * len(subset) / len(both)) + d_scoring) / plain
    if "steady" in args.phases and not dist.enabled:
        start = time.time()
        rates = measure(cfg, adapter, get_strategy("tavaal"), device, precision)
        rows.append({"phase": f"training step after warm-up ({rates.train_mode}, batch {rates.train_batch})",
                     "seconds": rates.train_step_s, "images": rates.train_batch, "start": start, "end": time.time()})
        rows.append({"phase": f"VAE+D iteration after warm-up ({rates.vae_mode}, batch {rates.vae_batch}; "
                              "images/s = it/s)", "seconds": rates.vae_iteration_s, "images": 1, "start": start,
                     "end": time.time()})
        notes["steady"] = {"train_first_s": rates.train_first_s, "vae_first_s": rates.vae_first_s}
    if device.type == "cuda":
        notes["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return {"rows": rows, "notes": notes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--task", choices=TASKS, default="cls")
    p.add_argument("--data-root", required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--labeled", type=int, default=1000)
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--vae-iterations", type=int, default=10)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--phases", nargs="+", choices=PHASES, default=["train", "infer", "score", "vae"],
                   help="which phases to time (default: all but steady)")
    p.add_argument("--variant", dest="variants", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="time the phases once per variant, with these config overrides on top of --set")
    p.add_argument("--json", type=Path, help="also write the numbers to this file")
    p.add_argument("--start-at", type=float, help="Unix time to wait for before the first timed phase")
    args = p.parse_args()
    spec = load_task(args.task)  # the seg adapter factory writes data.synthetic_* scenes first, as al_seg.py does
    config_cls, adapter_cls = spec.config_cls, spec.make_adapter
    base = [f"train.epochs={args.epochs}", f"device={args.device}", f"vae.iterations={args.vae_iterations}",
            "logging.log_every=0", *args.overrides]
    variants = [parse_variant(v) for v in args.variants] or [("default", [])]
    configs = {name: load_config(config_cls, args.config, [*base, *extra]) for name, extra in variants}
    cfg = next(iter(configs.values()))
    dist = init_distributed(resolve_device(cfg.device), cfg.distributed.timeout_s)
    device = dist.local_device(resolve_device(cfg.device))
    gen = seed_everything(cfg.seed)
    t0 = time.perf_counter()
    adapter = dist.main_first(lambda: adapter_cls(cfg, Path(args.data_root)))
    pool = adapter.pool()
    load_s = time.perf_counter() - t0
    order = torch.randperm(len(pool), generator=gen).numpy()
    labeled, subset = np.sort(order[: args.labeled]), order[args.labeled: args.labeled + args.subset]
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    results = {}
    for name, extra in variants:
        seed_everything(cfg.seed)
        results[name] = run_phases(args, configs[name], adapter, labeled, subset, device, dist,
                                   torch.Generator().manual_seed(cfg.seed))
        results[name]["overrides"] = extra
    peaks = dist.all_gather(peak_rss_mb())
    dist.close()
    if not dist.is_main:
        exit_process(0)  # a worker ends without the interpreter's shutdown: see exit_process
    world = f"{dist.world_size} processes x {torch.get_num_threads()} threads" if dist.enabled \
        else f"1 process x {torch.get_num_threads()} threads"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    precision = next(iter(results.values()))["notes"]["precision"]
    print(f"# {args.config} on {gpu or device.type} ({precision}), {platform.processor() or platform.machine()}, "
          f"{world}, torch {torch.__version__}")
    print(f"# pool {len(pool)} images loaded in {load_s:.1f}s; labeled {len(labeled)}, subset {len(subset)}")
    for name, res in results.items():
        if len(results) > 1:
            print(f"## {name}: {', '.join(res['overrides'])} ({res['notes']['precision']})")
        print(f"{'phase':70s} {'seconds':>9s} {'images/s':>10s}")
        for row in res["rows"]:
            print(f"{row['phase']:70s} {row['seconds']:9.4f} {row['images'] / max(row['seconds'], 1e-9):10.1f}")
        notes = res["notes"]
        if "scoring_over_plain" in notes:
            print(f"tavaal subset scoring / plain inference = {notes['scoring_over_plain']:.2f}x "
                  "(r-pass share for the subset + VAE/D scoring, vs a plain forward pass)")
        extra = {k: v for k, v in notes.items() if k not in ("precision", "scoring_over_plain")}
        if extra:
            print("  " + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()))
    print(f"peak RSS per process {max(peaks):.0f} MB")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({
            "config": str(args.config), "device": device.type, "gpu": gpu, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "load_s": load_s, "labeled": len(labeled), "subset": len(subset), "epochs": args.epochs,
            "pid": os.getpid(), "variants": results}, indent=1))
    if dist.enabled:
        exit_process(0)


if __name__ == "__main__":
    main()
