"""Weights: every layout model.weights detects (encoder state dicts, full smp / torchvision
models, this package's run checkpoints, safetensors), the mismatch named when a file does not
fit, and pretrained weights by name (model.encoder_weights) -- fetched into the hub caches, and
offline an error that names the file and the place to put it (tested by putting it there)."""
from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from tavaal_cls.models import TORCHVISION_WEIGHTS, build_cls_model
from tavaal_seg.core.errors import WeightsError
from tavaal_seg.core.weights import hub_cache_path, load_run_checkpoint, read_state_dict
from tavaal_seg.segmentation.models import DeepLabSeg, DRNSeg, drn_imagenet_file


def _deeplab(classes: int = 3, encoder: str = "resnet18", **kwargs) -> DeepLabSeg:
    return DeepLabSeg("deeplabv3plus", classes, encoder_name=encoder, decoder_channels=16, **kwargs).eval()


@pytest.fixture()
def offline(monkeypatch):
    """No network: torch hub's downloader and the Hugging Face hub fail at once."""
    from huggingface_hub import constants

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    """Torch hub and Hugging Face caches in a temp folder (what a fresh machine has)."""
    from huggingface_hub import constants

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))
    return tmp_path


def test_deeplab_detects_each_file_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = _deeplab()
    x = torch.randn(2, 3, 48, 64)
    want_logits, _ = src(x)

    # torchvision-style encoder (classifier fc kept in the file) and smp's own encoder file (safetensors)
    encoder = dict(src.model.encoder.state_dict())
    torch.save({**encoder, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "tv.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in encoder.items()}, str(tmp_path / "model.safetensors"))
    for name in ("tv.pth", "model.safetensors"):
        dst = _deeplab(weights=tmp_path / name).state_dict()
        torch.testing.assert_close(dst["model.encoder.layer4.1.conv2.weight"], encoder["layer4.1.conv2.weight"])
        aspp = "model.decoder.aspp.0.convs.0.0.weight"
        assert not torch.equal(dst[aspp], src.state_dict()[aspp])  # the decoder keeps its own init

    # a full smp model (DDP-saved), and this package's run checkpoint: the same logits
    torch.save({"module." + k: v for k, v in src.model.state_dict().items()}, tmp_path / "smp.pt")
    torch.save({"model": src.state_dict(), "ranker": None}, tmp_path / "cycle_03.pt")
    for name in ("smp.pt", "cycle_03.pt"):
        torch.testing.assert_close(_deeplab(weights=tmp_path / name)(x)[0], want_logits)

    # a full model for other classes: all but the segmentation head (kept at init, logged)
    five = _deeplab(classes=5, weights=tmp_path / "smp.pt").state_dict()
    assert all(torch.equal(five[k], v) for k, v in src.state_dict().items() if "segmentation_head" not in k)


def test_deeplab_takes_a_torchvision_segmentation_models_backbone(tmp_path: Path) -> None:
    tv = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=4,
                                                            aux_loss=True)
    torch.save(tv.state_dict(), tmp_path / "tv_deeplab.pth")
    dst = _deeplab(encoder="resnet50", weights=tmp_path / "tv_deeplab.pth")
    torch.testing.assert_close(dst.model.encoder.layer3[5].conv3.weight, tv.backbone.layer3[5].conv3.weight)


def test_a_file_that_does_not_fit_is_named_with_the_keys(tmp_path: Path) -> None:
    torch.save(_deeplab(encoder="resnet34").model.encoder.state_dict(), tmp_path / "r34.pth")
    with pytest.raises(WeightsError, match=r"r34\.pth does not fit .*encoder state dict.*unexpected keys .*layer1\.2"):
        _deeplab(weights=tmp_path / "r34.pth")
    torch.save({"model": _deeplab(encoder="resnet34").state_dict(), "ranker": None}, tmp_path / "cycle_01.pt")
    with pytest.raises(WeightsError, match=r"cycle_01\.pt does not fit .*this package's DeepLab.*missing keys"):
        _deeplab(weights=tmp_path / "cycle_01.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.pt: cannot read it as a torch checkpoint"):
        _deeplab(weights=tmp_path / "notes.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=r"list\.pt: expected a state dict of tensors, got list"):
        read_state_dict(tmp_path / "list.pt", "model.weights file")


def test_run_checkpoints_load_back_with_their_ranker(tmp_path: Path) -> None:
    from tavaal_seg.core.ranker import LossRanker

    src = DRNSeg("drn_d_22", 3, width=0.25)
    ranker = LossRanker(src.tap_channels, 8)
    torch.save({"model": src.state_dict(), "ranker": ranker.state_dict()}, tmp_path / "cycle_02.pt")
    model, again = DRNSeg("drn_d_22", 3, width=0.25), LossRanker(src.tap_channels, 8)
    load_run_checkpoint(tmp_path / "cycle_02.pt", model, again)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ranker.state_dict().values()))
    with pytest.raises(WeightsError, match=r"cycle_02\.pt \(ranker\) does not fit.*shape mismatches"):
        load_run_checkpoint(tmp_path / "cycle_02.pt", DRNSeg("drn_d_22", 3, width=0.25),
                            LossRanker(src.tap_channels, 16))
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match=r"expected this package's \{'model': \.\.\., 'ranker': \.\.\.\} checkpoint"):
        load_run_checkpoint(tmp_path / "plain.pt", model)


