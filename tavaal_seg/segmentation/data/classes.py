"""Class tables: how raw mask values on disk become training ids.

A :class:`ClassTable` is a 256-entry look-up table (raw uint8 mask value -> train id or the
ignore index) plus a ``known`` flag per raw value. The flag exists so that a mask containing a
value the dataset does not define (a wrong label format, an RGB-colour mask saved as grey, a
16-bit instance map passed by mistake) is *rejected* with the file name instead of silently
becoming "ignore" -- silently ignored labels train a model on nothing and look like a bad
learning rate. A table with a ``palette`` reads colour (RGB) masks: palette entry k is the
colour of raw value k, which the table then maps like any raw value.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...core.errors import DataError

__all__ = ["ClassTable", "cityscapes_table", "camvid_table", "folder_table", "palette_table", "CAMVID_CLASSES"]

CAMVID_CLASSES: tuple[str, ...] = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)


@dataclass(frozen=True, eq=False)
class ClassTable:
    """Raw mask value -> train id mapping for one dataset.

    Attributes:
        names: class names, index = train id (``num_classes == len(names)``).
        lut: uint8 array of 256 entries, ``lut[raw] = train id`` or ``ignore_index``.
        known: bool array of 256 entries; ``known[raw]`` is False for values the dataset does
            not define. :meth:`encode` raises on those (values explicitly mapped to
            ``ignore_index`` are known and fine).
        ignore_index: the train id meaning "no label" (must be >= num_classes, <= 255).
        palette: None for masks of raw values; else a K×3 uint8 array of distinct RGB colours
            (K <= 256), colour k standing for raw value k: masks are then colour images.

    The arrays are copied and made read-only, so a table is safe to share between workers.
    """

    names: tuple[str, ...]
    lut: np.ndarray
    known: np.ndarray
    ignore_index: int = 255
    palette: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        if not names:
            raise ValueError("ClassTable needs at least one class name")
        if len(set(names)) != len(names):
            raise ValueError(f"ClassTable class names must be unique, got {names}")
        ignore = int(self.ignore_index)
        if not len(names) <= ignore <= 255:
            raise ValueError(
                f"ignore_index must be in [{len(names)}, 255] (>= num_classes, fits uint8), got {ignore}"
            )
        lut = np.array(self.lut, dtype=np.int64).reshape(-1)
        known = np.array(self.known, dtype=bool).reshape(-1)
        if lut.shape != (256,) or known.shape != (256,):
            raise ValueError(f"lut and known must have 256 entries, got {lut.shape} and {known.shape}")
        targets = lut[known]
        bad = targets[(targets >= len(names)) & (targets != ignore)]
        if bad.size:
            raise ValueError(
                f"lut maps known raw values to {sorted(set(bad.tolist()))}, which are neither a train id "
                f"0..{len(names) - 1} nor ignore_index {ignore}"
            )
        lut = np.where(known, lut, ignore).astype(np.uint8)
        lut.setflags(write=False)
        known.setflags(write=False)
        if self.palette is not None:
            palette = np.array(self.palette, dtype=np.int64).reshape(-1, 3)
            if not 0 < len(palette) <= 256 or palette.min() < 0 or palette.max() > 255:
                raise ValueError(f"palette must hold 1..256 RGB colours with values 0..255, got {len(palette)}")
            if len({tuple(c) for c in palette.tolist()}) != len(palette):
                raise ValueError("palette colours must be distinct")
            palette = palette.astype(np.uint8)
            palette.setflags(write=False)
            object.__setattr__(self, "palette", palette)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "ignore_index", ignore)
        object.__setattr__(self, "lut", lut)
        object.__setattr__(self, "known", known)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def encode(self, mask_raw: np.ndarray, source: str) -> np.ndarray:
        """Map a raw H×W integer mask to train ids (uint8), validating every value.

        Raises:
            ValueError: naming ``source`` (the file) if the mask is not an integer array or holds a
                value this table does not define.
        """
        mask = np.asarray(mask_raw)
        if mask.dtype.kind not in "ui":
            raise DataError(f"mask {source}: expected an integer label image, got dtype {mask.dtype}")
        if mask.dtype != np.uint8:
            lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
            if lo < 0 or hi > 255:
                raise DataError(
                    f"mask {source}: values range {lo}..{hi}, outside 0..255; expected an 8-bit label "
                    f"image (is this an instance-id or colour mask?)"
                )
            mask = mask.astype(np.uint8)
        unknown = ~self.known[mask]
        if unknown.any():
            values = np.unique(mask[unknown]).tolist()
            known_values = np.flatnonzero(self.known).tolist()
            raise DataError(
                f"mask {source}: contains raw value(s) {values[:20]} ({int(unknown.sum())} pixels) that the "
                f"class table does not define; known raw values: {_ranges(known_values)}"
            )
        return self.lut[mask]

    def encode_colors(self, rgb: np.ndarray, source: str) -> np.ndarray:
        """Map an H×W×3 uint8 RGB mask to train ids through the palette, validating every pixel.

        Raises:
            DataError: naming ``source`` and the first colours (with pixel counts) that are not
                in the palette.
        """
        assert self.palette is not None, "encode_colors needs a table with a palette"
        codes = _pack(rgb)
        palette_codes = _pack(self.palette[None])[0]
        order = np.argsort(palette_codes)
        sorted_codes = palette_codes[order]
        pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
        unknown = sorted_codes[pos] != codes
        if unknown.any():
            values, counts = np.unique(codes[unknown], return_counts=True)
            shown = ", ".join(f"{_unpack(v)} ({c} px)" for v, c in sorted(zip(values.tolist(), counts.tolist()),
                                                                         key=lambda vc: -vc[1])[:5])
            raise DataError(f"mask {source}: {len(values)} colour(s) not in data.palette, e.g. {shown}; palette "
                            f"colours: {', '.join(str(_unpack(int(c))) for c in palette_codes[:12])}"
                            + (", ..." if len(palette_codes) > 12 else ""))
        return self.lut[order[pos].astype(np.uint8)]

    def describe_values(self) -> str:
        """The raw mask values this table accepts, for instructions to people making masks."""
        if self.palette is not None:
            colors = self.palette_colors()
            return f"RGB colours of data.palette ({self.num_classes} classes: " + \
                ", ".join(f"{n} {colors[k]}" for k, n in enumerate(self.names[:8]) if k in colors) + \
                (", ..." if self.num_classes > 8 else "") + ")"
        return f"raw values {_ranges(np.flatnonzero(self.known).tolist())} ({self.num_classes} classes: " + \
            ", ".join(self.names[:8]) + (", ..." if self.num_classes > 8 else "") + ")"

    def palette_colors(self) -> dict[int, tuple[int, int, int]]:
        """Each train id's RGB colour in ``data.palette`` (its first palette entry); empty
        without a palette. Instructions name classes by it and previews draw with it."""
        colors: dict[int, tuple[int, int, int]] = {}
        if self.palette is not None:
            for raw, (r, g, b) in enumerate(self.palette.tolist()):
                if self.known[raw] and self.lut[raw] < self.num_classes:
                    colors.setdefault(int(self.lut[raw]), (r, g, b))
        return colors

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassTable):
            return NotImplemented
        return (
            self.names == other.names
            and self.ignore_index == other.ignore_index
            and np.array_equal(self.lut, other.lut)
            and np.array_equal(self.known, other.known)
            and (self.palette is None) == (other.palette is None)
            and (self.palette is None or np.array_equal(self.palette, other.palette))
        )

    def __hash__(self) -> int:
        return hash((self.names, self.ignore_index, self.lut.tobytes(), self.known.tobytes(),
                     None if self.palette is None else self.palette.tobytes()))


def _pack(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 -> H×W int32 codes 0xRRGGBB."""
    rgb = np.asarray(rgb, dtype=np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def _ranges(values: Sequence[int]) -> str:
    """Compact "0-33, 255" rendering of a sorted int list, for error messages."""
    parts: list[str] = []
    start = prev = None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = v
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts) or "none"


