import math

import pytest
import torch

from tavaal_seg.core.ranker import LossRanker, rank_loss_bce, rank_loss_margin


def _bce(p_logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-p_logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_bce_rank_loss_matches_hand_computation_on_flipped_pairs():
    pred = torch.tensor([0.5, -1.0, 2.0, 0.0])
    true = torch.tensor([3.0, 1.0, 1.0, 0.5])
    # pairs (0,3) and (1,2): d̂ = 0.5, -3.0 ; I = [3>0.5]=1, [1>1]=0 (tie -> 0)
    expected = (_bce(0.5, 1.0) + _bce(-3.0, 0.0)) / 2
    assert rank_loss_bce(pred, true).item() == pytest.approx(expected, rel=1e-6)


def test_margin_rank_loss_matches_hand_computation():
    pred = torch.tensor([0.5, -1.0, 2.0, 0.0])
    true = torch.tensor([3.0, 1.0, 1.0, 0.5])
    # pair (0,3): sign +1, max(0, 1 - 0.5) = 0.5; pair (1,2): tie -> sign -1, max(0, 1 - (-1)(-3)) = 0
    assert rank_loss_margin(pred, true, 1.0).item() == pytest.approx(0.25)


def test_odd_batch_drops_middle_sample_and_single_sample_gives_zero():
    pred = torch.tensor([1.0, 7.0, -1.0])
    true = torch.tensor([2.0, 100.0, 1.0])
    # one pair (0,2): d̂ = 2, I = 1; the middle sample is ignored
    assert rank_loss_bce(pred, true).item() == pytest.approx(_bce(2.0, 1.0), rel=1e-6)
    single = torch.tensor([1.0], requires_grad=True)
    loss = rank_loss_bce(single, torch.tensor([1.0]))
    loss.backward()  # still differentiable, contributes nothing
    assert loss.item() == 0.0


def test_ranker_is_input_size_agnostic_and_gradients_flow():
    ranker = LossRanker([4, 8], hidden=16)
    for hw in [(8, 8), (5, 13)]:
        feats = [torch.randn(3, 4, *hw, requires_grad=True), torch.randn(3, 8, hw[0] // 2 + 1, hw[1] // 2 + 1)]
        out = ranker(feats)
        assert out.shape == (3,)
        out.sum().backward()
        assert feats[0].grad is not None
    with pytest.raises(ValueError, match="2 feature maps"):
        ranker([torch.randn(2, 4, 3, 3)])
