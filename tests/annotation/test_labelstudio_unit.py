"""Label Studio adapter pieces that need no server: configs, task payloads, validation."""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from annotation.labelstudio import (
    CORRECTION,
    VERIFICATION,
    AnnotationInvalid,
    build_label_config,
    build_task_payload,
    chunk_ranges,
    frames_changed,
    idempotency_key,
    local_file_url,
    task_spec_from_data,
    validate_result,
    write_frames,
)
from storage.masks import mask_to_brush
from tests.annotation.ls_helpers import make_chunk, stack


def test_label_config_has_one_label_and_one_verdict_per_slot():
    for kind, choices in ((CORRECTION, {"fixed", "reject", "unsure"}),
                          (VERIFICATION, {"satisfactory", "unsatisfactory"})):
        root = ET.fromstring(build_label_config(kind, 3))
        img = root.find("Image")
        assert img.get("name") == "frames" and img.get("valueList") == "$frames"
        brush = root.find("BrushLabels")
        assert brush.get("name") == "mask" and brush.get("toName") == "frames"
        assert [lab.get("value") for lab in brush.findall("Label")] == ["object_1", "object_2", "object_3"]
        verdicts = root.findall(".//Choices")
        assert [v.get("name") for v in verdicts] == [f"verdict_object_{s}" for s in (1, 2, 3)]
        assert all(v.get("toName") == "frames" for v in verdicts)
        assert {c.get("value") for c in verdicts[0].findall("Choice")} == choices
    with pytest.raises(ValueError, match="unknown round kind"):
        build_label_config("review", 2)
    with pytest.raises(ValueError):
        build_label_config(CORRECTION, 0)


def test_keys_ranges_urls():
    assert idempotency_key("ds", "v1", 3, 2, CORRECTION) == "ls/ds/v1/c00003/r2/correction"
    with pytest.raises(ValueError):
        idempotency_key("ds", "a/b", 0, 0, CORRECTION)
    assert chunk_ranges(70, 32) == [(0, 32), (32, 64), (64, 70)]
    assert chunk_ranges(0, 32) == []
    assert local_file_url("ds/v 1/f000001.png") == "/data/local-files/?d=ds/v%201/f000001.png"


def test_write_frames(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 8, 10, 3), dtype=np.uint8)
    urls = write_frames(frames, tmp_path, "ds/vid", first_index=32)
    assert urls[0] == "/data/local-files/?d=ds/vid/f000032.png"
    from PIL import Image
    assert (np.asarray(Image.open(tmp_path / "ds/vid/f000033.png")) == frames[1]).all()
    with pytest.raises(ValueError):
        write_frames(frames, tmp_path, "../escape")


def test_payload_has_one_brush_prediction_per_frame_and_object():
    chunk = make_chunk(n_frames=5, n_objects=3)
    p = build_task_payload(chunk)
    assert p["data"]["idempotency_key"] == chunk.key
    assert p["data"]["frames"] == chunk.frame_urls
    pred = p["predictions"][0]
    assert pred["model_version"] == "sam2-test-1" and pred["score"] == 0.75
    assert len(pred["result"]) == 15
    assert sorted((r["value"]["brushlabels"][0], r["item_index"]) for r in pred["result"]) == sorted(
        (f"object_{s}", t) for s in (1, 2, 3) for t in range(5))
    # round trip through our own validation is pixel-exact
    v = validate_result(pred["result"], task_spec_from_data(p["data"]))
    for s in (1, 2, 3):
        assert (v.masks[s] == stack(chunk.predicted, s, 5)).all()
    assert frames_changed(v, {s: stack(chunk.predicted, s, 5) for s in (1, 2, 3)}) == {1: 0, 2: 0, 3: 0}


def test_payloads_are_encoded_compact_and_batched_by_count_masks_and_bytes():
    import json

    from annotation.labelstudio.client import encode_task
    from annotation.labelstudio.importer import ImportReport, _encoded_batches

    chunk = make_chunk(n_frames=2, n_objects=1)
    p = build_task_payload(chunk)
    body = encode_task({**p, "extra": np.int64(7), "label": "ü"})
    assert body.decode() == json.dumps({**p, "extra": 7, "label": "ü"}, separators=(",", ":"),
                                       ensure_ascii=False)
    with pytest.raises(ValueError):  # as httpx's json= refused NaN before
        encode_task({"score": float("nan")})

    chunks = [make_chunk(chunk_index=c, n_frames=2, n_objects=1) for c in range(7)]
    size = len(encode_task(build_task_payload(chunks[0])))

    def sizes(**limits):
        rep = ImportReport(project_id=1)
        args = {"batch_size": 100, "max_masks": 10**6, "max_bytes": 10**9, **limits}
        out = list(_encoded_batches(chunks, args["batch_size"], args["max_masks"],
                                    args["max_bytes"], False, rep))
        assert [k for b in out for k in b] == [c.key for c in chunks]  # order kept
        assert rep.encode_seconds > 0
        return [len(b) for b in out]

    assert sizes(batch_size=3) == [3, 3, 1]
    assert sizes(max_masks=5) == [2, 2, 2, 1]  # two masks per chunk
    assert sizes(max_bytes=int(2.5 * (size + 1))) == [2, 2, 2, 1]
    assert sizes(max_bytes=10) == [1] * 7  # a task larger than the limit goes alone


