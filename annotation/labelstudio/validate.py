"""Validation of everything read back from Label Studio, before it touches the database.

Label Studio validates none of a result (item_index 999, a missing item_index, a wrong from_name,
an unknown label are all accepted), strokes drawn without a selected region become extra regions,
and brush edges carry partial alpha. So every annotation is checked here: task data, every region
(type, names, label -> object slot, frame index, size, RLE), alpha thresholded, several regions of
one object on one frame merged, verdicts checked. Any problem rejects the WHOLE annotation with a
list of issues (``AnnotationInvalid``); nothing of it is half-applied.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotation.labelstudio.label_config import (
    BRUSH_FROM_NAME,
    IMAGE_TO_NAME,
    KINDS,
    VERDICTS,
    VERIFICATION,
    slot_of_label,
    slot_of_verdict_name,
)
from annotation.labelstudio.tasks import ChunkObject
from storage.masks import MaskSizeError, RleError, brush_to_mask

__all__ = [
    "AnnotationInvalid",
    "Issue",
    "TaskSpec",
    "ValidatedAnnotation",
    "frames_changed",
    "task_spec_from_data",
    "validate_annotation",
    "validate_result",
]

MAX_SIDE = 16384  # refuse absurd frame sizes before allocating anything


@dataclass(frozen=True)
class Issue:
    code: str  # bad_task_data, bad_item, bad_type, bad_name, unknown_label, bad_frame, bad_size,
    #            bad_rle, bad_verdict, missing_verdict, duplicate_verdict
    message: str
    item: int | None = None  # index in the result list

    def __str__(self) -> str:
        where = f"result[{self.item}]: " if self.item is not None else ""
        return f"{where}{self.code}: {self.message}"


class AnnotationInvalid(ValueError):
    """An annotation (or its task's data) that fails validation; ``issues`` lists every problem."""

    def __init__(self, issues: Sequence[Issue], *, task_id: int | None = None,
                 annotation_id: int | None = None):
        self.issues = list(issues)
        self.task_id = task_id
        self.annotation_id = annotation_id
        head = f"task {task_id}" if task_id is not None else "task"
        if annotation_id is not None:
            head += f" annotation {annotation_id}"
        shown = "; ".join(str(i) for i in self.issues[:10])
        more = f" (+{len(self.issues) - 10} more)" if len(self.issues) > 10 else ""
        super().__init__(f"{head} is invalid: {shown}{more}")


@dataclass(frozen=True)
class TaskSpec:
    """What a chunk task's data promises (read from ``task["data"]``)."""

    kind: str
    n_frames: int
    frame_start: int
    height: int
    width: int
    objects: tuple[ChunkObject, ...]
    idempotency_key: str | None = None

    @property
    def slots(self) -> tuple[int, ...]:
        return tuple(o.slot for o in self.objects)


def task_spec_from_data(data: Any, *, task_id: int | None = None) -> TaskSpec:
    issues: list[Issue] = []

    def bad(msg: str) -> None:
        issues.append(Issue("bad_task_data", msg))

    if not isinstance(data, Mapping):
        raise AnnotationInvalid([Issue("bad_task_data", f"task data is {type(data).__name__}, not an object")],
                                task_id=task_id)
    kind = data.get("kind")
    if kind not in KINDS:
        bad(f"kind {kind!r} is not one of {KINDS}")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        bad("frames must be a non-empty list")
    ints = {}
    for k in ("frame_start", "frame_stop", "width", "height"):
        v = data.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            bad(f"{k} must be a non-negative int, got {v!r}")
        ints[k] = v
    objects = []
    raw_objects = data.get("objects")
    if not isinstance(raw_objects, list) or not raw_objects:
        bad("objects must be a non-empty list")
    else:
        for j, o in enumerate(raw_objects):
            try:
                objects.append(ChunkObject(slot=int(o["slot"]), object_id=int(o["object_id"]),
                                           label=str(o.get("label", "")),
                                           masklet_id=o.get("masklet_id")))
            except (KeyError, TypeError, ValueError):
                bad(f"objects[{j}] must have an int slot and object_id, got {o!r}")
        if sorted(o.slot for o in objects) != list(range(1, len(objects) + 1)):
            bad(f"object slots must be 1..{len(objects)}")
    if not issues:
        n = ints["frame_stop"] - ints["frame_start"]
        if n != len(frames):
            bad(f"frame range [{ints['frame_start']}, {ints['frame_stop']}) has {n} frames "
                f"but {len(frames)} frame URLs")
        if not (0 < ints["width"] <= MAX_SIDE and 0 < ints["height"] <= MAX_SIDE):
            bad(f"frame size {ints['width']}x{ints['height']} out of range")
    if issues:
        raise AnnotationInvalid(issues, task_id=task_id)
    return TaskSpec(kind=kind, n_frames=len(frames), frame_start=ints["frame_start"],
                    height=ints["height"], width=ints["width"], objects=tuple(objects),
                    idempotency_key=data.get("idempotency_key"))


@dataclass
class ValidatedAnnotation:
    """A result that passed every check: per object slot a bool[T, H, W] mask stack (frames with
    no region are empty) and the verdicts."""

    spec: TaskSpec
    masks: dict[int, np.ndarray]
    verdicts: dict[int, str]
    regions: int = 0  # brush regions read
    merged: int = 0  # regions OR-ed into an earlier region of the same object and frame
    task_id: int | None = None
    annotation_id: int | None = None
    lead_time: float | None = None
    updated_at: str | None = None
    extra: dict = field(default_factory=dict)

    def frames_with_mask(self, slot: int) -> list[int]:
        return [int(t) for t in np.flatnonzero(self.masks[slot].reshape(self.spec.n_frames, -1).any(1))]


def validate_result(
    result: Any,
    spec: TaskSpec,
    *,
    alpha_threshold: int = 128,
    require_verdicts: bool | None = None,
    task_id: int | None = None,
    annotation_id: int | None = None,
) -> ValidatedAnnotation:
    """Check a result list against its task; return the merged masks and verdicts, or raise
    ``AnnotationInvalid`` listing every problem. ``require_verdicts`` defaults to True for
    verification tasks (a verdict per object) and False for correction tasks."""
    if require_verdicts is None:
        require_verdicts = spec.kind == VERIFICATION
    issues: list[Issue] = []
    if not isinstance(result, list):
        raise AnnotationInvalid([Issue("bad_item", f"result is {type(result).__name__}, not a list")],
                                task_id=task_id, annotation_id=annotation_id)
    T, H, W = spec.n_frames, spec.height, spec.width
    slots = set(spec.slots)
    masks = {s: np.zeros((T, H, W), dtype=bool) for s in spec.slots}
    seen: set[tuple[int, int]] = set()
    verdicts: dict[int, str] = {}
    regions = merged = 0
    allowed = VERDICTS[spec.kind]
    for i, item in enumerate(result):
        if not isinstance(item, Mapping):
            issues.append(Issue("bad_item", f"not an object: {type(item).__name__}", i))
            continue
        typ = item.get("type")
        value = item.get("value")
        if not isinstance(value, Mapping):
            issues.append(Issue("bad_item", "missing or non-object 'value'", i))
            continue
        if typ == "brushlabels":
            if item.get("from_name") != BRUSH_FROM_NAME or item.get("to_name") != IMAGE_TO_NAME:
                issues.append(Issue("bad_name", f"brush region from {item.get('from_name')!r} to "
                                    f"{item.get('to_name')!r}, expected {BRUSH_FROM_NAME!r} -> {IMAGE_TO_NAME!r}", i))
                continue
            labels = value.get("brushlabels")
            if not isinstance(labels, list) or len(labels) != 1:
                issues.append(Issue("unknown_label", f"a region needs exactly one label, got {labels!r}", i))
                continue
            slot = slot_of_label(labels[0])
            if slot is None or slot not in slots:
                issues.append(Issue("unknown_label", f"label {labels[0]!r} is not an object of this "
                                    f"task (object_1..object_{len(slots)})", i))
                continue
            t = item.get("item_index")
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < T:
                issues.append(Issue("bad_frame", f"item_index {t!r} is not a frame of this task (0..{T - 1})", i))
                continue
            ow, oh = item.get("original_width"), item.get("original_height")
            if (ow is not None and ow != W) or (oh is not None and oh != H):
                issues.append(Issue("bad_size", f"region drawn on a {ow}x{oh} image, frame is {W}x{H}", i))
                continue
            if value.get("format", "rle") != "rle":
                issues.append(Issue("bad_rle", f"brush format {value.get('format')!r}, expected 'rle'", i))
                continue
            rle = value.get("rle")
            if not isinstance(rle, list) or not all(isinstance(v, int) and 0 <= v <= 255 for v in rle):
                issues.append(Issue("bad_rle", "rle must be a list of byte values (0..255)", i))
                continue
            try:
                m = brush_to_mask(rle, H, W, alpha_threshold=alpha_threshold)
            except MaskSizeError as exc:
                issues.append(Issue("bad_size", str(exc), i))
                continue
            except (RleError, ValueError) as exc:
                issues.append(Issue("bad_rle", str(exc), i))
                continue
            regions += 1
            if (slot, t) in seen:
                merged += 1
            seen.add((slot, t))
            masks[slot][t] |= m
        elif typ == "choices":
            name = item.get("from_name")
            slot = slot_of_verdict_name(name)
            if slot is None or slot not in slots or item.get("to_name") != IMAGE_TO_NAME:
                issues.append(Issue("bad_name", f"choices {name!r} -> {item.get('to_name')!r} is not "
                                    "a verdict of an object of this task", i))
                continue
            choices = value.get("choices")
            if not isinstance(choices, list) or len(choices) != 1 or choices[0] not in allowed:
                issues.append(Issue("bad_verdict", f"verdict {choices!r} for object_{slot}; expected "
                                    f"one of {allowed}", i))
                continue
            if slot in verdicts and verdicts[slot] != choices[0]:
                issues.append(Issue("duplicate_verdict", f"object_{slot} has verdicts "
                                    f"{verdicts[slot]!r} and {choices[0]!r}", i))
                continue
            verdicts[slot] = choices[0]
        else:
            issues.append(Issue("bad_type", f"result type {typ!r} is not used by this project", i))
    if require_verdicts:
        for s in sorted(slots - set(verdicts)):
            issues.append(Issue("missing_verdict", f"no verdict for object_{s}"))
    if issues:
        raise AnnotationInvalid(issues, task_id=task_id, annotation_id=annotation_id)
    return ValidatedAnnotation(spec=spec, masks=masks, verdicts=verdicts, regions=regions,
                               merged=merged, task_id=task_id, annotation_id=annotation_id)


def validate_annotation(task: Mapping, annotation: Mapping, *, alpha_threshold: int = 128,
                        require_verdicts: bool | None = None) -> ValidatedAnnotation:
    """Validate one annotation of a task as read from Label Studio (task JSON with ``data``)."""
    task_id = task.get("id")
    ann_id = annotation.get("id") if isinstance(annotation, Mapping) else None
    spec = task_spec_from_data(task.get("data"), task_id=task_id)
    if not isinstance(annotation, Mapping):
        raise AnnotationInvalid([Issue("bad_item", "annotation is not an object")], task_id=task_id)
    v = validate_result(annotation.get("result"), spec, alpha_threshold=alpha_threshold,
                        require_verdicts=require_verdicts, task_id=task_id, annotation_id=ann_id)
    lt = annotation.get("lead_time")
    v.lead_time = float(lt) if isinstance(lt, int | float) and not isinstance(lt, bool) else None
    v.updated_at = annotation.get("updated_at") or annotation.get("created_at")
    return v


def frames_changed(validated: ValidatedAnnotation,
                   predicted: Mapping[int, np.ndarray]) -> dict[int, int]:
    """Per object slot: how many frames differ from the prediction (``predicted[slot]`` is a
    bool[T, H, W] stack; a missing slot counts as an empty prediction)."""
    out = {}
    T = validated.spec.n_frames
    for slot, m in validated.masks.items():
        p = predicted.get(slot)
        if p is None:
            p = np.zeros_like(m)
        if p.shape != m.shape:
            raise MaskSizeError(p.shape, m.shape, message=f"prediction of object_{slot} is "
                                f"{p.shape}, annotation {m.shape}")
        out[slot] = int((m.reshape(T, -1) != p.reshape(T, -1)).any(1).sum())
    return out
