"""The scripted annotator: plays the human in Label Studio for synthetic data with ground truth.

It goes through the same REST API the browser uses (read the task with its predictions, fetch the
frames the editor shows, submit an annotation with a ``lead_time``) and never touches the database:
its work reaches the database only through the sync, which stores it as
``source_kind = scripted_annotator`` (never as human work) because every annotation it submits
carries its marker (``annotation.labelstudio.effort.make_marker``).

Correction tasks, per object of the task and frame of the chunk:
1. the object is matched to a ground-truth object (highest mean IoU over the chunk; below
   ``match_min_iou`` the masklet is spurious and gets the verdict "reject");
2. if the predicted mask's IoU with the ground truth is at least ``iou_threshold`` (0.9) it is kept;
3. otherwise it is corrected with simulated clicks: each click goes to the centre of the largest
   error region (the maximum of the distance transform inside the largest connected component of
   prediction XOR ground truth), positive where the ground truth has the object (a miss), negative
   where it does not (a false alarm); the clicks so far, with the current mask as the prior, go to
   the interactive SAM 2 predictor (``Sam2ClickRefiner``); it stops once the IoU reaches the
   threshold, after ``click_limit`` clicks, or as soon as a click leaves the mask no better than
   the best one so far (``click_patience`` such clicks in a row: a person stops clicking when the
   clicks stop helping, undoes, and keeps the best mask they saw);
4. if the clicks did not get there, the mask is drawn by hand: charged as the polygon with the
   fewest vertices that keeps IoU >= ``iou_threshold`` (``min_polygon``, the `manual` mode's rule;
   its vertex count enters the time model), stored as the exact ground-truth mask.
Each object gets the verdict "fixed" (or "reject"). Verification tasks: per object "satisfactory"
when every frame's IoU is at least the threshold, else "unsatisfactory".

The simulated ``lead_time`` follows ``annotation.labelstudio.effort.TimeModel`` (documented there
and in docs/annotation.md).
"""
from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from annotation.labelstudio.client import LabelStudioClient
from annotation.labelstudio.effort import (
    ObjectEffort,
    TimeModel,
    make_marker,
    split_marker,
)
from annotation.labelstudio.label_config import IMAGE_TO_NAME, VERIFICATION, verdict_name
from annotation.labelstudio.tasks import brush_result
from annotation.labelstudio.validate import task_spec_from_data, validate_result
from storage.masks import mask_iou
from storage.synthetic.dataset import GroundTruth

__all__ = [
    "ClickRefiner",
    "SCRIPTED_ANNOTATOR",
    "Sam2ClickRefiner",
    "ScriptedAnnotator",
    "ScriptedAnnotatorConfig",
    "TaskOutcome",
    "next_click",
    "refine_with_clicks",
    "min_polygon",
]

log = logging.getLogger(__name__)

SCRIPTED_ANNOTATOR = "the scripted annotator"


# --- clicks ----------------------------------------------------------------------------------------
def next_click(current: np.ndarray, target: np.ndarray) -> tuple[int, int, bool] | None:
    """(x, y, positive) at the centre of the largest error region of ``current`` vs ``target``
    (the pixel farthest from the region's border), or None when they agree."""
    from scipy import ndimage

    error = np.asarray(current, bool) ^ np.asarray(target, bool)
    if not error.any():
        return None
    labels, n = ndimage.label(error)
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (int(np.argmax(sizes)) + 1)
    # Pad so that the frame border counts as the region's border too.
    dist = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y), bool(target[y, x])