def cityscapes_table(ignore_index: int = 255) -> ClassTable:
    """The official Cityscapes labelIds -> 19 trainIds table.

    Built from ``torchvision.datasets.Cityscapes.classes`` (the official ``labels.py`` table), so
    no extra package is needed. labelIds 0..33 are known; those with train_id 255 or -1 map to
    ``ignore_index``. The license-plate label (id -1) never appears in ``*_labelIds.png`` files
    (it cannot be stored in uint8) and is skipped.
    """
    from torchvision.datasets import Cityscapes

    lut = np.full(256, ignore_index, dtype=np.int64)
    known = np.zeros(256, dtype=bool)
    names: dict[int, str] = {}
    for c in Cityscapes.classes:
        if c.id < 0:
            continue
        known[c.id] = True
        if 0 <= c.train_id < 255:
            lut[c.id] = c.train_id
            names[c.train_id] = c.name
        else:
            lut[c.id] = ignore_index
    if sorted(names) != list(range(19)):
        raise RuntimeError(f"unexpected Cityscapes table in torchvision: train ids {sorted(names)}")
    return ClassTable(names=tuple(names[i] for i in range(19)), lut=lut, known=known,
                      ignore_index=ignore_index)


def camvid_table(ignore_index: int = 255) -> ClassTable:
    """CamVid in the SegNet 11-class version: values 0..10 are classes, 11 (void) is ignored."""
    lut = np.full(256, ignore_index, dtype=np.int64)
    known = np.zeros(256, dtype=bool)
    lut[:11] = np.arange(11)
    known[:12] = True
    return ClassTable(names=CAMVID_CLASSES, lut=lut, known=known, ignore_index=ignore_index)


