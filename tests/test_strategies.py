import numpy as np
import pytest
import torch

from helpers import tiny_adapter, tiny_config
from tavaal_seg.core import strategies as strat
from tavaal_seg.core.ranker import LossRanker
from tavaal_seg.core.runtime import Precision
from tavaal_seg.core.strategies import STRATEGIES, SelectionContext, StreamingTopK, k_center_greedy


def _context(name: str, seed: int = 0) -> SelectionContext:
    cfg = tiny_config(**{"active.strategy": name})
    adapter = tiny_adapter(cfg)
    torch.manual_seed(0)
    model = adapter.build_model()
    ranker = LossRanker(list(model.tap_channels), 16) if STRATEGIES[name].trains_ranker else None
    labeled = np.arange(0, 20)
    candidates = np.arange(20, 80)[::-1].copy()
    return SelectionContext(cfg=cfg, adapter=adapter, model=model, ranker=ranker, labeled=labeled,
                            candidates=candidates, budget=10, precision=Precision(torch.device("cpu"), False),
                            device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed),
                            log_scalar=lambda *a: None)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_picks_k_distinct_unlabeled_candidates(name):
    ctx = _context(name)
    sel = STRATEGIES[name].select(ctx)
    assert len(sel.indices) == 10 and len(set(sel.indices.tolist())) == 10
    assert set(sel.indices.tolist()) <= set(ctx.candidates.tolist())
    assert not set(sel.indices.tolist()) & set(ctx.labeled.tolist())
    assert np.all(np.isfinite(sel.scores))


def test_random_is_reproducible_by_seed_and_differs_across_seeds():
    a = STRATEGIES["random"].select(_context("random", seed=1)).indices
    b = STRATEGIES["random"].select(_context("random", seed=1)).indices
    c = STRATEGIES["random"].select(_context("random", seed=2)).indices
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


@pytest.mark.parametrize("name", ["vaal", "tavaal"])
def test_adversarial_strategies_pick_the_lowest_discriminator_output(name, monkeypatch):
    ctx = _context(name)
    fixed = torch.linspace(5.0, -5.0, len(ctx.candidates)) * torch.tensor([1.0, -1.0]).repeat(len(ctx.candidates) // 2)
    seen = {}

    def fake_logits(vae, disc, images, r, batch_size, precision, dist=None):
        seen["conditioned"] = r is not None
        assert len(images) == len(ctx.candidates)
        return fixed

    monkeypatch.setattr(strat, "discriminator_logits", fake_logits)
    sel = STRATEGIES[name].select(ctx)
    lowest = ctx.candidates[torch.argsort(fixed).numpy()[:10]]
    assert sel.indices.tolist() == lowest.tolist()
    assert seen["conditioned"] == (name == "tavaal")
    assert np.all(np.diff(sel.scores) >= 0)  # P(labeled) ascending


def test_lloss_and_entropy_pick_the_highest_scores(monkeypatch):
    for name, field in [("lloss", "rank"), ("entropy", "uncertainty")]:
        ctx = _context(name)
        values = torch.arange(len(ctx.candidates), dtype=torch.float32) % 7

        def fake_pass(self, indices, want, field=field, values=values):
            out = strat.PassOutputs(indices=indices)
            setattr(out, field, values)
            return out

        monkeypatch.setattr(SelectionContext, "pass_over", fake_pass)
        sel = STRATEGIES[name].select(ctx)
        picked = [int(values[list(ctx.candidates).index(i)]) for i in sel.indices]
        assert picked == sorted(values.tolist(), reverse=True)[:10]


def test_streaming_top_k_equals_a_full_sort_with_stable_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (1000,), generator=g).float()
    items = torch.arange(1000)
    top = StreamingTopK(25, largest=False)
    for i in range(0, 1000, 64):
        top.push(scores[i:i + 64], items[i:i + 64])
    got, _ = top.result()
    expected = torch.sort(scores, stable=True).indices[:25]
    assert got.tolist() == expected.tolist()


def test_k_center_greedy_on_a_hand_example():
    labeled = torch.tensor([[0.0, 0.0]])
    cands = torch.tensor([[1.0, 0.0], [10.0, 0.0], [9.0, 0.0], [0.0, 5.0]])
    pos, dists = k_center_greedy(labeled, cands, 2)
    # farthest from the origin is (10,0); then the farthest from {origin,(10,0)} is (0,5)
    assert pos.tolist() == [1, 3]
    assert dists.tolist() == pytest.approx([10.0, 5.0])


@pytest.mark.parametrize("strategy", ["tavaal", "entropy"])
def test_candidate_scores_file_pairs_every_scored_image_with_its_true_loss(tmp_path, strategy):
    import csv

    from tavaal_seg.core import run_active_learning
    from tests.helpers import tiny_adapter, tiny_config

    cfg = tiny_config(**{"logging.candidate_scores": True, "active.strategy": strategy})
    state = run_active_learning(cfg, tiny_adapter(cfg), tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "selections" / "cycle_01.candidates.csv").open()))
    assert len(rows) == 40 and sum(int(r["selected"]) for r in rows) == 10  # the subset, the budget
    chosen = {r["image_id"] for r in rows if r["selected"] == "1"}
    assert chosen == {i for i, c in state.labeled.items() if c == 1}
    assert all(float(r["true_loss"]) >= 0 for r in rows)
    if strategy == "tavaal":  # the discriminator's P(labeled): the picks are the lowest
        scores = sorted((float(r["score"]), r["selected"]) for r in rows)
        assert {s for _, s in scores[:10]} == {"1"}
    assert 0 < state.cycles[0].metrics["labeled_class_entropy"] <= np.log(4) + 1e-9
