"""Frame labels for the FiftyOne publish (``annotation.fiftyone.labels``), against plain
references: ``np.save`` + zlib for the mask bytes, per-frame pycocotools for boxes, crops and IoU.
No MongoDB needed."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pycocotools.mask as cm
import pytest
from scipy.optimize import linear_sum_assignment

from annotation.fiftyone import labels as L
from storage.masks import encode_rle


def _np_save_zlib(a: np.ndarray) -> bytes:  # what fiftyone.core.utils.serialize_numpy_array does
    with io.BytesIO() as f:
        np.save(f, np.asarray(a), allow_pickle=False)
        return zlib.compress(f.getvalue())


@pytest.mark.parametrize("shape", [(1, 1), (0, 5), (5, 0), (37, 96), (1, 1000), (7,), (2, 3, 4),
                                   (123456, 2)])
def test_serialize_mask_is_byte_for_byte_fiftyones(shape):
    rng = np.random.default_rng(0)
    for a in (rng.random(shape) > 0.5, rng.random(shape).astype("<f4")):
        assert L.serialize_mask(a) == _np_save_zlib(a)
    if len(shape) == 2 and min(shape) > 1:  # a non-contiguous view is written in C order
        view = np.asfortranarray(rng.random((shape[0] + 3, shape[1] + 2)) > 0.5)[1:-2, 2:]
        assert L.serialize_mask(view) == _np_save_zlib(np.ascontiguousarray(view))
        back = np.load(io.BytesIO(zlib.decompress(L.serialize_mask(view))))
        assert np.array_equal(back, view)


def _video(seed: int, frames: int, h: int, w: int, tracks: int, objects: int):
    """Random boxes as masks; some frames absent, some empty, GT objects beyond the tracks."""
    rng = np.random.default_rng(seed)

    def mask():
        m = np.zeros((h, w), bool)
        if rng.random() < 0.15:
            return m
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        m[y:y + rng.integers(1, h - y), x:x + rng.integers(1, w - x)] = True
        return m

    gt = {"height": h, "width": w, "objects": [
        {"object_id": 10 + j, "label": f"obj{j}",
         "masks": [encode_rle(mask()) for _ in range(frames - (j % 2))]}  # one ends a frame early
        for j in range(objects)]}
    tr = []
    for i in range(tracks):
        fr = {}
        for t in range(frames):
            if rng.random() < 0.2:
                continue  # absent on this frame
            m = mask()
            box = tuple(float(v) for v in cm.toBbox(cm.encode(np.asfortranarray(m, np.uint8))))
            fr[t] = (encode_rle(m), box, float(rng.random()), float(rng.random()))
        tr.append(L.Track(fr, {"label": f"t{i}", "masklet_id": 100 + i, "object_id": 10 + i}))
    return tr, gt


def _reference(tracks, gt, n_frames, w, h):
    """The per-frame way: cm.iou / cm.area per frame, decode + crop per mask."""
    def rb(r):
        return {"size": r["size"], "counts": r["counts"].encode()}

    empty = cm.encode(np.zeros((h, w), np.uint8, order="F"))
    objs = gt["objects"]
    ious = np.zeros((len(tracks), len(objs), n_frames))
    for t in range(n_frames):
        gts = [rb(o["masks"][t]) if t < len(o["masks"]) else empty for o in objs]
        dts = [rb(m.frames[t][0]) if t in m.frames else empty for m in tracks]
        ious[:, :, t] = cm.iou(dts, gts, [0] * len(gts))
        both = (cm.area(dts)[:, None] == 0) & (cm.area(gts)[None, :] == 0)
        ious[:, :, t][both] = 1.0
    mean = ious.mean(axis=2)
    rows, cols = linear_sum_assignment(-mean)
    matched = dict(zip(rows.tolist(), cols.tolist()))
    scores = [mean[r, c] for r, c in matched.items()]
    gt_mean = sum(scores) / (len(scores) + max(len(tracks), len(objs)) - len(scores))
    masks, gts = {}, {}
    for t in range(n_frames):
        dets = []
        for i, m in enumerate(tracks):
            if t in m.frames and m.frames[t][1][2] > 0 and m.frames[t][1][3] > 0:
                x, y, bw, bh = (int(round(v)) for v in m.frames[t][1])
                crop = cm.decode(rb(m.frames[t][0])).astype(bool)[y:y + bh, x:x + bw]
                dets.append((m.attrs["masklet_id"], [x / w, y / h, bw / w, bh / h], crop,
                             ious[i, matched[i], t] if i in matched else None))
        masks[t + 1] = dets
        gdets = []
        for o in objs:
            if t < len(o["masks"]):
                x, y, bw, bh = (int(v) for v in cm.toBbox(rb(o["masks"][t])))
                if bw > 0 and bh > 0:
                    crop = cm.decode(rb(o["masks"][t])).astype(bool)[y:y + bh, x:x + bw]
                    gdets.append((o["object_id"], [x / w, y / h, bw / w, bh / h], crop))
        gts[t + 1] = gdets
    return masks, gts, [float(mean[i, matched[i]]) if i in matched else None
                        for i in range(len(tracks))], gt_mean


@pytest.mark.parametrize("chunk_pixels", [L._CHUNK_PIXELS, 1])  # 1: one frame per chunk
@pytest.mark.parametrize("tracks,objects", [(2, 2), (3, 2), (1, 3)])
def test_video_labels_match_the_per_frame_reference(monkeypatch, chunk_pixels, tracks, objects):
    monkeypatch.setattr(L, "_CHUNK_PIXELS", chunk_pixels)
    h, w, n = 24, 31, 9
    tr, gt = _video(tracks * 10 + objects, n, h, w, tracks, objects)
    out = L.video_labels(tr, gt, n, w, h)
    ref_masks, ref_gt, ref_track_iou, ref_mean = _reference(tr, gt, n, w, h)
    assert out.track_gt_iou == pytest.approx(ref_track_iou)
    assert out.gt_iou_mean == pytest.approx(ref_mean)
    assert out.mask_count == sum(len(d) for d in ref_masks.values())
    for fn in range(1, n + 1):
        got = out.masks[fn]["detections"]
        assert [d["masklet_id"] for d in got] == [r[0] for r in ref_masks[fn]]
        for d, (_, box, crop, iou) in zip(got, ref_masks[fn]):
            assert d["bounding_box"] == pytest.approx(box)
            assert d["mask"] == _np_save_zlib(crop)
            assert d.get("gt_iou") == (pytest.approx(iou) if iou is not None else None)
        got = out.ground_truth[fn]["detections"]
        assert [d["object_id"] for d in got] == [r[0] for r in ref_gt[fn]]
        for d, (_, box, crop) in zip(got, ref_gt[fn]):
            assert d["bounding_box"] == pytest.approx(box) and d["mask"] == _np_save_zlib(crop)


def test_video_labels_without_ground_truth_and_unserialized():
    h, w, n = 16, 20, 5
    tr, _ = _video(3, n, h, w, 2, 0)
    out = L.video_labels(tr, None, n, w, h, serialize=None)
    assert out.ground_truth is None and out.gt_iou_mean is None
    assert out.track_gt_iou == [None, None]
    dets = [d for f in out.masks.values() for d in f["detections"]]
    assert dets and all(isinstance(d["mask"], np.ndarray) and d["mask"].flags.c_contiguous
                        for d in dets)
    assert all("gt_iou" not in d for d in dets)


def test_a_mask_of_the_wrong_size_is_a_clear_error():
    tr, gt = _video(1, 3, 12, 12, 1, 1)
    t = next(iter(tr[0].frames))
    rle, box, piou, score = tr[0].frames[t]
    tr[0].frames[t] = (encode_rle(np.zeros((12, 13), bool)), box, piou, score)
    with pytest.raises(L.LabelError,
                       match=f"masklet 100 frame {t}: mask is 12x13, the video is 12x12"):
        L.video_labels(tr, gt, 3, 12, 12)
