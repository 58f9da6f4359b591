"""Label Studio pre-annotations: the brush RLE (against bytes label-studio-converter's encoder
wrote, and decoded back), and the shape of the predictions Label Studio imports."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tavaal_seg.core.export import ExportContext, render_export
from tavaal_seg.core.labelstudio import (
    PreAnnotation,
    brush_rle_to_mask,
    decode_brush_rle,
    encode_brush_rle,
    labeling_config,
    mask_to_brush_rle,
    pre_annotation_from_mask,
)
from tavaal_seg.core.state import SelectedItem, SelectionRecord

# Written by label-studio-converter 0.0.59 (brush.mask2rle / brush.encode_rle) for the inputs below
GOLDEN_MASK = [0, 0, 0, 48, 57, 27, 254, 19, 0, 159, 254, 248, 4, 127, 224]
GOLDEN_ARRAY = [0, 0, 0, 14, 57, 27, 252, 64, 160, 3, 217, 1, 0]


def golden_mask() -> np.ndarray:
    m = np.zeros((3, 4), dtype=bool)
    m[1, 1:3] = True
    m[2, 3] = True
    return m


def test_encoder_writes_the_converters_bytes():
    assert mask_to_brush_rle(golden_mask()) == GOLDEN_MASK
    # a run of 3, a single value (a literal), a run of 10: three field widths
    assert encode_brush_rle(np.array([5, 5, 5, 7] + [1] * 10)) == GOLDEN_ARRAY


@pytest.mark.parametrize("shape,density", [((1, 1), 1.0), ((3, 5), 0.5), ((37, 53), 0.2), ((360, 480), 0.0),
                                           ((300, 500), 1.0), ((257, 263), 0.01)])
def test_masks_decode_back_exactly(shape, density):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < density
    if density not in (0.0, 1.0):
        mask[: shape[0] // 2, : shape[1] // 3] = True  # long runs too
    rle = mask_to_brush_rle(mask)
    assert all(isinstance(b, int) and 0 <= b <= 255 for b in rle)
    assert np.array_equal(brush_rle_to_mask(rle, *shape), mask)
    # runs past 65,536 elements (300x500x4 all set) are split into pieces and still decode
    flat = decode_brush_rle(rle)
    assert flat.size == mask.size * 4 and set(np.unique(flat).tolist()) <= {0, 255}


def test_arrays_with_literals_and_long_runs_round_trip():
    rng = np.random.default_rng(0)
    for n in (1, 2, 9, 17, 257, 65_536, 65_537, 140_001):
        a = rng.integers(0, 4, n)
        a[n // 3:] = 200
        assert np.array_equal(decode_brush_rle(encode_brush_rle(a)), a)


def test_bad_rle_and_bad_masks_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        mask_to_brush_rle(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="8-bit"):
        encode_brush_rle(np.array([256]))
    with pytest.raises(ValueError, match="not 4x4x4"):
        brush_rle_to_mask(GOLDEN_MASK, 4, 4)
    with pytest.raises(ValueError, match="middle of a run"):
        decode_brush_rle(GOLDEN_MASK[:6])


def _task(pre: PreAnnotation, classes: tuple[str, ...], **ctx) -> dict:
    record = SelectionRecord(3, "tavaal", [SelectedItem(1, "aachen_000001_000019", "leftImg8bit/a.png", 0.25)])
    text = render_export(record, "labelstudio", ExportContext(class_names=classes,
                                                              pre_annotations={"aachen_000001_000019": pre}, **ctx))
    (task,) = json.loads(text)
    return task


def test_segmentation_predictions_have_label_studios_import_shape():
    """Label Studio's documented pre-annotation JSON: a task with ``data`` and ``predictions``
    [{model_version, score, result}], each brush result {id, from_name, to_name, type
    'brushlabels', original_width, original_height, image_rotation, value {format 'rle', rle,
    brushlabels}} (labelstud.io: guide/predictions, tags/brushlabels)."""
    classes = ("road", "car", "sky")
    mask = np.zeros((6, 9), dtype=np.uint8)
    mask[:2] = 2
    mask[3:, 4:] = 1
    mask[5, 0] = 255  # an ignore value gets no layer
    task = _task(pre_annotation_from_mask(mask, len(classes)), classes)
    assert set(task) == {"data", "predictions"} and task["data"]["image"].startswith("/data/local-files/?d=")
    (prediction,) = task["predictions"]
    assert set(prediction) == {"model_version", "score", "result"}
    assert prediction["model_version"] == "tavaal-tavaal-cycle03" and prediction["score"] == 1.0
    results = prediction["result"]
    assert [r["value"]["brushlabels"] for r in results] == [["road"], ["car"], ["sky"]]
    for r in results:
        assert set(r) == {"id", "from_name", "to_name", "type", "original_width", "original_height",
                          "image_rotation", "value"}
        assert (r["from_name"], r["to_name"], r["type"]) == ("tag", "image", "brushlabels")
        assert (r["original_width"], r["original_height"], r["image_rotation"]) == (9, 6, 0)
        assert set(r["value"]) == {"format", "rle", "brushlabels"} and r["value"]["format"] == "rle"
        k = classes.index(r["value"]["brushlabels"][0])
        assert np.array_equal(brush_rle_to_mask(r["value"]["rle"], 6, 9), mask == k)
    assert len({r["id"] for r in results}) == len(results)


def test_classification_prediction_is_a_choice_with_its_confidence():
    task = _task(PreAnnotation(label=1, confidence=0.8125), ("cat", "dog"), labelstudio_from_name="label",
                 labelstudio_to_name="img")
    assert task["predictions"][0]["result"] == [{"id": "tavaal-choice", "from_name": "label", "to_name": "img",
                                                 "type": "choices", "value": {"choices": ["dog"]}, "score": 0.8125}]


def test_labeling_config_matches_the_names_the_results_use():
    root = ET.fromstring(labeling_config(["road", 'a "quoted" & <odd> class'], brush=True))
    image, brush = list(root)
    assert (image.tag, image.get("name"), image.get("value")) == ("Image", "image", "$image")
    assert (brush.tag, brush.get("name"), brush.get("toName")) == ("BrushLabels", "tag", "image")
    assert [c.get("value") for c in brush] == ["road", 'a "quoted" & <odd> class']
    choices = ET.fromstring(labeling_config(["cat"], brush=False, from_name="label"))[1]
    assert (choices.tag, choices.get("name"), choices[0].tag) == ("Choices", "label", "Choice")