def test_smp_encoder_weights_offline_name_the_file_and_load_once_it_is_there(tmp_path, offline, empty_caches):
    with pytest.raises(WeightsError) as err:
        _deeplab(encoder_weights="imagenet")
    message = str(err.value)
    assert "https://huggingface.co/smp-hub/resnet18.imagenet/resolve/" in message and "model.safetensors" in message
    folder = Path(message.split(" and put them in ")[1].split("/ (the Hugging Face cache")[0])
    assert str(folder).startswith(str(empty_caches / "hf_hub"))
    # do what the message says: the two files in that folder, and smp loads them with no network
    torch.manual_seed(1)
    encoder = _deeplab().model.encoder.state_dict()
    folder.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in encoder.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))
    model = _deeplab(encoder_weights="imagenet")
    torch.testing.assert_close(model.model.encoder.conv1.weight, encoder["conv1.weight"])


def test_drn_and_torchvision_imagenet_weights_offline_name_the_file_and_load_once_it_is_there(offline, empty_caches):
    target = hub_cache_path(TORCHVISION_WEIGHTS["imagenet"].url)
    with pytest.raises(WeightsError, match=rf"cannot download https://download\.pytorch\.org/models/"
                                           rf"{target.name}.*put it at {target}"):
        build_cls_model("resnet18", 5, encoder_weights="imagenet")
    with pytest.raises(WeightsError, match=r"drn_d_22-4bd2f8ea\.pth.*put it at .*torch_hub/checkpoints/drn_d_22"):
        drn_imagenet_file("drn_d_22")
    with pytest.raises(ValueError, match=r"fits model.width 1.0 only"):
        drn_imagenet_file("drn_d_22", width=0.25)
    # put torchvision's file where the message says: torchvision loads it, the classifier is new
    reference = torchvision.models.resnet18(weights=None)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), target)
    model = build_cls_model("resnet18", 5, encoder_weights="imagenet")
    torch.testing.assert_close(model.net.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)
    assert model.net.fc.out_features == 5


def test_classification_weights_files(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    model = build_cls_model("resnet18", 7, weights=str(tmp_path / "tv.pth"))  # 1000-class fc: kept at init
    torch.testing.assert_close(model.net.conv1.weight, reference.conv1.weight)
    small = build_cls_model("resnet18_cifar", 4, width=0.125)
    torch.save({"model": small.state_dict(), "ranker": None}, tmp_path / "cycle_01.pt")
    again = build_cls_model("resnet18_cifar", 4, width=0.125, weights=str(tmp_path / "cycle_01.pt"))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), small.state_dict().values()))
    with pytest.raises(WeightsError, match=r"tv\.pth does not fit.*CifarResNet18.*unexpected keys"):
        build_cls_model("resnet18_cifar", 4, width=0.125, weights=str(tmp_path / "tv.pth"))


def test_weight_names_and_encoders_are_checked_with_the_config() -> None:
    from tavaal_seg.core.errors import ConfigError
    from tavaal_seg.core.validation import load_config
    from tavaal_seg.segmentation.config import SegConfig

    base = ["model.name=deeplabv3plus", "model.encoder=resnet18"]
    with pytest.raises(ConfigError, match=r"model.encoder_weights: expected one of smp's weights for resnet18: "
                                          r"imagenet, ssl, swsl, got 'instagram'"):
        load_config(SegConfig, None, [*base, "model.encoder_weights=instagram"])
    with pytest.raises(ConfigError, match=r"model.encoder: 'resnet5' is not an smp encoder \(did you mean resnet50"):
        load_config(SegConfig, None, ["model.encoder=resnet5"])
    with pytest.raises(ConfigError, match=r"model.weights/model.encoder_weights: expected one of them"):
        load_config(SegConfig, None, [*base, "model.encoder_weights=imagenet", "model.weights=x.pth"])
    load_config(SegConfig, None, ["model.encoder=tu-resnet10t", "model.encoder_weights=imagenet"])  # timm's own
