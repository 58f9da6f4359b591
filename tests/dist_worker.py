"""One rank of tests/test_distributed.py's sharded-scoring check, started by torchrun (or,
with no launcher, as the single-process reference): ``python tests/dist_worker.py OUT.pt``.

Builds the same seeded tiny task model, ranker, VAE and discriminator in every process, runs
the inference passes the strategies use (task model + ranker, discriminator, evaluation,
true losses) through the distributed code path, and trains a VAE game as DDP replicas. Rank 0
saves what it gathered; every rank saves a checksum of the VAE it ended with.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import tiny_adapter, tiny_config  # noqa: E402
from tavaal_seg.core.distributed import exit_process, init_distributed  # noqa: E402
from tavaal_seg.core.ranker import LossRanker  # noqa: E402
from tavaal_seg.core.runtime import Precision  # noqa: E402
from tavaal_seg.core.training import discriminator_logits, evaluate, model_pass, train_vae, true_losses  # noqa: E402
from tavaal_seg.core.vae import ConditionalVAE, Discriminator  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    dist = init_distributed(device, timeout_s=60)
    cfg = tiny_config(**{"eval.batch_size": 7})  # 7 does not divide the 61 candidates: ragged shards
    adapter = tiny_adapter(cfg, n_train=80, n_test=30)
    precision = Precision(device, False)
    torch.manual_seed(0)
    model = adapter.build_model()
    ranker = LossRanker(list(model.tap_channels), 16)
    vae = ConditionalVAE(cfg.vae.size, cfg.vae.z_dim, 1, cfg.vae.width)
    disc = Discriminator(cfg.vae.z_dim, 1)
    candidates = np.random.default_rng(0).permutation(80)[:61]
    passed = model_pass(model, ranker, adapter, candidates, frozenset({"rank", "uncertainty", "embedding"}), cfg,
                        precision, device, dist)
    images = adapter.vae_images(candidates, cfg.vae.size)
    logits = discriminator_logits(vae, disc, images, passed.rank, cfg.eval.batch_size, precision, dist)
    metrics = evaluate(model, adapter, cfg, precision, device, dist)
    losses = true_losses(model, adapter, candidates, cfg, precision, device, dist)
    labeled = np.arange(20)
    game = train_vae(adapter.vae_images(labeled, cfg.vae.size), images, passed.rank[:20], passed.rank, cfg, precision,
                     device, torch.Generator().manual_seed(3), dist=dist)
    checksum = [float(t.double().sum()) for t in [*game.vae.state_dict().values(), *game.discriminator.state_dict().values()]]
    torch.save({"checksum": checksum, "world": dist.world_size}, f"{out}.rank{dist.rank}")
    if dist.is_main:
        torch.save({"ids": candidates, "rank": passed.rank, "uncertainty": passed.uncertainty,
                    "embedding": passed.embedding, "disc": logits, "metrics": metrics, "true_loss": losses}, out)
    dist.close()
    if dist.enabled:  # a worker that used its process group ends as the tools' workers do: see exit_process
        exit_process(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
