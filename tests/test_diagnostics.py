"""What a selection can be asked about (core.diagnostics) and the TA-VAAL game's reference options
(how r enters the VAE and D, the VAE's input scale, D's init, a ranker for every strategy)."""
import csv
import math

import numpy as np
import pytest
import torch

from helpers import tiny_adapter, tiny_config, tiny_run_args, write_image_folder
from tavaal_cls.cli import main as cls_main
from tavaal_seg.core import strategies as strat
from tavaal_seg.core.diagnostics import auc, average_ranks, game_diagnostics, pick_diagnostics, spearman
from tavaal_seg.core.ranker import LossRanker
from tavaal_seg.core.runtime import Precision
from tavaal_seg.core.strategies import STRATEGIES, SelectionContext
from tavaal_seg.core.training import train_vae
from tavaal_seg.core.vae import VAE_INPUT_NORMS, ConditionalVAE, Discriminator


def test_auc_and_spearman_on_known_cases():
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5  # ties count half
    # P(pos > neg) by brute force on random scores with ties
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randint(0, 5, (40,), generator=g).float(), torch.randint(0, 5, (30,), generator=g).float()
    brute = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean().item()
    assert auc(pos, neg) == pytest.approx(brute)
    assert average_ranks(torch.tensor([10.0, 20.0, 10.0])).tolist() == [1.5, 3.0, 1.5]
    x = torch.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, torch.ones(10)))


class _ROnly(Discriminator):
    """A discriminator that reads r alone (logit = r): what game_diagnostics must attribute to r."""

    def forward(self, mu, r=None):
        return r.float()


def test_game_diagnostics_attribute_the_separation_to_r_or_mu():
    g = torch.Generator().manual_seed(0)
    mu_l, mu_u = torch.randn(50, 4, generator=g), torch.randn(60, 4, generator=g)
    r_l, r_u = torch.randn(50, generator=g) + 3.0, torch.randn(60, generator=g)  # r separates
    d = game_diagnostics(_ROnly(4, 1), mu_l, mu_u, r_l, r_u)
    assert d["sel_d_auc"] > 0.95 and d["sel_d_auc_r_only"] == d["sel_d_auc"]
    assert d["sel_d_auc_mu_only"] == 0.5  # r held at its mean: no separation left
    assert d["sel_r_auc"] < 0.05  # AUC of -r: labeled r is *higher* here
    vaal = game_diagnostics(Discriminator(4, 0), mu_l, mu_u, None, None)
    assert set(vaal) == {"sel_d_auc"}


def test_pick_diagnostics_follow_r_true_loss_and_classes():
    candidates = np.arange(100, 110)
    r = torch.arange(10.0)  # candidate 109 has the highest r
    picks = np.array([109, 108, 107])
    scores = -r.numpy()  # a score that ranks exactly by r (low score picked)
    loss = np.linspace(0.0, 0.9, 10)
    d = pick_diagnostics(candidates, picks, scores, r, loss, class_entropy=0.5)
    assert d["sel_top_r_overlap"] == 1.0 and d["sel_score_r_spearman"] == pytest.approx(-1.0)
    assert d["sel_true_loss_picks"] == pytest.approx(0.8) and d["sel_true_loss_candidates"] == pytest.approx(0.45)
    assert d["sel_class_entropy"] == 0.5
    assert pick_diagnostics(candidates, picks, scores, None, None, None) == {}


def test_vae_input_scale_is_set_from_the_cycle_images_and_kept_in_the_vae():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 32, 32), generator=g, dtype=torch.uint8)
    mean, std = VAE_INPUT_NORMS["standardize"](images)
    x = images.float()
    assert torch.allclose(mean, x.mean(dim=(0, 2, 3)), atol=1e-3)
    assert torch.allclose(std, x.transpose(0, 1).reshape(3, -1).std(1), atol=1e-3)
    unit = ConditionalVAE((32, 32), z_dim=4, cond_dim=1, width=0.0625)
    assert unit.normalize(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)).max() == 1.0  # VAAL's [-1, 1]
    for norm in ("unit", "standardize"):
        cfg = tiny_config(**{"vae.input_norm": norm, "vae.iterations": 1})
        game = train_vae(images[:10], images[10:], torch.zeros(10), torch.zeros(10), cfg, Precision(torch.device("cpu"), False),
                         torch.device("cpu"), torch.Generator().manual_seed(0))
        expected = VAE_INPUT_NORMS[norm](images)[0]
        assert torch.allclose(game.vae.input_mean.flatten(), expected, atol=1e-3)
        assert "input_mean" in game.vae.state_dict()  # a saved VAE scores with its own scale
        standardized = game.vae.normalize(images)
        if norm == "standardize":
            assert standardized.mean().abs() < 0.05 and (standardized.std() - 1).abs() < 0.05


