"""What the three annotation modes of issue 5 cost on the same videos (SAM 2 Table 1's phases):
`manual` polygons on every frame, `propagate` (first frame drawn, SAM 2 propagates, failing frames
redrawn) and `interactive` (failing frames fixed with SAM 2 clicks, each fix re-propagated before
the next frames are judged). The scripted annotator's time model prices the work
(docs/annotation.md); docs/loop.md defines the rows."""
from __future__ import annotations

import numpy as np


def measure_modes(segmenter, videos, *, threshold: float = 0.9, click_limit: int = 5,
                  click_patience: int | None = 1, time_model=None) -> dict:
    """Effort of the three modes on the same videos (SyntheticVideo-like: frames, masks,
    object_ids); clicks follow the scripted annotator's policy (`refine_with_clicks`).
    Returns {mode: effort row}."""
    from annotation.labelstudio.effort import TimeModel
    from annotation.scripted_annotator import Sam2ClickRefiner, min_polygon, refine_with_clicks
    from models.sam2.automatic import track_prompts
    from models.sam2.predict import Prompt
    from storage.masks import decode_rle, mask_iou

    tm = time_model or TimeModel()
    refiner = Sam2ClickRefiner(segmenter)
    acc = {m: {"frames": 0, "edited": 0, "clicks": 0, "seconds": 0.0} for m in
           ("manual", "propagate", "interactive")}

    def draw(mask):
        return min_polygon(mask, threshold)[1]

    def charge(mode, *, edited=0, clicks=0, polys=0, verts=0, checks=0):
        a = acc[mode]
        a["edited"] += edited
        a["clicks"] += clicks + verts
        a["seconds"] += tm.object_seconds(frames_checked=checks, clicks=clicks, masks_drawn=polys,
                                          vertices=verts, verdicts=0)

    def track(source, prompts, oid, T, H, W):
        res = track_prompts(segmenter, source, prompts, where="modes").get(oid)
        out = np.zeros((T, H, W), bool)
        if res is not None:
            for t, rle in res.rles.items():
                out[t] = decode_rle(rle)
        return out

    for v in videos:
        T, O, H, W = v.masks.shape
        source = segmenter.frame_source(v.frames, where=getattr(v, "name", "video"))
        for mode in acc:
            acc[mode]["seconds"] += tm.shared_seconds(T)
        for k in range(O):
            gt = v.masks[:, k]
            oid = k + 1
            t0 = next((t for t in range(T) if gt[t].sum() >= 16), None)
            for mode in acc:
                acc[mode]["frames"] += T
            if t0 is None:
                for mode in acc:
                    charge(mode, checks=T)
                continue
            # manual: every frame with the object drawn
            for t in range(T):
                if gt[t].any():
                    charge("manual", edited=1, polys=1, verts=draw(gt[t]))
            charge("manual", checks=T)
            # propagate
            first = min_polygon(gt[t0], threshold)[0]
            charge("propagate", edited=1, polys=1, verts=draw(gt[t0]), checks=T)
            prop = track(source, [Prompt(object_id=oid, frame_index=t0, mask=first)], oid, T, H, W)
            for t in range(T):
                if t != t0 and mask_iou(prop[t], gt[t]) < threshold:
                    charge("propagate", edited=1, polys=1, verts=draw(gt[t]))
            # interactive: fix the first failing frame, re-propagate, judge the rest again
            charge("interactive", edited=1, polys=1, verts=draw(gt[t0]), checks=T)
            prompts = [Prompt(object_id=oid, frame_index=t0, mask=first)]
            cur = prop
            t = t0 + 1
            while t < T:
                if mask_iou(cur[t], gt[t]) >= threshold:
                    t += 1
                    continue
                mask, n = refine_with_clicks(refiner, refiner.open(v.frames[t]), oid, cur[t], gt[t],
                                             threshold=threshold, limit=click_limit,
                                             patience=click_patience)
                if mask_iou(mask, gt[t]) >= threshold:
                    charge("interactive", edited=1, clicks=n)
                else:
                    mask = min_polygon(gt[t], threshold)[0]
                    charge("interactive", edited=1, clicks=n, polys=1, verts=draw(gt[t]))
                if mask.any():  # an erased mask (object absent) is no prompt SAM 2 can take
                    prompts.append(Prompt(object_id=oid, frame_index=t, mask=mask))
                    cur = track(source, prompts, oid, T, H, W)
                cur[t] = mask
                t += 1
    return {m: effort_row(a["frames"], a["edited"], a["clicks"], a["seconds"]) for m, a in acc.items()}


def effort_row(frames: int, edited: int, clicks: int, seconds: float) -> dict:
    """One row of the effort tables (a round's or a mode's): a "frame" is one object on one frame."""
    return {"frames": frames, "frames_edited": edited,
            "frames_edited_pct": round(100.0 * edited / frames, 2) if frames else None,
            "clicks_per_frame": round(clicks / frames, 3) if frames else None,
            "clicks_per_edited_frame": round(clicks / edited, 3) if edited else None,
            "seconds_per_frame": round(seconds / frames, 3) if frames else None}