def min_polygon(mask: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """(polygon mask, vertices): the true contour simplified as far as it can be while IoU with the
    mask stays >= threshold (a person's fewest-click polygon)."""
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return mask.astype(bool), 0
    contours, hier = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    holes = [h[3] != -1 for h in hier[0]]
    best = None
    for eps in (8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.7, 0.5, 0.0):
        polys = [cv2.approxPolyDP(c, eps, True) if eps > 0 else c for c in contours]
        draw = np.zeros_like(m)
        for p, hole in sorted(zip(polys, holes), key=lambda x: x[1]):  # outlines, then holes
            cv2.drawContours(draw, [p], -1, 0 if hole else 1, thickness=-1)
        n = int(sum(len(p) for p in polys))
        if mask_iou(draw.astype(bool), mask) >= threshold:
            best = (draw.astype(bool), n)
            break
    if best is None:  # tiny or thin shapes: the pixel mask itself (one vertex per contour point)
        best = (mask.astype(bool), int(sum(len(c) for c in contours)))
    return best


class ClickRefiner(Protocol):
    """An interactive segmenter: one session per frame; ``click`` returns the refined mask of
    ``obj`` after all clicks so far on that object (the first click starts from ``prior``)."""

    def open(self, frame: np.ndarray) -> Any: ...

    def click(self, session: Any, obj: int, prior: np.ndarray | None, points: np.ndarray,
              labels: np.ndarray) -> np.ndarray: ...


class Sam2ClickRefiner:
    """Clicks refined by the interactive SAM 2 predictor (``add_new_points_or_box`` on an
    inference state of the one frame; the predicted mask, when there is one, is given first as a
    mask prompt so that the clicks correct it rather than start over)."""

    def __init__(self, segmenter) -> None:  # models.sam2.predict.VideoSegmenter
        self.segmenter = segmenter

    def open(self, frame: np.ndarray) -> dict:
        source = self.segmenter.frame_source(np.asarray(frame)[None], where="clicked frame")
        return {"state": self.segmenter.init_state(source), "started": set()}

    def click(self, session: dict, obj: int, prior: np.ndarray | None, points: np.ndarray,
              labels: np.ndarray) -> np.ndarray:
        import torch

        pred = self.segmenter.predictor
        state = session["state"]
        with torch.inference_mode(), self.segmenter.runtime.autocast():
            if obj not in session["started"]:
                session["started"].add(obj)
                if prior is not None and prior.any():
                    pred.add_new_mask(state, 0, obj, torch.from_numpy(np.asarray(prior, bool)))
            _, obj_ids, masks = pred.add_new_points_or_box(
                state, 0, obj, points=np.asarray(points, np.float32).reshape(-1, 2),
                labels=np.asarray(labels, np.int32), clear_old_points=True)
            k = list(obj_ids).index(obj)
            return (masks[k, 0] > 0.0).cpu().numpy()


# --- the annotator ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScriptedAnnotatorConfig:
    name: str = "scripted-annotator-v1"
    iou_threshold: float = 0.9
    click_limit: int = 5
    # Clicks in a row that may fail to improve on the best mask before the annotator gives up and
    # draws (0 or None: always spend `click_limit`). 1 is what a person does with a model that is
    # making the mask worse: undo once, then reach for the polygon tool.
    click_patience: int | None = 1
    match_min_iou: float = 0.05
    time_model: TimeModel = TimeModel()


@dataclass
class TaskOutcome:
    task_id: int
    kind: str
    annotation_id: int | None = None  # None: skipped (already annotated by us)
    lead_time: float = 0.0
    clicks: int = 0
    masks_drawn: int = 0
    frames_corrected: int = 0
    verdicts: dict[int, str] = field(default_factory=dict)  # slot -> verdict
    matched: dict[int, int | None] = field(default_factory=dict)  # slot -> ground-truth object id
    iou_before: dict[tuple[int, int], float] = field(default_factory=dict)  # (slot, t) -> IoU
    iou_after: dict[tuple[int, int], float] = field(default_factory=dict)
    effort: dict[int, ObjectEffort] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # slot -> submitted bool[T,H,W]


class ScriptedAnnotator:
    """The scripted annotator (see the module doc). ``refiner=None``: no interactive model; every
    mask below the threshold is drawn by hand."""

    def __init__(self, client: LabelStudioClient, *, refiner: ClickRefiner | None = None,
                 config: ScriptedAnnotatorConfig = ScriptedAnnotatorConfig()) -> None:
        self.client = client
        self.refiner = refiner
        self.config = config

    # -- reading what the browser shows -------------------------------------------------------------
    def _frames(self, task: Mapping, ts: Sequence[int]) -> dict[int, np.ndarray]:
        from PIL import Image

        urls = task["data"]["frames"]
        out = {}
        for t in ts:
            img = Image.open(io.BytesIO(self.client.get_file(urls[t]))).convert("RGB")
            out[t] = np.array(img)
        return out

    def _already_done(self, task: Mapping) -> dict | None:
        for a in task.get("annotations") or []:
            _, marker = split_marker(a.get("result"))
            if marker is not None and marker.name == self.config.name and not a.get("was_cancelled"):
                return a
        return None

    # -- one task -----------------------------------------------------------------------------------
    def annotate_task(self, task_id: int, ground_truth: GroundTruth, *,
                      frames: np.ndarray | None = None) -> TaskOutcome:
        """Read the task, correct or judge it against ``ground_truth`` (the whole video's), submit
        one annotation. Re-running on a task it already annotated submits nothing."""
        cfg = self.config
        task = self.client.get_task(task_id)
        spec = task_spec_from_data(task.get("data"), task_id=task_id)
        out = TaskOutcome(task_id=task_id, kind=spec.kind)
        done = self._already_done(task)
        if done is not None:
            log.info("task %s: already annotated by %s (annotation %s)", task_id, cfg.name, done["id"])
            return out
        T, H, W = spec.n_frames, spec.height, spec.width
        if (ground_truth.height, ground_truth.width) != (H, W):
            raise ValueError(f"task {task_id}: frames are {W}x{H}, ground truth "
                             f"{ground_truth.width}x{ground_truth.height}")
        if spec.frame_start + T > ground_truth.num_frames:
            raise ValueError(f"task {task_id}: frames [{spec.frame_start}, {spec.frame_start + T}) "
                             f"outside the ground truth's {ground_truth.num_frames} frames")
        gt = ground_truth.masks[spec.frame_start:spec.frame_start + T]  # [T, O, H, W]
        preds = task.get("predictions") or []
        pred_result = (max(preds, key=lambda p: p.get("id", 0))["result"] if preds else [])
        pred_result = [r for r in pred_result if r.get("type") == "brushlabels"]
        predicted = validate_result(pred_result, spec, require_verdicts=False, task_id=task_id).masks
        matched = self._match(predicted, gt, ground_truth.object_ids)
        out.matched = {s: (ground_truth.object_ids[k] if k is not None else None)
                       for s, k in matched.items()}
        tm = cfg.time_model
        per_object: dict[int, float] = {}
        result: list[dict] = []
        if spec.kind == VERIFICATION:
            for o in spec.objects:
                k = matched[o.slot]
                ious = [mask_iou(predicted[o.slot][t], gt[t, k] if k is not None else
                                 np.zeros((H, W), bool)) for t in range(T)]
                for t, v in enumerate(ious):
                    out.iou_before[(o.slot, t)] = v
                ok = k is not None and min(ious) >= cfg.iou_threshold
                out.verdicts[o.slot] = "satisfactory" if ok else "unsatisfactory"
                eff = ObjectEffort(seconds=tm.object_seconds(frames_checked=T, clicks=0, masks_drawn=0,
                                                             vertices=0, verdicts=1))
                out.effort[o.slot] = eff
                per_object[o.slot] = eff.seconds
                result.append(_choice(o.slot, out.verdicts[o.slot]))
        else:
            final = {s: m.copy() for s, m in predicted.items()}
            frame_cache: dict[int, np.ndarray] = {} if frames is None else {
                t: frames[spec.frame_start + t] for t in range(T)}
            sessions: dict[int, Any] = {}
            for o in spec.objects:
                k = matched[o.slot]
                eff = ObjectEffort()
                if k is None:
                    out.verdicts[o.slot] = "reject"
                else:
                    out.verdicts[o.slot] = "fixed"
                    for t in range(T):
                        target = gt[t, k]
                        before = mask_iou(predicted[o.slot][t], target)
                        out.iou_before[(o.slot, t)] = before
                        if before >= cfg.iou_threshold:
                            out.iou_after[(o.slot, t)] = before
                            continue
                        eff.frames_corrected += 1
                        mask, clicks = self._click(o.slot, t, predicted[o.slot][t], target,
                                                   task, frame_cache, sessions)
                        eff.clicks += clicks
                        if mask_iou(mask, target) < cfg.iou_threshold:
                            # Drawn by hand: charged as the fewest-vertex polygon that reaches
                            # the threshold (the `manual` mode's rule); the exact mask is stored,
                            # as for the first-frame masks (a simulation convenience, docs/loop.md).
                            mask = target.copy()
                            eff.strokes += 1
                            eff.vertices += min_polygon(target, cfg.iou_threshold)[1]
                        final[o.slot][t] = mask
                        out.iou_after[(o.slot, t)] = mask_iou(mask, target)
                eff.seconds = tm.object_seconds(frames_checked=T, clicks=eff.clicks,
                                                masks_drawn=eff.strokes, vertices=eff.vertices,
                                                verdicts=1)
                out.effort[o.slot] = eff
                per_object[o.slot] = eff.seconds
            out.masks = final
            result = _correction_result(pred_result, predicted, final, spec)
            result += [_choice(o.slot, out.verdicts[o.slot]) for o in spec.objects]
        out.clicks = sum(e.clicks for e in out.effort.values())
        out.masks_drawn = sum(e.strokes for e in out.effort.values())
        out.frames_corrected = sum(e.frames_corrected for e in out.effort.values())
        out.lead_time = tm.lead_time(T, list(per_object.values()))
        result.append(make_marker(cfg.name, out.effort, tm))
        ann = self.client.create_annotation(task_id, result, lead_time=out.lead_time)
        out.annotation_id = ann["id"]
        return out

    def annotate_project(self, project_id: int,
                         ground_truth_for: Callable[[Mapping], GroundTruth | None], *,
                         frames_for: Callable[[Mapping], np.ndarray | None] | None = None
                         ) -> list[TaskOutcome]:
        """Every task of a project whose video has ground truth (``ground_truth_for(task data)``
        returns None to skip a task)."""
        outcomes = []
        for t in self.client.iter_tasks(project_id, include="id,data"):
            gt = ground_truth_for(t.get("data") or {})
            if gt is None:
                continue
            frames = frames_for(t.get("data") or {}) if frames_for else None
            outcomes.append(self.annotate_task(int(t["id"]), gt, frames=frames))
        return outcomes

    # -- helpers ------------------------------------------------------------------------------------
    def _match(self, predicted: Mapping[int, np.ndarray], gt: np.ndarray,
               object_ids: Sequence[int]) -> dict[int, int | None]:
        """slot -> index of the ground-truth object it tracks (greedy on mean IoU over the chunk)."""
        T = gt.shape[0]
        pairs = []
        for slot, m in predicted.items():
            for k in range(gt.shape[1]):
                iou = float(np.mean([mask_iou(m[t], gt[t, k]) for t in range(T)]))
                pairs.append((iou, slot, k))
        out: dict[int, int | None] = {s: None for s in predicted}
        used: set[int] = set()
        for iou, slot, k in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            if iou < self.config.match_min_iou or out[slot] is not None or k in used:
                continue
            out[slot] = k
            used.add(k)
        return out

    def _click(self, slot: int, t: int, prior: np.ndarray, target: np.ndarray, task: Mapping,
               frame_cache: dict[int, np.ndarray], sessions: dict[int, Any]) -> tuple[np.ndarray, int]:
        """This frame's clicks (`refine_with_clicks`); returns (mask, clicks)."""
        cfg = self.config
        if self.refiner is None or cfg.click_limit <= 0:
            return prior, 0
        if t not in frame_cache:
            frame_cache.update(self._frames(task, [t]))
        if t not in sessions:
            sessions[t] = self.refiner.open(frame_cache[t])
        return refine_with_clicks(self.refiner, sessions[t], slot, prior, target,
                                  threshold=cfg.iou_threshold, limit=cfg.click_limit,
                                  patience=cfg.click_patience)


def refine_with_clicks(refiner: ClickRefiner, session: Any, obj: int, prior: np.ndarray,
                       target: np.ndarray, *, threshold: float, limit: int,
                       patience: int | None = 1) -> tuple[np.ndarray, int]:
    """One frame's clicks (see the module doc, step 3): (best mask reached, clicks made). Stops at
    IoU >= threshold, after `limit` clicks, or after `patience` clicks in a row that did not beat
    the best mask so far (the annotator undoes them: the best mask is what is kept); 0 or None
    never gives up early."""
    best, best_iou = prior, mask_iou(prior, target)
    current = prior
    points, labels = [], []
    misses = 0
    for n in range(1, limit + 1):
        c = next_click(current, target)
        if c is None:
            return best, n - 1
        x, y, positive = c
        points.append((x, y))
        labels.append(1 if positive else 0)
        current = refiner.click(session, obj, prior, np.asarray(points, float), np.asarray(labels))
        iou = mask_iou(current, target)
        if iou > best_iou:
            best, best_iou, misses = current, iou, 0
        else:
            misses += 1
        if best_iou >= threshold:
            return best, n
        if patience and misses >= patience:
            return best, n
    return best, limit


def _choice(slot: int, verdict: str) -> dict:
    return {"type": "choices", "from_name": verdict_name(slot), "to_name": IMAGE_TO_NAME,
            "value": {"choices": [verdict]}}


def _correction_result(pred_result: list[dict], predicted: Mapping[int, np.ndarray],
                       final: Mapping[int, np.ndarray], spec) -> list[dict]:
    """What the editor would submit: the prediction's regions where nothing changed (one merged
    region per object and frame), re-drawn regions where something did."""
    out = []
    for o in spec.objects:
        for t in range(spec.n_frames):
            m = final[o.slot][t]
            if not m.any():
                continue
            changed = not np.array_equal(m, predicted[o.slot][t])
            r = brush_result(m, o.slot, t, spec.width, spec.height,
                             region_id=f"s{o.slot}_{t}" if changed else f"p{o.slot}_{t}")
            r["origin"] = ("prediction-changed" if predicted[o.slot][t].any() else "manual") \
                if changed else "prediction"
            out.append(r)
    return out

