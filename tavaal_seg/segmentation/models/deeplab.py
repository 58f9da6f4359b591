"""DeepLabV3 / DeepLabV3+ (segmentation-models-pytorch) with tapped features for a ranker.

The smp model is run stage by stage (``encoder -> decoder -> segmentation_head``) so that the
encoder maps and the decoder output used by the loss-ranking head come from the same single
forward pass as the logits. Inputs of any size are padded up to a multiple of the encoder's
output stride (smp raises otherwise) and the logits are cropped back to the input size.

Weights: ``encoder_weights`` is smp's own name for a pretrained encoder ("imagenet", "ssl",
...), passed to smp, which reads it from the Hugging Face cache (fetched there first, so that
offline the error names the file and where to put it); ``weights`` is a local file in any of
the layouts :func:`load_deeplab_weights` detects.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import ConfigError, WeightsError
from ...core.runtime import LOG
from ...core.weights import load_fitted, read_state_dict

__all__ = ["DeepLabSeg", "deeplabv3", "deeplabv3plus", "DEEPLAB_DEFAULT_TAPS", "load_deeplab_weights",
           "smp_encoder_file", "smp_weight_names"]

DEEPLAB_DEFAULT_TAPS: tuple[int | str, ...] = (2, 3, 4, 5, "decoder")
_ARCHS = {"deeplabv3": smp.DeepLabV3, "deeplabv3plus": smp.DeepLabV3Plus}


class DeepLabSeg(nn.Module):
    """smp DeepLabV3/V3+ returning ``(logits B×C×H×W, feats)``.

    Args:
        arch: "deeplabv3" or "deeplabv3plus".
        num_classes: output classes.
        encoder_name: any smp encoder name (e.g. "resnet18", "resnet50").
        encoder_weights: smp's name of a pretrained encoder ("imagenet", "ssl", ...; see
            :func:`smp_weight_names`), passed to smp; None (default) fetches nothing.
        weights: a local file (``weights_only=True`` or ``.safetensors``): an encoder state dict
            (torchvision classification model, smp encoder), a full smp or torchvision
            segmentation model state dict, or this package's checkpoint ``checkpoints/cycle_NN.pt``
            (see :func:`load_deeplab_weights`).
        encoder_output_stride: 8 or 16 (dilated last stages).
        decoder_channels: ASPP/decoder width (256 in the papers; smaller for CPU).
        taps: encoder stage indices into ``encoder(x)`` (0 = the input itself, 1 = /2, ...) and/or
            "decoder" (decoder output, before the classifier). Default: stages 2..5 + decoder.
        pad_mode: "reflect" or "constant" (zeros) for padding to the stride multiple.

    Note: in train mode the ASPP image-pooling branch applies BatchNorm to a 1×1 map, so a
    training batch of one image raises; use batches >= 2 (drop or merge a last batch of 1).
    """

    def __init__(
        self,
        arch: Literal["deeplabv3", "deeplabv3plus"],
        num_classes: int,
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        weights: str | Path | None = None,
        encoder_output_stride: int = 16,
        decoder_channels: int = 256,
        taps: Sequence[int | str] = DEEPLAB_DEFAULT_TAPS,
        pad_mode: Literal["reflect", "constant"] = "reflect",
        encoder_depth: int = 5,
    ) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown DeepLab architecture {arch!r}; valid: {sorted(_ARCHS)}")
        if encoder_output_stride not in (8, 16):
            raise ValueError(f"encoder_output_stride must be 8 or 16, got {encoder_output_stride}")
        if pad_mode not in ("reflect", "constant"):
            raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
        self.arch = arch
        self.num_classes = int(num_classes)
        self.pad_mode = pad_mode
        if encoder_weights is not None:
            smp_encoder_file(encoder_name, encoder_weights)  # in the cache now, or a WeightsError naming it
        try:
            self.model = _ARCHS[arch](
                encoder_name=encoder_name, encoder_weights=encoder_weights, encoder_depth=encoder_depth,
                encoder_output_stride=encoder_output_stride, decoder_channels=decoder_channels,
                classes=num_classes,
            )
        except Exception as err:  # noqa: BLE001 - timm fetches a tu- encoder's weights itself
            if encoder_weights is None or not encoder_name.startswith("tu-"):
                raise
            raise WeightsError(f"model.encoder_weights: timm cannot fetch the pretrained weights of "
                               f"{encoder_name} ({type(err).__name__}: {err})") from err
        enc_channels = list(self.model.encoder.out_channels)
        taps = tuple(taps)
        parsed: list[int | str] = []
        for t in taps:
            if t == "decoder":
                parsed.append("decoder")
            elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(enc_channels):
                parsed.append(t)
            elif isinstance(t, str) and t.isdigit() and int(t) < len(enc_channels):
                parsed.append(int(t))
            else:
                raise ConfigError(
                    f"model.taps: invalid tap {t!r}: use encoder stage indices 0..{len(enc_channels) - 1} or 'decoder'")
        if not parsed or len(set(parsed)) != len(parsed):
            raise ConfigError(f"model.taps: taps must be a non-empty list of distinct entries, got {taps}")
        self.tap_names: tuple[str, ...] = tuple(t if t == "decoder" else f"encoder{t}" for t in parsed)
        self._taps = parsed
        decoder_out = _first_conv(self.model.segmentation_head).in_channels
        self._out_channels = [decoder_out if t == "decoder" else enc_channels[t] for t in parsed]
        # What smp's own check_input_shape demands (min(output stride, 2**depth)).
        self.divisor = int(self.model.encoder.output_stride)
        if weights is not None:
            load_deeplab_weights(self, weights)

    @property
    def tap_channels(self) -> list[int]:
        return list(self._out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.divisor, (-w) % self.divisor
        if ph or pw:
            mode = self.pad_mode if (self.pad_mode == "constant" or (ph < h and pw < w)) else "constant"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        enc = self.model.encoder(x)
        dec = self.model.decoder(enc)
        logits = self.model.segmentation_head(dec)
        if logits.shape[-2:] != x.shape[-2:]:  # heads that upsample by a fixed factor
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[..., :h, :w]
        feats = [dec if t == "decoder" else enc[t] for t in self._taps]
        return logits, feats


def _first_conv(module: nn.Module) -> nn.Conv2d:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise TypeError(f"no Conv2d in {type(module).__name__}")


HEAD = ("model.segmentation_head.",)           # shaped by the number of classes
NOT_ENCODER = ("model.decoder.", "model.segmentation_head.")


def _deeplab_layout(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, tuple[str, ...]]:
    """Map a file's keys onto :class:`DeepLabSeg` names: (mapped state, what the file was read
    as, the model key prefixes it may leave at their initialisation)."""
    def has(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in state)

    if has("model.encoder.", "model.decoder."):
        return dict(state), "this package's DeepLab (a run checkpoint or a state_dict())", HEAD
    if has("decoder.", "segmentation_head."):
        return {"model." + k: v for k, v in state.items()}, "an smp model state dict", HEAD
    if has("backbone."):
        dropped = sorted({k.split(".")[0] for k in state if not k.startswith("backbone.")})
        if dropped:
            LOG.info("torchvision segmentation model: loading its backbone into the encoder; %s differ from "
                     "smp's decoder and are not loaded", ", ".join(dropped))
        return ({"model.encoder." + k.removeprefix("backbone."): v for k, v in state.items()
                 if k.startswith("backbone.")}, "a torchvision segmentation model's backbone", NOT_ENCODER)
    return ({"model.encoder." + k.removeprefix("encoder."): v for k, v in state.items()
             if not k.startswith(("fc.", "classifier."))},
            "an encoder state dict (torchvision classification model or smp encoder)", NOT_ENCODER)


def load_deeplab_weights(model: "DeepLabSeg", path: str | Path) -> None:
    """Load a local weights file into ``model``, its layout detected from its keys:

    - this package's checkpoint ``checkpoints/cycle_NN.pt`` or a ``DeepLabSeg.state_dict()``;
    - a full smp model state dict (``encoder.*``, ``decoder.*``, ``segmentation_head.*``);
    - a torchvision segmentation model (``backbone.*`` goes into the encoder; its head differs);
    - an encoder state dict: a torchvision classification model (``fc.*`` dropped) or an smp
      encoder (e.g. smp's ``model.safetensors``).

    A segmentation head shaped for another number of classes keeps its initialisation (logged);
    anything else that does not fit raises :class:`WeightsError` naming the keys."""
    state, kind, optional = _deeplab_layout(read_state_dict(path, "model.weights file"))
    load_fitted(model, state, what=f"model.weights file {path}", kind=kind, optional=optional)


def smp_weight_names(encoder_name: str) -> list[str]:
    """smp's names of the pretrained weights it offers for ``encoder_name`` (empty for an unknown encoder)."""
    from segmentation_models_pytorch.encoders import encoders

    return sorted(encoders.get(encoder_name, {}).get("pretrained_settings", {}))


def smp_encoder_file(encoder_name: str, weights: str) -> Path | None:
    """Bring smp's pretrained file for ``(encoder_name, weights)`` into the Hugging Face cache,
    where smp reads it (a pinned revision: once cached, no network is used). Without a network
    a :class:`WeightsError` names the file and the folder to put it in. ``tu-`` (timm) encoders
    are fetched by timm itself: None."""
    if encoder_name.startswith("tu-"):
        return None
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder_name, {}).get("pretrained_settings", {})
    if weights not in settings:
        raise ConfigError(f"model.encoder_weights: smp has no {weights!r} weights for encoder {encoder_name!r}; "
                          f"it has {', '.join(sorted(settings)) or 'none'}")
    from huggingface_hub import constants, hf_hub_download

    repo, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    try:
        for filename in ("config.json", "model.safetensors"):
            path = hf_hub_download(repo, filename=filename, revision=revision)
    except Exception as err:  # noqa: BLE001 - offline (LocalEntryNotFoundError), HTTP and hub errors alike
        folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
        raise WeightsError(
            f"model.encoder_weights={weights}: cannot fetch smp's {encoder_name} weights "
            f"https://huggingface.co/{repo}/resolve/{revision}/model.safetensors ({type(err).__name__}); without "
            f"internet, download model.safetensors and config.json from https://huggingface.co/{repo}/tree/{revision} "
            f"on another machine and put them in {folder}/ (the Hugging Face cache, $HF_HOME/hub), or pass "
            "model.safetensors as model.weights") from err
    return Path(path)


def deeplabv3(num_classes: int, **kwargs: object) -> DeepLabSeg:
    """DeepLabV3 (kwargs as :class:`DeepLabSeg`)."""
    return DeepLabSeg("deeplabv3", num_classes, **kwargs)  # type: ignore[arg-type]


def deeplabv3plus(num_classes: int, **kwargs: object) -> DeepLabSeg:
    """DeepLabV3+ (kwargs as :class:`DeepLabSeg`)."""
    return DeepLabSeg("deeplabv3plus", num_classes, **kwargs)  # type: ignore[arg-type]
