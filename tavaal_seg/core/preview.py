"""What a selection looks like: the task model's predictions on the picks (thumbnails with the
predicted mask overlaid, predicted class shares) and on a sample of the pool, for the HTML
report (:mod:`core.report`), TensorBoard's image grid and Label Studio pre-annotations.

One pass of the frozen task model over the picks (and the pool sample) per selection; the
result is ``selections/cycle_NN.preview.json`` (thumbnails inline as base64 JPEG), written with
the exports, so a report of any past cycle needs neither the data nor the model.
"""
from __future__ import annotations

import base64
import colorsys
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapter import Prediction, TaskAdapter, batch_slices
from .labelstudio import PreAnnotation, pre_annotation_from_mask
from .runtime import Precision
from .state import SelectionRecord

PREVIEW_FORMAT = 1
OVERLAY_ALPHA = 0.45
TENSORBOARD_THUMBNAILS = 64     # the first picks' thumbnails in the TensorBoard grid (event files stay small)


def preview_path(run_dir: Path, cycle: int) -> Path:
    return Path(run_dir) / "selections" / f"cycle_{int(cycle):02d}.preview.json"


def default_colors(n: int) -> list[tuple[int, int, int]]:
    """n well-separated colours (golden-ratio hues, alternating brightness)."""
    out = []
    for k in range(n):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.75, 0.95 if k % 2 == 0 else 0.7)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def class_colors(adapter: TaskAdapter) -> list[tuple[int, int, int]]:
    """The adapter's palette (``class_colors``, e.g. Cityscapes' own), else :func:`default_colors`."""
    colors = getattr(adapter, "class_colors", None)
    n = len(adapter.class_names)
    if colors is not None and len(colors) == n:
        return [tuple(int(v) for v in c) for c in colors]  # type: ignore[misc]
    return default_colors(n)


@torch.inference_mode()
def predict(model: nn.Module, adapter: TaskAdapter, indices: np.ndarray, batch_size: int, precision: Precision,
            device: torch.device, full_size: bool) -> Iterator[tuple[int, Prediction]]:
    """``(pool index, prediction)`` for ``indices`` in order, one batch in memory at a time."""
    model.eval()
    for batch in batch_slices(np.asarray(indices, dtype=np.int64), batch_size):
        start = 0
        for x in adapter.pool_batches(batch, len(batch), device):  # several when the images differ in size
            part, start = batch[start:start + len(x)], start + len(x)
            with precision.autocast():
                logits, _ = model(x)
            yield from zip(part.tolist(), adapter.predict(logits.float(), part, full_size))


def thumbnail(image: np.ndarray, mask: np.ndarray | None, colors: Sequence[tuple[int, int, int]],
              size: int) -> bytes:
    """JPEG of ``image`` (H×W×3 uint8) with ``mask``'s classes overlaid, longest side ``size``."""
    from PIL import Image

    rgb = np.asarray(image, dtype=np.uint8)
    if mask is not None:
        palette = np.zeros((256, 3), dtype=np.float32)
        palette[: len(colors)] = np.asarray(colors, dtype=np.float32)
        painted = mask < len(colors)  # ignore values stay as they are
        blend = rgb.astype(np.float32)
        blend[painted] = (1 - OVERLAY_ALPHA) * blend[painted] + OVERLAY_ALPHA * palette[mask[painted]]
        rgb = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    scale = size / max(im.size)
    target = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    # small images (CIFAR) are enlarged pixel by pixel rather than blurred
    im = im.resize(target, Image.NEAREST if scale >= 2 else Image.LANCZOS)
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _share(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


@dataclass
class Preview:
    document: dict[str, Any]                       # selections/cycle_NN.preview.json
    thumbnails: list[bytes] = field(default_factory=list)
    pre_annotations: dict[str, PreAnnotation] = field(default_factory=dict)


def unpicked_sample(candidates: np.ndarray, picks: np.ndarray, n: int,
                    generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the candidates not picked, a random ``n`` of them in index order): a preview's pool side.
    ``n`` 0 draws nothing from ``generator``."""
    rest = np.setdiff1d(candidates, picks)
    if n == 0:
        return rest, rest[:0]
    return rest, np.sort(rest[torch.randperm(len(rest), generator=generator).numpy()[:n]])


def preview_selection(model: nn.Module, adapter: TaskAdapter, record: SelectionRecord, picks: np.ndarray,
                      pool_sample: np.ndarray, *, batch_size: int, precision: Precision, device: torch.device,
                      score_meaning: str, groups: Sequence[str] | None, thumbnails: bool, thumbnail_size: int,
                      pre_annotations: bool, pool_what: str) -> Preview:
    """Predictions on ``picks`` (aligned with ``record.items``) and ``pool_sample``: the preview
    document, its thumbnails and (``pre_annotations``) the Label Studio pre-annotations."""
    names = list(adapter.class_names)
    colors = class_colors(adapter)
    preview = Preview(document={})
    rows = []
    full_size = thumbnails or pre_annotations
    share_kind = "class"
    for (index, pred), item in zip(predict(model, adapter, picks, batch_size, precision, device, full_size),
                                   record.items):
        row: dict[str, Any] = {"rank": item.rank, "image_id": item.image_id, "path": item.path,
                               "score": float(item.score), "confidence": round(float(pred.confidence), 6),
                               "label": None if pred.label is None else names[pred.label],
                               "class_share": _share(pred.class_share)}
        if groups is not None:
            row["group"] = groups[len(rows)]
        if pred.label is None:
            share_kind = "pixel"
        if thumbnails:
            jpeg = thumbnail(adapter.preview_image(index), pred.mask, colors, thumbnail_size)
            preview.thumbnails.append(jpeg)
            row["thumbnail"] = data_uri(jpeg)
        if pre_annotations:
            preview.pre_annotations[item.image_id] = (
                PreAnnotation(label=pred.label, confidence=float(pred.confidence)) if pred.label is not None
                else pre_annotation_from_mask(pred.mask, len(names)))  # type: ignore[arg-type]
        rows.append(row)
    pool_share = np.zeros(len(names))
    pool_conf = 0.0
    for _, pred in predict(model, adapter, pool_sample, batch_size, precision, device, full_size=False):
        pool_share += pred.class_share
        pool_conf += pred.confidence
    n_pool = len(pool_sample)
    preview.document = {
        "format": PREVIEW_FORMAT, "cycle": record.cycle, "strategy": record.strategy, "score_meaning": score_meaning,
        "pool_version": record.pool_version, "share": share_kind, "class_names": names,
        "class_colors": [list(c) for c in colors], "picks": rows,
        "pool": {"images": n_pool, "what": pool_what,
                 "class_share": _share(pool_share / max(n_pool, 1)) if n_pool else None,
                 "confidence": round(pool_conf / n_pool, 6) if n_pool else None},
    }
    return preview


def tensorboard_grid(thumbnails: Sequence[bytes], columns: int = 8) -> torch.Tensor:
    """3×H×W uint8: the first :data:`TENSORBOARD_THUMBNAILS` thumbnails in rank order, row by row."""
    from PIL import Image
    from torchvision.utils import make_grid

    images = []
    for jpeg in thumbnails[:TENSORBOARD_THUMBNAILS]:
        with Image.open(io.BytesIO(jpeg)) as im:
            images.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
    h = max(t.shape[1] for t in images)
    w = max(t.shape[2] for t in images)
    padded = [torch.nn.functional.pad(t, (0, w - t.shape[2], 0, h - t.shape[1])) for t in images]
    return make_grid(torch.stack(padded), nrow=columns, padding=2, pad_value=255)