def test_discriminator_inits():
    torch.manual_seed(0)
    default, kaiming = Discriminator(32, 1, init="default"), Discriminator(32, 1, init="kaiming")
    first_default, first_kaiming = default.net[0], kaiming.net[0]
    assert torch.all(first_kaiming.bias == 0) and not torch.all(first_default.bias == 0)
    assert first_kaiming.weight.std().item() == pytest.approx(math.sqrt(2 / 33), rel=0.1)
    assert first_kaiming.weight.std() > 2 * first_default.weight.std()


def _context(cfg, seed=0):
    adapter = tiny_adapter(cfg)
    torch.manual_seed(0)
    model = adapter.build_model()
    ranker = LossRanker(list(model.tap_channels), 16)
    return SelectionContext(cfg=cfg, adapter=adapter, model=model, ranker=ranker, labeled=np.arange(0, 20),
                            candidates=np.arange(20, 80), budget=10, precision=Precision(torch.device("cpu"), False),
                            device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed),
                            log_scalar=lambda *a: None)


def test_the_vae_and_the_discriminator_can_read_r_through_different_transforms(monkeypatch):
    """The reference's routing: sigmoid(r) into the VAE, raw r into D (in training and scoring)."""
    seen = {}
    real_train_vae = strat.train_vae

    def spy_train_vae(images_l, images_u, r_l, r_u, *args, disc_r_l=None, disc_r_u=None, **kwargs):
        seen.update(vae=r_u.clone(), disc=disc_r_u.clone())
        return real_train_vae(images_l, images_u, r_l, r_u, *args, disc_r_l=disc_r_l, disc_r_u=disc_r_u, **kwargs)

    def spy_logits(vae, disc, images, r, batch_size, precision, dist=None):
        seen["scored"] = r.clone()
        return torch.zeros(len(images))

    monkeypatch.setattr(strat, "train_vae", spy_train_vae)
    monkeypatch.setattr(strat, "discriminator_logits", spy_logits)
    cfg = tiny_config(**{"active.strategy": "tavaal", "vae.rank_transform": "sigmoid", "vae.disc_rank_transform": "raw"})
    STRATEGIES["tavaal"].select(_context(cfg))
    assert torch.allclose(seen["vae"], torch.sigmoid(seen["disc"]))
    assert torch.equal(seen["scored"], seen["disc"])
    assert not torch.allclose(seen["vae"], seen["disc"])


def test_diagnostics_land_in_metrics_csv_and_a_ranker_can_train_with_every_strategy(tmp_path):
    root = write_image_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert cls_main(tiny_run_args(root, run, "--set", "logging.diagnostics=true",
                                  "--set", "logging.tensorboard=false")) == 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for key in ("sel_d_auc", "sel_d_auc_mu_only", "sel_d_auc_r_only", "sel_r_auc", "sel_score_r_spearman",
                "sel_top_r_overlap", "sel_true_loss_picks", "sel_class_entropy", "acc/class0"):
        assert rows[0][key] != "", key
        assert 0.0 <= float(rows[0][key]) or key == "sel_score_r_spearman"
    assert rows[-1]["sel_d_auc"] == ""  # no selection after the last cycle

    matched = tmp_path / "random_with_ranker"
    assert cls_main(tiny_run_args(root, matched, "--strategy", "random", "--cycles", "1",
                                  "--set", "ranker.train_with_all_strategies=true",
                                  "--set", "logging.tensorboard=false")) == 0
    ckpt = torch.load(next((matched / "checkpoints").glob("cycle_*.pt")), weights_only=True)
    assert ckpt["ranker"] is not None
