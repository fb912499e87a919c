"""Annotation effort: what one annotation cost, as stored in ``effort_events``.

Per annotation (and per object of its task) the sync records:

- ``seconds``: Label Studio's ``lead_time`` (the seconds the editor was open for this annotation;
  Label Studio replaces it on every update, so the newest version carries the total). It is split
  over the task's objects in proportion to ``frames_edited + 1`` (every object was at least looked
  at), unless the annotation states per-object seconds (the scripted annotator does);
- ``frames_total`` / ``frames_edited``: the chunk's frames, and the frames whose mask differs from
  the prediction (``validate.frames_changed``);
- ``strokes``: for people, the brush regions they drew or changed (Label Studio marks a region
  ``origin: "manual"`` or ``"prediction-changed"``; one region may hold several strokes, so this is
  a lower bound); for the scripted annotator, the masks it drew by hand (polygon fallback);
- ``clicks``: interactive SAM 2 clicks, known for the scripted annotator (people's clicks on the ML
  backend are not recorded in the result, so 0).

The scripted annotator (``annotation.scripted_annotator``) is told apart from people by a marker:
one extra result item with ``from_name = MARKER_FROM_NAME`` that carries its name and its
per-object effort. The Label Studio editor drops result items of controls the labeling config does
not have, so a person who opens and saves such an annotation removes the marker: the edited
version is then (rightly) stored as human work. The marker is taken out of the result before
validation.

``TimeModel`` is the scripted annotator's stated time model (see its docstring and
docs/annotation.md).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "MARKER_FROM_NAME",
    "ActorMarker",
    "ObjectEffort",
    "TimeModel",
    "edited_regions",
    "make_marker",
    "split_marker",
    "split_seconds",
]

MARKER_FROM_NAME = "dataengine_actor"
MARKER_TYPE = "textarea"
SCRIPTED_ANNOTATOR = "scripted_annotator"


@dataclass
class ObjectEffort:
    """The scripted annotator's work on one object slot of one task."""

    clicks: int = 0
    strokes: int = 0  # masks drawn by hand (the polygon fallback)
    vertices: int = 0  # polygon vertices of those masks
    frames_corrected: int = 0
    seconds: float = 0.0


@dataclass
class ActorMarker:
    """What the marker item says: who made the annotation and its per-slot effort."""

    kind: str
    name: str
    objects: dict[int, ObjectEffort] = field(default_factory=dict)
    time_model: dict[str, float] | None = None


def make_marker(name: str, objects: Mapping[int, ObjectEffort],
                time_model: TimeModel | None = None) -> dict:
    """The result item that marks an annotation as the scripted annotator's."""
    payload = {
        "kind": SCRIPTED_ANNOTATOR,
        "name": name,
        "objects": {str(k): asdict(v) for k, v in sorted(objects.items())},
    }
    if time_model is not None:
        payload["time_model"] = asdict(time_model)
    return {
        "from_name": MARKER_FROM_NAME,
        "to_name": "frames",
        "type": MARKER_TYPE,
        "value": {"text": [json.dumps(payload, sort_keys=True)]},
    }


def split_marker(result: Any) -> tuple[Any, ActorMarker | None]:
    """(result without marker items, the marker or None). A marker that cannot be parsed is
    dropped and treated as absent: only a well-formed marker makes an annotation scripted."""
    if not isinstance(result, list):
        return result, None
    rest, marker = [], None
    for item in result:
        if isinstance(item, Mapping) and item.get("from_name") == MARKER_FROM_NAME:
            marker = marker or _parse_marker(item)
            continue
        rest.append(item)
    return rest, marker


