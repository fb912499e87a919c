"""Frame labels of one published video: the instance masks of its current masklets and of its
ground truth as BSON-ready ``Detection`` dicts, and how well each masklet matches the ground truth.

This is where a bulk publish spends its time (not in MongoDB), so it is built for throughput:

- every RLE is decoded once, and a video's frames are decoded together, one pycocotools call per
  masklet or ground-truth object per chunk of frames (chunks keep memory bounded on big videos);
- areas and ground-truth boxes come from one ``cm.area`` / ``cm.toBbox`` call per stack, and the
  overlaps for IoU from one numpy reduction per (masklet, object) pair (no per-frame ``cm.iou``);
- masks are serialized with ``serialize_mask`` (the bytes FiftyOne writes, without ``np.save``'s
  per-call header building).

Masks stay numpy arrays when ``serialize`` is None: the one-at-a-time path of the benchmark builds
``fo.Detection`` objects from the same labels, so both paths share this preparation.
"""
from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["LabelError", "Track", "VideoLabels", "serialize_mask", "video_labels"]

# Decoded pixels held at once per video (masklets + ground-truth objects x frames in a chunk).
_CHUNK_PIXELS = 1 << 26


class LabelError(ValueError):
    """A stored mask does not fit its video (wrong size)."""


@dataclass
class Track:
    """One current masklet as its frame labels need it."""

    frames: dict[int, tuple]  # t -> (rle, (x, y, w, h) in pixels, predicted_iou, object_score)
    attrs: dict[str, Any]     # constant Detection attributes: label, masklet_id, object_id, ...


@dataclass
class VideoLabels:
    masks: dict[int, dict]                  # FiftyOne frame number (t + 1) -> Detections dict
    ground_truth: dict[int, dict] | None    # idem, None without ground truth
    track_gt_iou: list[float | None]        # per track: mean IoU with its matched object
    gt_iou_mean: float | None               # matched mean, unmatched tracks/objects count as 0
    mask_count: int


def _npy_header_numpy(shape: tuple, descr: str) -> bytes:
    with io.BytesIO() as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": descr, "fortran_order": False, "shape": shape})
        return f.getvalue()


