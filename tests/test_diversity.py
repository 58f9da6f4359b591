"""Group caps and k-center diversity: the group keys, the capped and diverse orders, every
strategy under both, a whole run under both, and the config checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import tiny_adapter, tiny_config
from tavaal_seg.core import run_active_learning
from tavaal_seg.core.config import ActiveConfig, ConfigError
from tavaal_seg.core.diversity import (
    capped_order,
    check_group_capacity,
    constrain,
    group_labels,
    k_center_order,
    ranked_count,
)
from tavaal_seg.core.loop import constrained
from tavaal_seg.core.ranker import LossRanker
from tavaal_seg.core.runtime import Precision
from tavaal_seg.core.strategies import STRATEGIES, SelectionContext

CITYSCAPES = ["aachen_000001_000019", "aachen_000001_000020", "bochum_000000_000313", "jena_000066_000019"]


def test_group_keys_from_ids(tmp_path):
    assert group_labels(ActiveConfig(group_by="city"), CITYSCAPES) == ["aachen", "aachen", "bochum", "jena"]
    assert group_labels(ActiveConfig(group_by="sequence"), [*CITYSCAPES, "0001TP_006690", "Seq05VD_f00000"]) == [
        "aachen_000001", "aachen_000001", "bochum_000000", "jena_000066", "0001TP", "Seq05VD"]
    assert group_labels(ActiveConfig(group_by="folder"), ["drive7/a.png", "drive7/b/c.png", "top.png"]) == [
        "drive7", "drive7/b", "."]
    assert group_labels(ActiveConfig(group_by="regex", group_pattern=r"_(\d{6})_"), CITYSCAPES) == [
        "000001", "000001", "000000", "000066"]
    assert group_labels(ActiveConfig(group_by="regex", group_pattern=r"^[a-z]"), CITYSCAPES) == ["a", "a", "b", "j"]
    groups = tmp_path / "groups.csv"
    groups.write_text("image_id,group\n" + "".join(f"{i},g{k % 2}\n" for k, i in enumerate(CITYSCAPES)))
    assert group_labels(ActiveConfig(group_by="csv", group_file=str(groups)), CITYSCAPES) == ["g0", "g1", "g0", "g1"]
    assert group_labels(ActiveConfig(), CITYSCAPES) is None


def test_ids_without_a_group_and_bad_group_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"2 image ids have no group, e.g. \['bochum"):
        group_labels(ActiveConfig(group_by="regex", group_pattern="^(aachen)"), CITYSCAPES)
    bad = tmp_path / "groups.csv"
    bad.write_text("id,grp\na,b\n")
    with pytest.raises(ConfigError, match="columns image_id,group"):
        group_labels(ActiveConfig(group_by="csv", group_file=str(bad)), CITYSCAPES)
    bad.write_text("image_id,group\na,x\na,y\n")
    with pytest.raises(ConfigError, match=r"groups.csv:3: 'a' is in two groups"):
        group_labels(ActiveConfig(group_by="csv", group_file=str(bad)), ["a"])
    with pytest.raises(ConfigError, match="cannot read"):
        group_labels(ActiveConfig(group_by="csv", group_file=str(tmp_path / "missing.csv")), ["a"])


def test_config_checks_name_the_key():
    cases = [({"active.max_per_group": 2}, "active.max_per_group: expected null, or at least 1 together with"),
             ({"active.group_by": "town"}, "active.group_by: expected null or one of"),
             ({"active.group_by": "regex"}, "active.group_pattern: expected a regular expression"),
             ({"active.group_by": "regex", "active.group_pattern": "'(['"}, "is not a regular expression"),
             ({"active.group_by": "csv"}, "active.group_file: expected a CSV file"),
             ({"active.diversity": "dpp"}, "active.diversity: expected one of kcenter, none"),
             ({"active.diversity": "kcenter", "active.diversity_candidates": 5},
              "active.diversity_candidates: expected null (4 x budget) or at least active.budget (10)")]
    for sets, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            tiny_config(**sets)
    with pytest.raises(ConfigError, match="3 groups x 2 per group cannot give active.budget 10"):
        check_group_capacity(ActiveConfig(budget=10, group_by="city", max_per_group=2), ["a", "b", "c", "a"])


def test_capped_order_keeps_rank_order_and_the_cap():
    groups = ["a", "a", "a", "b", "a", "c", "b", "b", "c"]
    assert capped_order(groups, 4, 2).tolist() == [0, 1, 3, 5]
    assert capped_order(groups, 10, 1).tolist() == [0, 3, 5]  # fewer than asked when the groups run out


def test_k_center_order_starts_with_the_best_and_spreads_out():
    # two tight clusters; the top four by score all sit in the first one
    features = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [5.0, 5.0], [5.1, 5.0]])
    pos, dists = k_center_order(features, 2)
    assert pos.tolist() == [0, 5] and dists[0] == float("inf")
    capped, _ = k_center_order(features, 4, groups=["x", "x", "x", "y", "y", "y"], max_per_group=2)
    assert sorted(capped.tolist()) in ([0, 1, 4, 5], [0, 2, 4, 5], [0, 3, 4, 5], [0, 1, 3, 5], [0, 2, 3, 5])
    assert capped.tolist()[0] == 0
    assert sum(1 for p in capped.tolist() if p < 3) == 2 and sum(1 for p in capped.tolist() if p >= 3) == 2


def test_constrain_diversity_reaches_past_the_top_k():
    a = ActiveConfig(budget=2, diversity="kcenter", diversity_candidates=6)
    features = torch.tensor([[0.0], [0.01], [0.02], [0.03], [9.0], [9.1], [50.0]])
    ranked = np.arange(10, 17)
    assert ranked_count(a, len(ranked)) == 6
    pos = constrain(ranked, 2, a, None, lambda p: features[p])
    assert pos.tolist() == [0, 5]  # the best, then the farthest within the top 6 (not the 7th)
    assert constrain(ranked, 2, ActiveConfig(budget=2), None, lambda p: features[p]).tolist() == [0, 1]
    with pytest.raises(ConfigError, match="only 1 of the 7 scored candidates fit under the cap, 2 are needed"):
        constrain(ranked, 2, ActiveConfig(budget=2, group_by="city", max_per_group=1), ["g"] * 7, lambda p: p)


def _context(name: str, budget: int) -> SelectionContext:
    cfg = tiny_config(**{"active.strategy": name})
    adapter = tiny_adapter(cfg)
    torch.manual_seed(0)
    model = adapter.build_model()
    ranker = LossRanker(list(model.tap_channels), 16) if STRATEGIES[name].trains_ranker else None
    return SelectionContext(cfg=cfg, adapter=adapter, model=model, ranker=ranker, labeled=np.arange(0, 20),
                            candidates=np.arange(20, 80), budget=budget, precision=Precision(torch.device("cpu"), False),
                            device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                            log_scalar=lambda *a: None)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_honours_the_cap_and_diversity(name):
    groups = [f"g{i % 7}" for i in range(80)]  # 7 groups; 60 candidates
    capped = ActiveConfig(budget=10, group_by="regex", group_pattern="x", max_per_group=2)
    ctx = _context(name, ranked_count(capped, 60))
    ctx.cfg.active = capped
    ranked = STRATEGIES[name].select(ctx)
    picks = constrained(ranked, ctx, 10, groups)
    per_group = np.bincount([int(groups[i][1:]) for i in picks.indices], minlength=7)
    assert len(picks.indices) == 10 and per_group.max() <= 2 and len(set(picks.indices.tolist())) == 10
    # the picks keep the strategy's order: they are a subsequence of its ranking
    order = {int(i): p for p, i in enumerate(ranked.indices.tolist())}
    assert [order[int(i)] for i in picks.indices] == sorted(order[int(i)] for i in picks.indices)

    diverse = ActiveConfig(budget=10, diversity="kcenter", diversity_candidates=30)
    ctx = _context(name, ranked_count(diverse, 60))
    ctx.cfg.active = diverse
    ranked = STRATEGIES[name].select(ctx)
    assert len(ranked.indices) == 30
    picks = constrained(ranked, ctx, 10, None)
    assert set(picks.indices.tolist()) <= set(ranked.indices.tolist()) and len(set(picks.indices.tolist())) == 10
    assert picks.indices[0] == ranked.indices[0]  # the best-scored image always stays


def test_a_run_under_caps_and_diversity_picks_within_them(tmp_path):
    groups = tmp_path / "groups.csv"
    groups.write_text("image_id,group\n" + "".join(f"img{i:04d},drive{i // 10}\n" for i in range(80)))
    cfg = tiny_config(**{"active.group_by": "csv", "active.group_file": str(groups), "active.max_per_group": 2,
                         "active.diversity": "kcenter", "active.cycles": 3})
    state = run_active_learning(cfg, tiny_adapter(cfg), tmp_path / "run")
    for sel in state.selections[1:]:
        drives = [int(it.image_id[3:]) // 10 for it in sel.items]
        assert len(drives) == 10 and max(np.bincount(drives)) <= 2
        assert [it.rank for it in sel.items] == list(range(1, 11))
