"""SegmentationAdapter and ConfusionMatrixIoU on hand-checked cases and a tiny synthetic tree."""
import math

import numpy as np
import pytest
import torch

from tavaal_seg.core.adapter import shuffled_batches
from tavaal_seg.core.config import ConfigError
from tavaal_seg.core.runtime import Precision
from tavaal_seg.core.validation import load_config
from tavaal_seg.segmentation import adapter as adapter_module
from tavaal_seg.segmentation.adapter import SegmentationAdapter
from tavaal_seg.segmentation.config import SegConfig
from tavaal_seg.segmentation.data import write_street_scenes
from tavaal_seg.segmentation.metrics import ConfusionMatrixIoU


@pytest.fixture(scope="module")
def streets(tmp_path_factory):
    return write_street_scenes(tmp_path_factory.mktemp("seg") / "streets", 8, 4, (64, 128), seed=0)


def _cfg(**sets):
    base = {"data.name": "cityscapes", "data.crop": [64, 96], "data.scale_range": [0.75, 1.25],
            "model.name": "drn_d_22", "model.width": 0.25, "device": "cpu"}
    base.update(sets)
    return load_config(SegConfig, None, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module")
def adapter(streets):
    return SegmentationAdapter(_cfg(), streets)


def test_per_image_loss_averages_valid_pixels_only(adapter):
    # one image, 3 classes, 3 pixels: A (target 0, logits 2,0,0), B (void, wild logits), C (target 1, uniform)
    logits = torch.tensor([[2.0, 50.0, 0.0], [0.0, -30.0, 0.0], [0.0, 9.0, 0.0]]).view(1, 3, 1, 3)
    target = torch.tensor([[[0, 255, 1]]])
    ce_a = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce_c = math.log(3)
    loss = adapter.per_sample_loss(logits, target)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx((ce_a + ce_c) / 2, rel=1e-6)
    logits2 = logits.clone()
    logits2[0, :, 0, 1] = torch.tensor([-5.0, 5.0, 7.0])  # the void pixel's logits do not matter
    assert adapter.per_sample_loss(logits2, target).item() == pytest.approx(loss.item(), rel=1e-6)


def test_all_ignore_image_gives_zero_loss_and_finite_gradients(adapter):
    logits = torch.randn(2, 19, 4, 5, requires_grad=True)
    target = torch.full((2, 4, 5), 255)
    target[1, 0, 0] = 3
    loss = adapter.per_sample_loss(logits, target)
    assert loss[0].item() == 0.0 and torch.isfinite(loss).all() and loss[1].item() > 0
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0].abs().sum() == 0


def test_uncertainty_is_mean_pixel_entropy(adapter):
    logits = torch.zeros(1, 19, 3, 3)
    assert adapter.uncertainty(logits).item() == pytest.approx(math.log(19), rel=1e-6)
    logits[0, 0] = 100.0
    assert adapter.uncertainty(logits).item() == pytest.approx(0.0, abs=1e-4)


def test_miou_on_a_hand_made_confusion():
    m = ConfusionMatrixIoU(3, ignore_index=255, class_names=["a", "b", "c"])
    target = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 2]])
    m.update(torch.nn.functional.one_hot(pred, 3).permute(0, 2, 1).float(), target)  # logits B×C×N
    out = m.compute()
    assert m.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]  # the void pixel predicted 'c' is dropped
    assert out["IoU/a"] == pytest.approx(1 / 2) and out["IoU/b"] == pytest.approx(2 / 3)
    assert math.isnan(out["IoU/c"])  # absent from prediction and target: left out of the mean
    assert out["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["pixel_acc"] == pytest.approx(3 / 4)
    m.update(torch.tensor([[2]]), torch.tensor([[0]]))  # integer predictions work too; c now counts (IoU 0)
    assert m.compute()["IoU/c"] == 0.0


def test_pool_ids_paths_and_batches(adapter, streets):
    pool = adapter.pool()
    assert len(pool) == 8 and all((streets / p).is_file() for p in pool.paths)
    assert all(not p.startswith("/") for p in pool.paths)
    order = shuffled_batches(np.arange(5), 2, torch.Generator().manual_seed(0))
    assert [len(b) for b in order] == [2, 3]  # a trailing batch of one is merged
    batches = list(adapter.train_batches(order, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert [x.shape[0] for x, _ in batches] == [2, 3]
    x, y = batches[0]
    assert x.shape[1:] == (3, 64, 96) and x.dtype == torch.float32 and y.dtype == torch.int64
    again = list(adapter.train_batches(order, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    pool_x = list(adapter.pool_batches(np.array([3, 1, 2]), 2, torch.device("cpu")))
    assert [p.shape for p in pool_x] == [(3, 3, 64, 128)]
    tests = list(adapter.test_batches(3, torch.device("cpu")))
    assert [t[0].shape[0] for t in tests] == [3, 1]
    halves = [list(adapter.test_batches(3, torch.device("cpu"), (k, 2))) for k in range(2)]
    assert [[t[0].shape[0] for t in h] for h in halves] == [[2], [2]]  # contiguous parts of the 4 test images
    assert torch.equal(torch.cat([t[1] for h in halves for t in h]), torch.cat([t[1] for t in tests]))


def test_vae_images_are_decoded_once_per_size(streets, monkeypatch):
    a = SegmentationAdapter(_cfg(), streets)
    calls = []
    real = adapter_module.resized_uint8
    monkeypatch.setattr(adapter_module, "resized_uint8", lambda items, size: calls.append(len(items)) or real(items, size))
    x = a.vae_images(np.array([0, 3, 5]), [32, 64])
    assert x.shape == (3, 3, 32, 64) and x.dtype == torch.uint8
    y = a.vae_images(np.array([5, 0, 1]), [32, 64])
    assert calls == [3, 1] and torch.equal(y[0], x[2]) and torch.equal(y[1], x[0])


def test_amp_bf16_forward_backward_on_cpu(adapter):
    precision = Precision(torch.device("cpu"), True, force_cpu_bf16=True)
    assert precision.name == "bf16"
    model = adapter.build_model()
    assert list(model.tap_channels) == [f.shape[1] for f in model(torch.zeros(2, 3, 64, 64))[1]]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = next(iter(adapter.train_batches([np.arange(4)], torch.Generator().manual_seed(1), torch.device("cpu"))))
    with precision.autocast():
        logits, feats = model(x)
        loss = adapter.per_sample_loss(logits, y)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32 and loss.shape == (4,)
    precision.step(loss.mean(), [opt])
    assert torch.isfinite(loss).all()
    params = dict(model.named_parameters())
    no_grad = [name for name, p in params.items() if p.grad is None]
    assert not no_grad, f"no gradient reached {no_grad[:5]}"  # every parameter feeds the logits
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    assert sum(float(p.grad.abs().sum()) for p in params.values()) > 0


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.name"):
        _cfg(**{"data.name": "kitti"})
    with pytest.raises(ConfigError, match="model.name"):
        _cfg(**{"model.name": "unet"})
    with pytest.raises(ConfigError, match="vae.size"):
        _cfg(**{"vae.size": [64, 80]})
    with pytest.raises(ConfigError, match="data.classes"):
        _cfg(**{"data.name": "folder"})