def _npy_header_fast(shape: tuple, descr: str) -> bytes:
    """What ``np.save`` writes before the data of a C-ordered array (format 1.0: magic, length,
    the dict's repr with room for the first axis to grow, padded to 64 bytes), built without
    numpy's repr + literal_eval round trip (tens of microseconds a call, for every mask)."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, shape)
    if shape:
        text += " " * (21 - len(repr(shape[0])))
    hlen = len(text) + 1
    pad = 64 - (10 + hlen) % 64
    return (b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen + pad) + text.encode("latin1")
            + b" " * pad + b"\n")


# Checked once against numpy's own header: another numpy layout falls back to numpy's builder.
# Cached: objects keep their size from frame to frame, so crop shapes repeat.
_HEADER_OK = all(_npy_header_fast(s, d) == _npy_header_numpy(s, d)
                 for s, d in (((7, 130), "|b1"), ((1,), "<f4"), ((12345, 3), "|b1")))
_npy_header = lru_cache(maxsize=4096)(_npy_header_fast if _HEADER_OK else _npy_header_numpy)


def serialize_mask(mask: np.ndarray) -> bytes:
    """Byte for byte ``fiftyone.core.utils.serialize_numpy_array`` (zlib over ``np.save``) for a
    plain (non-structured) array of any memory layout (``tobytes`` writes C order, which is what
    the header says), ~3x faster: ``np.save`` rebuilds and validates its header on every call."""
    return zlib.compress(_npy_header(mask.shape, mask.dtype.str) + mask.tobytes())


def _rle_bytes(rle: dict) -> dict:
    c = rle["counts"]
    return {"size": list(rle["size"]), "counts": c.encode("ascii") if isinstance(c, str) else c}


@lru_cache(maxsize=64)
def _empty_rle(h: int, w: int) -> dict:
    import pycocotools.mask as cm

    return cm.encode(np.zeros((h, w), np.uint8, order="F"))


def _coco_rles(rles: list[dict | None], h: int, w: int, where: Callable[[int], str]) -> list[dict]:
    """RLEs (None: empty) in pycocotools' form, sizes checked: pycocotools decodes a list into one
    buffer sized by its first RLE."""
    empty = _empty_rle(h, w)
    out = []
    for k, r in enumerate(rles):
        if r is None:
            out.append(empty)
            continue
        if int(r["size"][0]) != h or int(r["size"][1]) != w:
            raise LabelError(f"{where(k)}: mask is {r['size'][0]}x{r['size'][1]}, "
                             f"the video is {h}x{w}")
        out.append(_rle_bytes(r))
    return out


def _decode(objs: list[dict], h: int, w: int) -> np.ndarray:
    """-> bool[h, w, n] in Fortran order (each frame contiguous), one C call for the list."""
    import pycocotools.mask as cm

    if not objs:
        return np.zeros((h, w, 0), bool, order="F")
    return cm.decode(objs).view(bool)


def _overlap(a: np.ndarray, b: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """Pixels in both, per frame, for two bool[h, w, n] Fortran stacks (summing bytes over
    contiguous frames is ~1.5x faster than a bool sum over two axes)."""
    h, w, n = a.shape
    np.logical_and(a, b, out=buf)
    return buf.view(np.uint8).reshape(h * w, n, order="F").sum(axis=0, dtype=np.int64)


def _crop(stack: np.ndarray, k: int, box: Sequence[float]) -> np.ndarray:
    """Frame ``k`` of a stack inside ``box`` (a view: serializing copies it once, in C order)."""
    x, y, w, h = map(round, box)
    return stack[y:y + max(h, 1), x:x + max(w, 1), k]


def video_labels(tracks: Sequence[Track], gt: dict | None, n_frames: int, width: int,
                 height: int, serialize: Callable[[np.ndarray], Any] | None = serialize_mask
                 ) -> VideoLabels:
    """Frame labels of a video with ``n_frames`` frames of ``width`` x ``height``: a Detection per
    track per frame where its box is not empty, and per ground-truth object per frame where its
    mask is not empty; tracks are matched to ground-truth objects (Hungarian on mean IoU over the
    frames, a frame empty in both counting as 1, the DAVIS convention) and their detections carry
    ``gt_iou`` (the frame's IoU) when matched."""
    import pycocotools.mask as cm
    from bson import ObjectId
    from scipy.optimize import linear_sum_assignment

    ser = serialize or np.ascontiguousarray
    W, H = float(width), float(height)
    objs = gt["objects"] if gt is not None else []
    n, m = len(tracks), len(objs)
    ious = np.zeros((n, m, n_frames))
    gt_dets: dict[int, list] = {t: [] for t in range(n_frames)} if gt is not None else {}
    crops: dict[tuple[int, int], Any] = {}  # (track, t) -> its mask crop, serialized
    per_chunk = max(1, _CHUNK_PIXELS // max(1, width * height * (n + m)))
    for t0 in range(0, n_frames, per_chunk):
        ts = range(t0, min(n_frames, t0 + per_chunk))
        d_stacks, d_area, g_stacks, g_area = [], [], [], []
        for i, tr in enumerate(tracks):
            objs_i = _coco_rles(
                [tr.frames[t][0] if t in tr.frames else None for t in ts], height, width,
                lambda k, i=i: f"masklet {tracks[i].attrs.get('masklet_id')} frame {ts[k]}")
            st = _decode(objs_i, height, width)
            if m:
                d_stacks.append(st)
                d_area.append(cm.area(objs_i).astype(np.int64))
            for k, t in enumerate(ts):
                f = tr.frames.get(t)
                if f is not None and f[1][2] > 0 and f[1][3] > 0:
                    crops[i, t] = ser(_crop(st, k, f[1]))
        for j, o in enumerate(objs):
            masks = o["masks"]
            objs_j = _coco_rles(
                [masks[t] if t < len(masks) else None for t in ts], height, width,
                lambda k, j=j: f"ground-truth object {objs[j].get('object_id')} frame {ts[k]}")
            st = _decode(objs_j, height, width)
            label, oid = str(o.get("label", "object")), int(o["object_id"])
            for k, (x, y, bw, bh) in enumerate(cm.toBbox(objs_j).tolist()):
                if bw <= 0 or bh <= 0:
                    continue
                gt_dets[ts[k]].append({
                    "_id": ObjectId(), "_cls": "Detection", "tags": [], "label": label,
                    "bounding_box": [x / W, y / H, bw / W, bh / H],
                    "mask": ser(_crop(st, k, (x, y, bw, bh))), "object_id": oid})
            if n:
                g_stacks.append(st)
                g_area.append(cm.area(objs_j).astype(np.int64))
        if n and m:
            buf = np.empty_like(d_stacks[0])
            for i in range(n):
                for j in range(m):
                    inter = _overlap(d_stacks[i], g_stacks[j], buf)
                    union = d_area[i] + g_area[j] - inter
                    ious[i, j, ts.start:ts.stop] = np.where(
                        union > 0, inter / np.maximum(union, 1), 1.0)
    # Match (no ground truth: nothing to match; one side empty: everything is unmatched).
    track_gt_iou: list[float | None] = [None] * n
    matched: dict[int, int] = {}
    gt_mean = None
    if gt is not None and (n or m):
        mean = ious.mean(axis=2) if n_frames else ious.sum(axis=2)
        rows, cols = linear_sum_assignment(-mean) if mean.size else ([], [])
        scores = []
        for r, c in zip(rows, cols):
            track_gt_iou[r] = float(mean[r, c])
            matched[int(r)] = int(c)
            scores.append(track_gt_iou[r])
        unmatched = max(n, m) - len(scores)
        gt_mean = float(sum(scores) / (len(scores) + unmatched)) if (scores or unmatched) else None

    masks: dict[int, dict] = {}
    count = 0
    for t in range(n_frames):
        dets = []
        for i, tr in enumerate(tracks):
            crop = crops.get((i, t))
            if crop is None:
                continue
            _, (bx, by, bw, bh), piou, score = tr.frames[t]
            d = {"_id": ObjectId(), "_cls": "Detection", "tags": [], **tr.attrs,
                 "bounding_box": [bx / W, by / H, bw / W, bh / H], "mask": crop,
                 "confidence": piou, "predicted_iou": piou, "object_score": score}
            if i in matched:
                d["gt_iou"] = float(ious[i, matched[i], t])
            dets.append(d)
        count += len(dets)
        masks[t + 1] = {"_cls": "Detections", "detections": dets}
    ground_truth = ({t + 1: {"_cls": "Detections", "detections": gt_dets[t]}
                     for t in range(n_frames)} if gt is not None else None)
    return VideoLabels(masks, ground_truth, track_gt_iou, gt_mean, count)
