"""Label Studio pre-annotations: the model's prediction as a task's ``predictions[].result``.

Segmentation predictions become ``brushlabels`` results, one per predicted class, whose mask is
Label Studio's brush RLE; classification predictions become one ``choices`` result.

The brush RLE (the ``rle-pack`` format Label Studio's editor decodes) packs a flat array of
``H*W*4`` RGBA bytes (one mask value repeated in the four channels; Label Studio reads the
alpha) into a big-endian bit stream:

- header: 32 bits element count, 5 bits ``word size - 1`` (8-bit words: 7), four 4-bit
  ``run-length field width - 1`` entries (3, 4, 8, 16 bits: 2, 3, 7, 15);
- then per run: 1 bit ``repeat`` (1: one value repeated, 0: literal values), 2 bits choosing
  one of the four length-field widths, ``length - 1`` in that width, then the value (repeat) or
  ``length`` values (literal);
- zero bits up to the next byte, and a whole zero byte when the stream already ended on one.

The encoder writes exactly the bytes label-studio-converter's ``brush.encode_rle`` writes for
the same array (the same choice of field width per run, runs longer than 65,536 split into
65,536-element pieces, the same padding), so files made here and there are interchangeable.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BRUSH_WORD_BITS = 8
BRUSH_LENGTH_BITS = (3, 4, 8, 16)        # the run-length field widths in the header
BRUSH_FOREGROUND = 255                   # the value of a masked pixel in every RGBA channel
_LONGEST_PIECE = 1 << BRUSH_LENGTH_BITS[-1]
# Label Studio's own templates name their controls so: Semantic Segmentation with Masks uses
# <BrushLabels name="tag" toName="image">, Image Classification <Choices name="choice" toName="image">
DEFAULT_FROM_NAME = {"brushlabels": "tag", "choices": "choice"}


# ---------------------------------------------------------------------------------- brush RLE

def _pack_bits(values: np.ndarray, widths: np.ndarray) -> list[int]:
    """Write each value in its width, most significant bit first; pad as the converter does."""
    values, widths = np.asarray(values, dtype=np.int64), np.asarray(widths, dtype=np.int64)
    ends = np.cumsum(widths)
    owner = np.repeat(np.arange(len(values)), widths)
    shift = ends[owner] - 1 - np.arange(int(ends[-1]))
    bits = ((values[owner] >> shift) & 1).astype(np.uint8)
    bits = np.concatenate([bits, np.zeros(8 - len(bits) % 8, dtype=np.uint8)])  # 1..8 zero bits
    return np.packbits(bits).tolist()


def encode_brush_rle(flat: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a flat uint8 array (for a mask: its RGBA bytes, see
    :func:`mask_to_brush_rle`). Returns the byte values, as Label Studio's JSON holds them."""
    flat = np.asarray(flat).ravel()
    if flat.size == 0:
        raise ValueError("cannot encode an empty mask")
    if flat.min() < 0 or flat.max() > 255:
        raise ValueError("brush RLE holds 8-bit values (0..255)")
    change = np.flatnonzero(flat[1:] != flat[:-1])
    starts = np.concatenate([[0], change + 1])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    run_values = flat[starts].astype(np.int64)
    # the field width is chosen by the whole run's length; runs past 65,536 go out in pieces of 65,536
    # field width index: 0 for 1..8 (1 alone is a literal), 1 for 9..16, 2 for 17..256, 3 beyond
    size = np.where(lengths == 1, 0, np.searchsorted(np.asarray([8, 16, 256]), lengths, side="left"))
    full = np.where(size == 3, (lengths - 1) // _LONGEST_PIECE, 0)
    pieces = full + 1
    piece_len = np.repeat(lengths, pieces).copy()
    first = np.cumsum(pieces) - pieces                                   # each run's first piece
    last = first + full
    is_full = np.ones(int(pieces.sum()), dtype=bool)
    is_full[last] = False
    piece_len[is_full] = _LONGEST_PIECE
    piece_len[last] = lengths - full * _LONGEST_PIECE
    piece_size = np.repeat(size, pieces)
    piece_value = np.repeat(run_values, pieces)
    repeat = (np.repeat(lengths, pieces) > 1).astype(np.int64)          # a 1-long run is a literal of one value
    width = np.asarray(BRUSH_LENGTH_BITS)[piece_size]
    header_values = [flat.size, BRUSH_WORD_BITS - 1, *[b - 1 for b in BRUSH_LENGTH_BITS]]
    header_widths = [32, 5, 4, 4, 4, 4]
    # per piece: repeat bit + size index (3 bits), length - 1, the value
    body = np.stack([(repeat << 2) | piece_size, piece_len - 1, piece_value], axis=1).ravel()
    body_widths = np.stack([np.full_like(width, 3), width, np.full_like(width, BRUSH_WORD_BITS)], axis=1).ravel()
    return _pack_bits(np.concatenate([header_values, body]), np.concatenate([header_widths, body_widths]))


class _Bits:
    def __init__(self, data: Sequence[int]) -> None:
        self.bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise ValueError("brush RLE ends in the middle of a run")
        value = 0
        for bit in self.bits[self.pos:self.pos + n]:
            value = (value << 1) | int(bit)
        self.pos += n
        return value


def decode_brush_rle(rle: Sequence[int]) -> np.ndarray:
    """The flat array a brush RLE holds (Label Studio's decoder, run by run)."""
    bits = _Bits(rle)
    count = bits.read(32)
    word = bits.read(5) + 1
    length_bits = [bits.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8 if word <= 8 else np.uint32)
    i = 0
    while i < count:
        repeat = bits.read(1)
        j = min(count, i + 1 + bits.read(length_bits[bits.read(2)]))
        if repeat:
            out[i:j] = bits.read(word)
        else:
            for k in range(i, j):
                out[k] = bits.read(word)
        i = j
    return out


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """A boolean H×W mask as Label Studio's brush RLE (RGBA, 255 where set)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a brush mask is 2-D (H×W), got shape {mask.shape}")
    return encode_brush_rle(np.repeat(mask.ravel().astype(np.uint8) * BRUSH_FOREGROUND, 4))


def brush_rle_to_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio's reading of a brush RLE: the alpha channel, set where it is non-zero."""
    flat = decode_brush_rle(rle)
    if flat.size != height * width * 4:
        raise ValueError(f"brush RLE holds {flat.size} values, not {height}x{width}x4")
    return flat.reshape(height, width, 4)[:, :, 3] > 0


# ---------------------------------------------------------------------------------- results

@dataclass(frozen=True)
class PreAnnotation:
    """One image's model prediction, ready for a Label Studio ``predictions[].result``: brush
    layers ``(class index, RLE bytes)`` at ``width``×``height`` (segmentation), or a ``label``
    with its ``confidence`` (classification)."""

    layers: tuple[tuple[int, bytes], ...] = ()
    width: int = 0
    height: int = 0
    label: int | None = None
    confidence: float | None = None


def pre_annotation_from_mask(mask: np.ndarray, num_classes: int) -> PreAnnotation:
    """One brush layer per class present in an H×W class-index mask (values >= num_classes,
    e.g. an ignore value, get no layer)."""
    mask = np.asarray(mask)
    present = [k for k in np.unique(mask).tolist() if 0 <= k < num_classes]
    layers = tuple((int(k), bytes(mask_to_brush_rle(mask == k))) for k in present)
    return PreAnnotation(layers=layers, width=int(mask.shape[1]), height=int(mask.shape[0]))


def prediction_results(pre: PreAnnotation, class_names: Sequence[str], from_name: str | None,
                       to_name: str) -> list[dict[str, Any]]:
    """The ``result`` list of a Label Studio prediction (ids are stable: a re-export is identical)."""
    if pre.label is not None:
        result: dict[str, Any] = {"id": "tavaal-choice", "from_name": from_name or DEFAULT_FROM_NAME["choices"],
                                  "to_name": to_name, "type": "choices",
                                  "value": {"choices": [class_names[pre.label]]}}
        if pre.confidence is not None:
            result["score"] = float(pre.confidence)
        return [result]
    return [{"id": f"tavaal-{k}", "from_name": from_name or DEFAULT_FROM_NAME["brushlabels"], "to_name": to_name,
             "type": "brushlabels", "original_width": pre.width, "original_height": pre.height,
             "image_rotation": 0, "value": {"format": "rle", "rle": list(rle), "brushlabels": [class_names[k]]}}
            for k, rle in pre.layers]


def labeling_config(class_names: Sequence[str], brush: bool, from_name: str | None = None,
                    to_name: str = "image") -> str:
    """A Label Studio labeling config whose names match the pre-annotations."""
    from xml.sax.saxutils import quoteattr

    tag, item = ("BrushLabels", "Label") if brush else ("Choices", "Choice")
    name = from_name or DEFAULT_FROM_NAME["brushlabels" if brush else "choices"]
    lines = ["<View>", f"  <Image name={quoteattr(to_name)} value=\"$image\" zoom=\"true\"/>",
             f"  <{tag} name={quoteattr(name)} toName={quoteattr(to_name)}>"]
    lines += [f"    <{item} value={quoteattr(n)}/>" for n in class_names]
    lines += [f"  </{tag}>", "</View>"]
    return "\n".join(lines) + "\n"
