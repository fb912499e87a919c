"""Held-out evaluation of a SAM 2 model on synthetic videos with exact ground truth.

Metrics (DAVIS conventions: a frame where both ground truth and prediction are empty scores 1):
- `j_mask`: region similarity J (IoU), first-frame mask prompt, mean over frames 1..T-1 per object,
  then over objects; `f_mask`: contour accuracy F (boundary F-measure, DAVIS tolerance 0.008 of the
  image diagonal); `jf_mask` = (J + F) / 2.
- `j_box`: J with a first-frame box prompt (the tight box of the first-frame mask).
- `baseline_j`: copy the first-frame mask to every frame.
- `auto_recall`: share of ground-truth objects matched by an automatic masklet with mean J >= 0.5
  over all frames.
- `iou_spearman`: rank correlation of the IoU head's estimate vs the true IoU per frame
  (mask-prompted tracking, frames 1..T-1 where the object is present).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.stats import spearmanr

from models.sam2.automatic import AutoConfig, AutomaticMasklets, track_prompts
from models.sam2.predict import FrameSource, Prompt, VideoSegmenter
from storage.masks import decode_rle
from storage.synthetic.videos import SyntheticVideo, generate_videos

MIN_PROMPT_AREA = 16


@dataclass(frozen=True)
class EvalSpec:
    seed: int
    videos: int = 10
    domain: str = "target"
    size: int = 128
    frames: int = 24
    objects: int = 3
    difficulty: float = 1.0
    auto: bool = True


def j_score(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def _boundary(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.zeros_like(mask)
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), border_value=0)
    return mask & ~eroded


def f_score(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS contour accuracy: precision/recall of boundary pixels within a tolerance band."""
    tol = max(1, int(math.ceil(bound_th * math.hypot(*gt.shape))))
    pb, gb = _boundary(pred), _boundary(gt)
    if not pb.any() and not gb.any():
        return 1.0
    if not pb.any() or not gb.any():
        return 0.0
    disk = np.hypot(*np.mgrid[-tol:tol + 1, -tol:tol + 1]) <= tol
    gd = ndimage.binary_dilation(gb, structure=disk)
    pd = ndimage.binary_dilation(pb, structure=disk)
    precision = np.count_nonzero(pb & gd) / np.count_nonzero(pb)
    recall = np.count_nonzero(gb & pd) / np.count_nonzero(gb)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _track_masks(segmenter: VideoSegmenter, source: FrameSource, prompts: list[Prompt], where: str):
    """Returns {object_id: (masks bool [T,H,W], pred_iou [T])}."""
    masklets = track_prompts(segmenter, source, prompts, where)
    out = {}
    t_total = len(source)
    for oid, m in masklets.items():
        masks = np.zeros((t_total, source.video_height, source.video_width), dtype=bool)
        ious = np.full(t_total, np.nan, dtype=np.float32)
        for t, rle in m.rles.items():
            masks[t] = decode_rle(rle)
            ious[t] = m.pred_iou.get(t, np.nan)
        out[oid] = (masks, ious)
    return out


def evaluate_video(segmenter: VideoSegmenter, video: SyntheticVideo, auto: AutomaticMasklets | None):
    gt = video.masks  # [T,O,H,W]
    t_total, n_obj = gt.shape[:2]
    source = segmenter.frame_source(video.frames, video.name)
    prompted = [k for k in range(n_obj) if gt[0, k].sum() >= MIN_PROMPT_AREA]
    res = {"j_mask": [], "f_mask": [], "j_box": [], "baseline_j": [], "iou_pairs": [], "auto": []}
    if prompted and t_total > 1:
        mask_prompts = [Prompt(object_id=k + 1, frame_index=0, mask=gt[0, k]) for k in prompted]
        box_prompts = [Prompt(object_id=k + 1, frame_index=0, box=box_of(gt[0, k])) for k in prompted]
        by_mask = _track_masks(segmenter, source, mask_prompts, video.name)
        by_box = _track_masks(segmenter, source, box_prompts, video.name)
        for k in prompted:
            pm, pious = by_mask[k + 1]
            pb, _ = by_box[k + 1]
            js = [j_score(pm[t], gt[t, k]) for t in range(1, t_total)]
            res["j_mask"].append(float(np.mean(js)))
            res["f_mask"].append(float(np.mean([f_score(pm[t], gt[t, k]) for t in range(1, t_total)])))
            res["j_box"].append(float(np.mean([j_score(pb[t], gt[t, k]) for t in range(1, t_total)])))
            res["baseline_j"].append(float(np.mean([j_score(gt[0, k], gt[t, k]) for t in range(1, t_total)])))
            for t in range(1, t_total):
                if gt[t, k].any() and not np.isnan(pious[t]):
                    res["iou_pairs"].append((float(pious[t]), js[t - 1]))
    if auto is not None:
        masklets = auto.run(source, where=video.name)
        decoded = []
        for m in masklets.values():
            arr = np.zeros((t_total, source.video_height, source.video_width), dtype=bool)
            for t, rle in m.rles.items():
                arr[t] = decode_rle(rle)
            decoded.append(arr)
        for k in range(n_obj):
            if not gt[:, k].any():
                continue
            best = 0.0
            for arr in decoded:
                best = max(best, float(np.mean([j_score(arr[t], gt[t, k]) for t in range(t_total)])))
            res["auto"].append(best)
    return res


def evaluate(segmenter: VideoSegmenter, spec: EvalSpec, model_version: str | None = None,
             auto_cfg: AutoConfig = AutoConfig(),
             on_video: Callable[[int, int], None] | None = None) -> dict:
    started = time.time()
    videos = generate_videos(spec.seed, spec.videos, domain=spec.domain, size=spec.size,
                             frames=spec.frames, objects=spec.objects, difficulty=spec.difficulty)
    auto = AutomaticMasklets(segmenter, auto_cfg) if spec.auto else None
    agg: dict[str, list] = {"j_mask": [], "f_mask": [], "j_box": [], "baseline_j": [], "iou_pairs": [], "auto": []}
    for i, v in enumerate(videos):
        r = evaluate_video(segmenter, v, auto)
        for key in agg:
            agg[key].extend(r[key])
        if on_video:
            on_video(i + 1, len(videos))

    def mean(key):
        return round(float(np.mean(agg[key])), 4) if agg[key] else None

    j, f = mean("j_mask"), mean("f_mask")
    pairs = np.asarray(agg["iou_pairs"], dtype=float)
    rho = None
    if len(pairs) >= 3 and np.std(pairs[:, 0]) > 0 and np.std(pairs[:, 1]) > 0:
        rho = round(float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic), 4)
    auto_recall = (round(float(np.mean(np.asarray(agg["auto"]) >= 0.5)), 4) if agg["auto"] else None)
    return {
        "j_mask": j,
        "f_mask": f,
        "jf_mask": round((j + f) / 2, 4) if j is not None and f is not None else None,
        "j_box": mean("j_box"),
        "baseline_j": mean("baseline_j"),
        "auto_recall": auto_recall,
        "iou_spearman": rho,
        "model_version": model_version,
        "seed": spec.seed,
        "videos": spec.videos,
        "domain": spec.domain,
        "objects_prompted": len(agg["j_mask"]),
        "objects_total": len(agg["auto"]) if agg["auto"] else None,
        "seconds": round(time.time() - started, 1),
    }