def _parse_marker(item: Mapping) -> ActorMarker | None:
    try:
        text = item["value"]["text"][0]
        doc = json.loads(text)
        if doc.get("kind") != SCRIPTED_ANNOTATOR or not isinstance(doc.get("name"), str):
            return None
        objects = {}
        for k, v in (doc.get("objects") or {}).items():
            objects[int(k)] = ObjectEffort(
                clicks=max(0, int(v.get("clicks", 0))), strokes=max(0, int(v.get("strokes", 0))),
                vertices=max(0, int(v.get("vertices", 0))),
                frames_corrected=max(0, int(v.get("frames_corrected", 0))),
                seconds=max(0.0, float(v.get("seconds", 0.0))))
        return ActorMarker(kind=SCRIPTED_ANNOTATOR, name=doc["name"], objects=objects,
                           time_model=doc.get("time_model"))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def edited_regions(result: Any, slot_of_label) -> dict[int, int]:
    """Per object slot: brush regions drawn or changed by the annotator (origin ``manual`` or
    ``prediction-changed``). Regions without an origin (made through the API) count as drawn
    unless their id is a prediction region id (``p<slot>_<frame>``, see tasks.build_task_payload)."""
    out: dict[int, int] = {}
    if not isinstance(result, list):
        return out
    for item in result:
        if not isinstance(item, Mapping) or item.get("type") != "brushlabels":
            continue
        labels = (item.get("value") or {}).get("brushlabels") or []
        slot = slot_of_label(labels[0]) if labels else None
        if slot is None:
            continue
        origin = item.get("origin")
        if origin in ("manual", "prediction-changed"):
            out[slot] = out.get(slot, 0) + 1
        elif origin is None and not str(item.get("id", "")).startswith("p"):
            out[slot] = out.get(slot, 0) + 1
    return out


def split_seconds(total: float, weights: Mapping[int, float]) -> dict[int, float]:
    """``total`` seconds split over slots in proportion to ``weights`` (sums to ``total``)."""
    if not weights:
        return {}
    s = float(sum(weights.values()))
    if s <= 0:
        return {k: total / len(weights) for k in weights}
    return {k: total * float(w) / s for k, w in weights.items()}


@dataclass(frozen=True)
class TimeModel:
    """The scripted annotator's simulated ``lead_time`` (seconds), a stated model rather than a
    measurement:

        lead_time = task_overhead_s
                  + frame_view_s   x frames viewed (every frame of the chunk, once)
                  + object_check_s x (objects x frames) checked
                  + click_s        x interactive SAM 2 clicks
                  + mask_setup_s   x masks drawn by hand (polygon fallback)
                  + vertex_s       x polygon vertices of those masks
                  + verdict_s      x verdicts given

    Defaults: paging to a frame and taking it in ~0.8 s; judging one object's mask on one frame
    ~0.4 s; a corrective click ~2.0 s (find the largest error, click, wait ~0.5 s for SAM 2);
    a hand-drawn polygon ~3 s to start (tool, label) plus ~1.2 s per vertex (COCO-style polygon
    annotation speeds); a verdict ~1.5 s; opening and submitting a task ~5 s. Per-object seconds
    (frames it was checked and corrected on, its clicks, polygons and verdict, plus its share of
    the frame views and overhead) add up to the task's lead_time.
    """

    task_overhead_s: float = 5.0
    frame_view_s: float = 0.8
    object_check_s: float = 0.4
    click_s: float = 2.0
    mask_setup_s: float = 3.0
    vertex_s: float = 1.2
    verdict_s: float = 1.5

    def object_seconds(self, *, frames_checked: int, clicks: int, masks_drawn: int,
                       vertices: int, verdicts: int) -> float:
        """The seconds spent on one object (excluding the shared frame views and overhead)."""
        return (self.object_check_s * frames_checked + self.click_s * clicks
                + self.mask_setup_s * masks_drawn + self.vertex_s * vertices
                + self.verdict_s * verdicts)

    def shared_seconds(self, frames_viewed: int) -> float:
        return self.task_overhead_s + self.frame_view_s * frames_viewed

    def lead_time(self, frames_viewed: int, per_object: Sequence[float]) -> float:
        return self.shared_seconds(frames_viewed) + float(sum(per_object))