def folder_table(
    names: Sequence[str],
    ignore_index: int = 255,
    id_map: Mapping[int, int] | None = None,
) -> ClassTable:
    """Table for a user's own dataset.

    Without ``id_map`` raw values ``0..n-1`` are the classes and the raw value ``ignore_index``
    means ignore. With ``id_map`` (raw value -> train id or ``ignore_index``) exactly the given raw
    values are known, plus the raw value ``ignore_index`` (-> ignore) unless ``id_map`` maps it.
    Any other raw value in a mask is an error.
    """
    names = tuple(names)
    lut = np.full(256, ignore_index, dtype=np.int64)
    known = np.zeros(256, dtype=bool)
    if not 0 <= ignore_index <= 255:
        raise ValueError(f"ignore_index must be in 0..255, got {ignore_index}")
    known[ignore_index] = True
    if id_map is None:
        if len(names) > 255:
            raise ValueError(f"at most 255 classes fit a uint8 mask, got {len(names)}")
        lut[: len(names)] = np.arange(len(names))
        known[: len(names)] = True
    else:
        for raw, train_id in id_map.items():
            raw, train_id = int(raw), int(train_id)
            if not 0 <= raw <= 255:
                raise ValueError(f"id_map raw value {raw} outside 0..255")
            if not (0 <= train_id < len(names) or train_id == ignore_index):
                raise ValueError(
                    f"id_map maps raw {raw} to {train_id}: expected a train id 0..{len(names) - 1} "
                    f"or ignore_index {ignore_index}"
                )
            lut[raw] = train_id
            known[raw] = True
    return ClassTable(names=names, lut=lut, known=known, ignore_index=ignore_index)


def palette_table(colors: Sequence[tuple[str, Sequence[int]]], classes: Sequence[str] | None = None,
                  ignore_index: int = 255) -> ClassTable:
    """Table for colour (RGB) masks: ``colors`` lists (name, [R, G, B]) pairs in palette order.

    The classes are ``classes`` (each must have a colour) or, when None, every palette name in
    order; a palette colour whose name is not a class (void, background, ...) means ignore. A
    colour that is not in the palette is an error when a mask is read.
    """
    names = [str(n) for n, _ in colors]
    if len(set(names)) != len(names):
        raise ValueError(f"palette names must be unique, got {names}")
    classes = list(classes) if classes is not None else names
    absent = [c for c in classes if c not in names]
    if absent:
        raise ValueError(f"classes {absent} have no colour in the palette (its names: {', '.join(names)})")
    if len(colors) > 256:
        raise ValueError(f"at most 256 palette colours, got {len(colors)}")
    lut = np.full(256, ignore_index, dtype=np.int64)
    known = np.zeros(256, dtype=bool)
    for k, name in enumerate(names):
        known[k] = True
        if name in classes:
            lut[k] = classes.index(name)
    return ClassTable(names=tuple(classes), lut=lut, known=known, ignore_index=ignore_index,
                      palette=np.array([list(c) for _, c in colors]))
