"""DeepLabV3 / DeepLabV3+ (segmentation-models-pytorch) with tapped features for a ranker.

The smp model is run stage by stage (``encoder -> decoder -> segmentation_head``) so that the
encoder maps and the decoder output used by the loss-ranking head come from the same single
forward pass as the logits. Inputs of any size are padded up to a multiple of the encoder's
output stride (smp raises otherwise) and the logits are cropped back to the input size.
Nothing is downloaded: ``encoder_weights`` defaults to None; pretrained encoders come from a
local file (``encoder_weights_path``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from ...core.runtime import read_state_dict

__all__ = ["DeepLabSeg", "deeplabv3", "deeplabv3plus", "DEEPLAB_DEFAULT_TAPS"]

DEEPLAB_DEFAULT_TAPS: tuple[int | str, ...] = (2, 3, 4, 5, "decoder")
_ARCHS = {"deeplabv3": smp.DeepLabV3, "deeplabv3plus": smp.DeepLabV3Plus}


class DeepLabSeg(nn.Module):
    """smp DeepLabV3/V3+ returning ``(logits B×C×H×W, feats)``.

    Args:
        arch: "deeplabv3" or "deeplabv3plus".
        num_classes: output classes.
        encoder_name: any smp encoder name (e.g. "resnet18", "resnet50").
        encoder_weights: smp pretrained-weights tag; None (default) downloads nothing.
        encoder_weights_path: local checkpoint for the encoder (e.g. a torchvision ImageNet
            ResNet state dict; its ``fc.*`` is dropped), loaded with ``weights_only=True``.
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
        encoder_weights_path: str | Path | None = None,
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
        self.model = _ARCHS[arch](
            encoder_name=encoder_name, encoder_weights=encoder_weights, encoder_depth=encoder_depth,
            encoder_output_stride=encoder_output_stride, decoder_channels=decoder_channels,
            classes=num_classes,
        )
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
                raise ValueError(
                    f"invalid tap {t!r}: use encoder stage indices 0..{len(enc_channels) - 1} or 'decoder'")
        if not parsed or len(set(parsed)) != len(parsed):
            raise ValueError(f"taps must be a non-empty list of distinct entries, got {taps}")
        self.tap_names: tuple[str, ...] = tuple(t if t == "decoder" else f"encoder{t}" for t in parsed)
        self._taps = parsed
        decoder_out = _first_conv(self.model.segmentation_head).in_channels
        self._out_channels = [decoder_out if t == "decoder" else enc_channels[t] for t in parsed]
        # What smp's own check_input_shape demands (min(output stride, 2**depth)).
        self.divisor = int(self.model.encoder.output_stride)
        if encoder_weights_path is not None:
            load_encoder_weights(self.model.encoder, encoder_weights_path)

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


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local encoder checkpoint strictly (classifier ``fc.*``/``classifier.*`` keys are
    dropped); missing/unexpected keys or shape mismatches raise ``ValueError`` naming the file."""
    path = Path(path)
    state = read_state_dict(path, "encoder weights file")
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()
             if not k.startswith(("fc.", "classifier.", "module.fc."))}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in sorted(set(state) & set(own)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape_bad:
        raise ValueError(
            f"encoder weights file {path} does not match the encoder: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, shape mismatches {shape_bad[:8]}")
    nn.Module.load_state_dict(encoder, state, strict=True)


def deeplabv3(num_classes: int, **kwargs: object) -> DeepLabSeg:
    """DeepLabV3 (kwargs as :class:`DeepLabSeg`)."""
    return DeepLabSeg("deeplabv3", num_classes, **kwargs)  # type: ignore[arg-type]


def deeplabv3plus(num_classes: int, **kwargs: object) -> DeepLabSeg:
    """DeepLabV3+ (kwargs as :class:`DeepLabSeg`)."""
    return DeepLabSeg("deeplabv3plus", num_classes, **kwargs)  # type: ignore[arg-type]
