"""Segmentation models: logits at input size, tapped features matching declared channels,
registry, tap selection, and local weight loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tavaal_seg.core.registry import Registry
from tavaal_seg.segmentation.models import SEG_MODELS, DeepLabSeg, DRNSeg, SegModel, build_seg_model

CASES = {
    "drn_d_22": {},
    "drn_d_38": {},
    "deeplabv3": {"encoder_name": "resnet18"},
    "deeplabv3plus": {"encoder_name": "resnet18"},
}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build_seg_model(name, 5, **kw).eval() for name, kw in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("hw", [(64, 96), (70, 100)])
def test_logits_and_taps_shapes(models: dict[str, torch.nn.Module], name: str, hw: tuple[int, int]) -> None:
    model = models[name]
    assert isinstance(model, SegModel)
    with torch.no_grad():
        logits, feats = model(torch.randn(2, 3, *hw))
    assert logits.shape == (2, 5, *hw) and torch.isfinite(logits).all()
    assert len(feats) == len(model.tap_channels) == len(model.tap_names) >= 4
    assert [f.shape[1] for f in feats] == model.tap_channels
    for f in feats:
        assert f.dim() == 4 and f.shape[0] == 2 and f.shape[2] <= hw[0] and f.shape[3] <= hw[1]
    strides = [round(hw[1] / f.shape[3]) for f in feats]
    if name.startswith("drn"):
        assert model.tap_channels == [64, 128, 512, 512] and strides == [4, 8, 8, 8]
    else:
        assert model.tap_channels == [64, 128, 256, 512, 256]  # resnet18 stages 2..5 + decoder


def test_deeplab_matches_smp_forward_and_pads_odd_sizes() -> None:
    torch.manual_seed(0)
    model = build_seg_model("deeplabv3plus", 3, encoder_name="resnet18", encoder_output_stride=16).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, _ = model(x)
        ref = model.model(x)
        torch.testing.assert_close(ours, ref)
        with pytest.raises(RuntimeError):  # smp itself refuses sizes not divisible by the stride
            model.model(torch.randn(1, 3, 70, 100))
        odd, _ = model(torch.randn(1, 3, 70, 100))
    assert odd.shape == (1, 3, 70, 100)
    zero = DeepLabSeg("deeplabv3", 2, encoder_name="resnet18", encoder_output_stride=8, pad_mode="constant")
    # (batch 2: in train mode the ASPP image-pooling BatchNorm cannot take a single 1x1 sample)
    assert zero.divisor == 8 and zero(torch.randn(2, 3, 33, 47))[0].shape == (2, 2, 33, 47)


def test_gradients_reach_backbone_through_taps() -> None:
    model = build_seg_model("drn_d_22", 4, width=0.25)
    logits, feats = model(torch.randn(2, 3, 48, 64))
    sum(f.mean() for f in feats).backward()
    assert model.backbone.layer0[0].weight.grad is not None
    assert model.seg.weight.grad is None  # taps alone do not touch the classifier


def test_registry_and_tap_selection() -> None:
    assert isinstance(SEG_MODELS, Registry) and not hasattr(SEG_MODELS, "__setitem__")
    assert set(SEG_MODELS) == {"deeplabv3", "deeplabv3plus", "drn_d_22", "drn_d_38"}
    with pytest.raises(ValueError, match="drn_d_22"):
        build_seg_model("unet9000", 3)
    drn = build_seg_model("drn_d_22", 3, taps=("layer1", "layer5"), width=0.5)
    _, feats = drn(torch.randn(1, 3, 40, 40))
    assert drn.tap_channels == [8, 128] == [f.shape[1] for f in feats]
    with pytest.raises(ValueError, match="taps"):
        build_seg_model("drn_d_22", 3, taps=("layer9",))
    dl = build_seg_model("deeplabv3", 3, encoder_name="resnet18", taps=[1, "decoder"], decoder_channels=32)
    _, feats = dl(torch.randn(2, 3, 32, 32))
    assert dl.tap_channels == [64, 32] == [f.shape[1] for f in feats]
    assert dl.tap_names == ("encoder1", "decoder")
    with pytest.raises(ValueError, match="invalid tap"):
        build_seg_model("deeplabv3", 3, encoder_name="resnet18", taps=[7])


def test_drn_weights_roundtrip_and_reference_formats(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = DRNSeg("drn_d_22", 3, width=0.25).eval()
    torch.save(src.state_dict(), tmp_path / "ours.pt")
    x = torch.randn(1, 3, 32, 48)
    loaded = DRNSeg("drn_d_22", 3, width=0.25, weights=str(tmp_path / "ours.pt")).eval()
    torch.testing.assert_close(loaded(x)[0], src(x)[0])

    # the authors' DRNSeg format: base.N = layerN, plus a fixed 'up' deconv that is dropped
    authors = {k.replace("backbone.layer", "base."): v for k, v in src.state_dict().items()}
    authors["up.weight"] = torch.zeros(3, 1, 16, 16)
    torch.save({"state_dict": authors}, tmp_path / "authors.pth")
    loaded = DRNSeg("drn_d_22", 3, width=0.25, weights=tmp_path / "authors.pth").eval()
    torch.testing.assert_close(loaded(x)[0], src(x)[0])

    # ImageNet DRN: backbone only (fc dropped), classifier keeps its own init
    imagenet = {k.removeprefix("backbone."): v for k, v in src.state_dict().items() if k.startswith("backbone.")}
    imagenet["fc.weight"] = torch.zeros(1000, 128, 1, 1)
    torch.save(imagenet, tmp_path / "imagenet.pth")
    loaded = DRNSeg("drn_d_22", 7, width=0.25, weights=tmp_path / "imagenet.pth").eval()
    torch.testing.assert_close(loaded.backbone(x)[-1], src.backbone(x)[-1])

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        DRNSeg("drn_d_22", 3, width=0.25, weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"ours\.pt.*missing keys.*layer3\.2"):
        DRNSeg("drn_d_38", 3, width=0.25, weights=tmp_path / "ours.pt")
    # another number of classes: the backbone loads, the classifier keeps its init (transfer)
    four = DRNSeg("drn_d_22", 4, width=0.25, weights=tmp_path / "ours.pt").eval()
    torch.testing.assert_close(four.backbone(x)[-1], src.backbone(x)[-1])
    with pytest.raises(ValueError, match=r"ours\.pt.*shape mismatches.*layer0"):
        DRNSeg("drn_d_22", 3, width=0.5, weights=tmp_path / "ours.pt")
