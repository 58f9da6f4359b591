"""tavaal_seg.select and its helpers: what they return, that they reuse the core's scoring, that
a fitted ranker learns the loss order, and that they leave the caller's model and RNG alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import tavaal_seg
from tavaal_cls import build_cls_model
from tavaal_seg.core.config import ConfigError
from tavaal_seg.core.tasks import per_sample_cross_entropy, predictive_entropy

TINY_VAE = ["vae.iterations=3", "vae.width=0.0625", "vae.batch_size=8", "vae.z_dim=8", "train.epochs=3"]


class Net(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(30, 3, 16, 16, generator=g), torch.arange(30) % 3, torch.randn(50, 3, 16, 16, generator=g)


def test_entropy_selection_is_the_core_score_in_order(data):
    torch.manual_seed(0)
    model = Net()
    _, _, unlabeled = data
    result = tavaal_seg.select(model, unlabeled, 7, strategy="entropy")
    with torch.no_grad():
        entropy = predictive_entropy(model(unlabeled)).numpy()
    assert result.indices.tolist() == np.argsort(-entropy, kind="stable")[:7].tolist()
    assert np.allclose(result.candidate_scores, entropy, atol=1e-6)
    assert np.allclose(result.scores, entropy[result.indices])
    assert result.strategy == "entropy" and "entropy" in result.score_meaning


@pytest.mark.parametrize("strategy", ["random", "coreset", "lloss", "vaal", "tavaal"])
def test_every_strategy_picks_distinct_unlabeled_items_reproducibly(strategy, data):
    labeled, targets, unlabeled = data
    torch.manual_seed(0)
    model = Net().train()
    rng_before = torch.get_rng_state()
    hooks_before = len(model.body[3]._forward_hooks)

    def run(seed: int) -> tavaal_seg.SelectionResult:
        return tavaal_seg.select(model, unlabeled, 6, strategy=strategy, labeled=labeled, labeled_targets=targets,
                                 taps=["body.1", "body.3"], overrides=TINY_VAE, seed=seed)

    first, again = run(0), run(0)
    assert len(set(first.indices.tolist())) == 6 and first.indices.min() >= 0 and first.indices.max() < 50
    assert first.indices.tolist() == again.indices.tolist() and np.array_equal(first.scores, again.scores)
    assert model.training and len(model.body[3]._forward_hooks) == hooks_before  # mode and hooks given back
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched
    if strategy == "random":
        assert run(1).indices.tolist() != first.indices.tolist()


def test_a_package_model_needs_no_taps_and_datasets_work(data):
    labeled, targets, unlabeled = data
    torch.manual_seed(0)
    model = build_cls_model("resnet18_cifar", 3, width=0.125)
    from_tensors = tavaal_seg.select(model, unlabeled, 5, strategy="coreset", labeled=labeled)
    from_datasets = tavaal_seg.select(model, torch.utils.data.TensorDataset(unlabeled), 5, strategy="coreset",
                                      labeled=torch.utils.data.TensorDataset(labeled, targets))
    assert from_tensors.indices.tolist() == from_datasets.indices.tolist()
    assert np.allclose(from_tensors.scores, from_datasets.scores)


def test_a_fitted_ranker_orders_unseen_items_by_their_true_loss():
    """One target for all makes each item's loss a function of its (tapped, pooled) features: the
    ranker fitted on 200 labeled items must order 200 unseen ones by their true loss."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = Net(classes=2)
    images = torch.randn(400, 3, 16, 16, generator=g) * torch.rand(400, 3, 1, 1, generator=g) * 3
    targets = torch.zeros(400, dtype=torch.long)
    with torch.no_grad():
        true_loss = per_sample_cross_entropy(model(images[200:]), targets[200:]).numpy()
    result = tavaal_seg.select(model, images[200:], 50, strategy="lloss", labeled=images[:200],
                               labeled_targets=targets[:200], taps=["body.1", "body.3"],
                               overrides=["train.epochs=30", "train.optimizer=adam", "train.lr=0.003",
                                          "train.batch_size=32", "ranker.hidden=32"])

    def ranks(v: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(v)).astype(float)

    spearman = np.corrcoef(ranks(result.candidate_scores), ranks(true_loss))[0, 1]
    assert spearman > 0.5, spearman
    top, rest = true_loss[result.indices].mean(), np.delete(true_loss, result.indices).mean()
    assert top > rest  # the picked items are the high-loss ones


def test_tap_layers_names_and_channels():
    model = Net()
    with pytest.raises(ValueError, match=r"has no layer 'body\.9' \(did you mean"):
        tavaal_seg.tap_layers(model, ["body.9"])
    tapped = tavaal_seg.tap_layers(model, ["body.3", "body.1"])
    with pytest.raises(RuntimeError, match="after the first forward"):
        _ = tapped.tap_channels
    logits, feats = tapped(torch.zeros(2, 3, 8, 8))
    assert logits.shape == (2, 3) and tapped.tap_channels == [16, 8] and [f.shape[1] for f in feats] == [16, 8]
    model(torch.zeros(1, 3, 8, 8))
    assert tapped._captured == {}  # a direct call of the model keeps no maps alive
    tapped.remove_hooks()
    with pytest.raises(RuntimeError, match="hooks were removed"):
        tapped(torch.zeros(1, 3, 8, 8))


def test_bad_calls_are_explained(data):
    labeled, targets, unlabeled = data
    model = Net()
    with pytest.raises(ValueError, match="budget 51 is larger than the 50 unlabeled items"):
        tavaal_seg.select(model, unlabeled, 51, strategy="random", taps=["body.3"])
    assert not model.body[3]._forward_hooks  # a refused call leaves no hook behind
    with pytest.raises(ValueError, match="scoring needs embedding from tapped feature maps, and the model taps none"):
        tavaal_seg.select(model, unlabeled, 5, strategy="coreset", labeled=labeled)
    with pytest.raises(ValueError, match="reads a loss ranker: pass ranker=..., or labeled items with targets"):
        tavaal_seg.select(model, unlabeled, 5, strategy="lloss", labeled=labeled, taps=["body.3"])
    with pytest.raises(ValueError, match="learn labeled vs unlabeled images; got 0 labeled"):
        tavaal_seg.select(model, unlabeled, 5, strategy="vaal", overrides=TINY_VAE)
    with pytest.raises(ValueError, match="unknown strategy 'badge'"):
        tavaal_seg.select(model, unlabeled, 5, strategy="badge")
    with pytest.raises(ConfigError, match="vae.z_dim"):
        tavaal_seg.select(model, unlabeled, 5, strategy="random", overrides=["vae.z_dim=0"])
    with pytest.raises(ValueError, match="the VAE sees uint8 N×3×H×W images"):
        tavaal_seg.select(model, unlabeled, 5, strategy="vaal", labeled=labeled, overrides=TINY_VAE,
                          vae_view=lambda x: x)
