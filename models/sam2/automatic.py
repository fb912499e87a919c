"""Automatic masklets: SAM's automatic mask generator on key frames, then SAM 2 propagation.

1. Propose masks on frame 0 from a point grid with sam2's own `SAM2AutomaticMaskGenerator` on the
   same model (filtered by the IoU head, stability and size).
2. Every `reseed_every` frames, propose again; a proposal that overlaps no existing masklet on that
   frame (IoU below `dedup_iou` and mostly uncovered) is an object that entered later: it becomes a
   new masklet, tracked forward to the end and backwards to frame 0.
Masks are kept as COCO RLE per frame, so memory grows with object outlines, not with pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

from models.sam2.predict import FrameSource, Prompt, VideoSegmenter
from storage.masks import encode_rle, rle_area, rle_iou


@dataclass(frozen=True)
class AutoConfig:
    """Proposal filters. SAM's own defaults (IoU 0.8, stability 0.95) assume a large model; these
    were tuned on held-out base-domain seed 555 (8 videos) for the shipped small model, whose IoU
    head now ranks masks (spearman ~0.55): (0.6, 0.5) found 69% of objects with 2.0 masklets per
    video, (0.3, 0.0) 62% with 3.6 (more spurious ones), (0.7, 0.8) 44% with 1.1."""

    points_per_side: int = 12
    pred_iou_thresh: float = 0.6
    stability_thresh: float = 0.5
    box_nms_thresh: float = 0.5
    min_area_frac: float = 0.002
    max_area_frac: float = 0.4
    reseed_every: int = 8
    dedup_iou: float = 0.4
    max_objects: int = 16


@dataclass
class Masklet:
    """One object's masks through a video (COCO RLE per frame) with the model's own scores."""

    object_id: int
    first_frame: int  # the frame it was prompted or proposed on
    rles: dict[int, dict] = field(default_factory=dict)
    pred_iou: dict[int, float] = field(default_factory=dict)
    object_score: dict[int, float] = field(default_factory=dict)
    proposal_score: float | None = None

    def mean_pred_iou(self) -> float:
        vals = [v for v in self.pred_iou.values() if v == v]
        return float(np.mean(vals)) if vals else float("nan")


def collect(results, masklets: dict[int, Masklet]) -> dict[int, Masklet]:
    """Fold a stream of FrameResults into masklets (one RLE per frame and object)."""
    for fr in results:
        for k, oid in enumerate(fr.object_ids):
            m = masklets[oid]
            m.rles[fr.frame_index] = encode_rle(fr.masks[k])
            m.pred_iou[fr.frame_index] = float(fr.pred_iou[k])
            m.object_score[fr.frame_index] = float(fr.object_score[k])
    return masklets


def track_prompts(segmenter: VideoSegmenter, source: FrameSource, prompts: list[Prompt],
                  where: str = "video", keep_mask_prompts: bool = True) -> dict[int, Masklet]:
    """Track the prompted objects through the video. With ``keep_mask_prompts`` a frame given as
    a mask prompt keeps that exact mask: sam2's predictor echoes a mask prompt through its
    quarter-resolution logits, which costs thin shapes ~0.06 IoU at 128 px (on target-domain
    videos 7% of prompted frames fell below IoU 0.9 with their own prompt, so a person's
    correction came back 'wrong' from re-propagation)."""
    masklets = {p.object_id: Masklet(p.object_id, p.frame_index) for p in prompts}
    collect(segmenter.track(source, prompts, where=where), masklets)
    if keep_mask_prompts:
        for p in prompts:
            if p.mask is not None:
                masklets[p.object_id].rles[p.frame_index] = encode_rle(np.asarray(p.mask, dtype=bool))
    return masklets


class AutomaticMasklets:
    def __init__(self, segmenter: VideoSegmenter, cfg: AutoConfig = AutoConfig()):
        self.segmenter = segmenter
        self.cfg = cfg
        # multimask_output=False: the single-mask token is the one trained here (docs/sam2.md).
        self.generator = SAM2AutomaticMaskGenerator(
            segmenter.predictor,
            points_per_side=cfg.points_per_side,
            points_per_batch=max(64, cfg.points_per_side ** 2),
            pred_iou_thresh=cfg.pred_iou_thresh,
            stability_score_thresh=cfg.stability_thresh,
            box_nms_thresh=cfg.box_nms_thresh,
            multimask_output=False,
        )
        # sam2 1.1.0's image predictor hard-codes the backbone grid of a 1024 px model; derive it
        # from the model's own image size so smaller configs work too.
        size = int(segmenter.predictor.image_size)
        self.generator.predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8),
                                                   (size // 16, size // 16)]

    def propose(self, source: FrameSource, frame_idx: int) -> list[tuple[np.ndarray, float]]:
        """Masks proposed on one frame at the video's resolution, best first."""
        img = source.raw(frame_idx)
        with torch.inference_mode(), self.segmenter.runtime.autocast():
            props = self.generator.generate(img)
        hw = img.shape[0] * img.shape[1]
        out = []
        for p in props:
            area = p["area"] / hw
            if not (self.cfg.min_area_frac <= area <= self.cfg.max_area_frac):
                continue
            mask = p["segmentation"].astype(bool)
            if mask.shape != (source.video_height, source.video_width):
                t = torch.from_numpy(mask)[None, None].float()
                mask = torch.nn.functional.interpolate(
                    t, size=(source.video_height, source.video_width), mode="bilinear",
                    align_corners=False)[0, 0].numpy() > 0.5
            out.append((mask, float(p["predicted_iou"]) * float(p["stability_score"])))
        out.sort(key=lambda x: -x[1])
        return out

    def _is_new(self, rle: dict, existing: list[dict]) -> bool:
        area = max(rle_area(rle), 1)
        for other in existing:
            if rle_iou(rle, other) >= self.cfg.dedup_iou:
                return False
            # Mostly covered by a known object (a part of it): not a new object either.
            inter = rle_area(_intersect(rle, other))
            if inter / area > 0.6:
                return False
        return True

    def run(self, frames, where: str = "video",
            on_progress: Callable[[str], None] | None = None) -> dict[int, Masklet]:
        source = self.segmenter.frame_source(frames, where)
        masklets: dict[int, Masklet] = {}
        next_id = 1
        seeds = list(range(0, len(source), max(1, self.cfg.reseed_every)))
        for k in seeds:
            existing = [m.rles[k] for m in masklets.values() if k in m.rles and rle_area(m.rles[k]) > 0]
            new_prompts = []
            accepted: list[dict] = list(existing)
            for mask, score in self.propose(source, k):
                if len(masklets) + len(new_prompts) >= self.cfg.max_objects:
                    break
                rle = encode_rle(mask)
                if self._is_new(rle, accepted):
                    accepted.append(rle)
                    new_prompts.append((Prompt(object_id=next_id, frame_index=k, mask=mask), score))
                    next_id += 1
            if not new_prompts:
                continue
            if on_progress:
                on_progress(f"{where}: frame {k}: {len(new_prompts)} new object(s)")
            tracked = track_prompts(self.segmenter, source, [p for p, _ in new_prompts], where)
            for p, score in new_prompts:
                tracked[p.object_id].proposal_score = score
            masklets.update(tracked)
        return masklets


def _intersect(a: dict, b: dict) -> dict:
    from pycocotools import mask as mask_utils

    enc = lambda r: {"size": r["size"], "counts": r["counts"].encode() if isinstance(r["counts"], str) else r["counts"]}
    return mask_utils.merge([enc(a), enc(b)], intersect=True)