def _good():
    chunk = make_chunk(n_frames=4, n_objects=2)
    p = build_task_payload(chunk)
    return chunk, task_spec_from_data(p["data"]), p["predictions"][0]["result"]


def test_regions_of_one_object_on_one_frame_are_merged_and_alpha_thresholded():
    chunk, spec, result = _good()
    H, W = spec.height, spec.width
    extra = np.zeros((H, W), bool)
    extra[40:44, 50:60] = True
    item = copy.deepcopy(result[0])  # object_1, frame 0
    item["value"]["rle"] = mask_to_brush(extra)
    item["id"] = "stroke-without-region"
    # a UI edge: alpha 100 (below the threshold) on one more pixel row
    from label_studio_sdk.converter.brush import encode_rle
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[30, :, 3] = 100
    rgba[31, :, 3] = 200
    edge = copy.deepcopy(result[0])
    edge["value"]["rle"] = [int(b) for b in encode_rle(rgba.ravel())]
    v = validate_result(result + [item, edge], spec)
    expect = chunk.predicted[(1, 0)] | extra
    expect[31, :] = True
    assert (v.masks[1][0] == expect).all()
    assert v.merged == 2 and v.regions == len(result) + 2


@pytest.mark.badinput
@pytest.mark.parametrize("mutate, code", [
    (lambda r: r[0].__setitem__("item_index", 999), "bad_frame"),
    (lambda r: r[0].pop("item_index"), "bad_frame"),
    (lambda r: r[0]["value"].__setitem__("brushlabels", ["object_7"]), "unknown_label"),
    (lambda r: r[0]["value"].__setitem__("brushlabels", ["person"]), "unknown_label"),
    (lambda r: r[0].__setitem__("from_name", "tag"), "bad_name"),
    (lambda r: r[0]["value"].__setitem__("rle", mask_to_brush(np.zeros((10, 10), bool))), "bad_size"),
    (lambda r: r[0].__setitem__("original_width", 65), "bad_size"),
    (lambda r: r[0]["value"].__setitem__("rle", [1, 2, 3]), "bad_rle"),
    (lambda r: r[0]["value"].__setitem__("rle", r[0]["value"]["rle"][:20]), "bad_rle"),
    (lambda r: r[0]["value"].__setitem__("rle", "abc"), "bad_rle"),
    (lambda r: r[0].__setitem__("value", None), "bad_item"),
    (lambda r: r.append("oops"), "bad_item"),
    (lambda r: r.append({"type": "rectanglelabels", "value": {}}), "bad_type"),
    (lambda r: r.append({"type": "choices", "from_name": "verdict_object_1", "to_name": "frames",
                         "value": {"choices": ["maybe"]}}), "bad_verdict"),
    (lambda r: r.append({"type": "choices", "from_name": "verdict_object_9", "to_name": "frames",
                         "value": {"choices": ["fixed"]}}), "bad_name"),
])
def test_bad_results_are_rejected_whole(mutate, code):
    _, spec, result = _good()
    bad = copy.deepcopy(result)
    mutate(bad)
    with pytest.raises(AnnotationInvalid) as ei:
        validate_result(bad, spec, task_id=5)
    assert code in {i.code for i in ei.value.issues}, ei.value.issues
    assert "task 5" in str(ei.value)


@pytest.mark.badinput
def test_every_issue_is_reported_and_verification_needs_all_verdicts():
    chunk = make_chunk(kind=VERIFICATION, n_objects=2)
    p = build_task_payload(chunk)
    spec = task_spec_from_data(p["data"])
    res = copy.deepcopy(p["predictions"][0]["result"])
    res[0]["item_index"] = -1
    res[1]["value"]["brushlabels"] = ["nope"]
    res.append({"type": "choices", "from_name": "verdict_object_1", "to_name": "frames",
                "value": {"choices": ["satisfactory"]}})
    with pytest.raises(AnnotationInvalid) as ei:
        validate_result(res, spec)
    assert {i.code for i in ei.value.issues} == {"bad_frame", "unknown_label", "missing_verdict"}
    ok = p["predictions"][0]["result"] + [
        {"type": "choices", "from_name": f"verdict_object_{s}", "to_name": "frames",
         "value": {"choices": [c]}} for s, c in ((1, "satisfactory"), (2, "unsatisfactory"))]
    assert validate_result(ok, spec).verdicts == {1: "satisfactory", 2: "unsatisfactory"}
    with pytest.raises(AnnotationInvalid, match="not a list"):
        validate_result({"result": []}, spec)


@pytest.mark.badinput
def test_bad_task_data_is_reported():
    p = build_task_payload(make_chunk())
    for mutate in (lambda d: d.pop("objects"), lambda d: d.__setitem__("frame_stop", 99),
                   lambda d: d.__setitem__("kind", "x"), lambda d: d.__setitem__("width", -1)):
        d = copy.deepcopy(p["data"])
        mutate(d)
        with pytest.raises(AnnotationInvalid, match="bad_task_data"):
            task_spec_from_data(d)
