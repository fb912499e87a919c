"""Chunk tasks: one Label Studio task per video chunk (``chunk_frames`` frames), as a multi-image
task whose frames are files under a local-files storage, with every predicted mask imported as a
brush prediction per frame and object (``item_index`` = frame within the chunk).

Pure functions (no server): the importer sends what ``build_task_payload`` returns.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from annotation.labelstudio.label_config import (
    BRUSH_FROM_NAME,
    CORRECTION,
    IMAGE_TO_NAME,
    KINDS,
    VERIFICATION,
    label_for_slot,
    verdict_name,
)
from storage.masks import mask_to_brush

__all__ = [
    "ChunkObject",
    "ChunkTask",
    "LOCAL_FILES_PREFIX",
    "brush_result",
    "build_task_payload",
    "chunk_ranges",
    "idempotency_key",
    "local_file_url",
    "write_frames",
]

LOCAL_FILES_PREFIX = "/data/local-files/?d="


def idempotency_key(dataset: str, video: str, chunk_index: int, round_number: int, kind: str) -> str:
    """The key of one task: dataset / video / chunk / round / kind (unique in annotation_tasks)."""
    if kind not in KINDS:
        raise ValueError(f"unknown round kind {kind!r}; expected one of {KINDS}")
    for name, v in (("dataset", dataset), ("video", video)):
        if not v or "/" in str(v):
            raise ValueError(f"{name} {v!r} must be non-empty and contain no '/'")
    return f"ls/{dataset}/{video}/c{int(chunk_index):05d}/r{int(round_number)}/{kind}"


def chunk_ranges(frame_count: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[(start, stop)) frame ranges of ``chunk_frames`` frames (the last one may be shorter)."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    return [(s, min(s + chunk_frames, frame_count)) for s in range(0, max(frame_count, 0), chunk_frames)]


def local_file_url(relpath: str | Path) -> str:
    """The URL Label Studio serves a file under its LOCAL_FILES_DOCUMENT_ROOT at."""
    rel = Path(relpath).as_posix().lstrip("/")
    return LOCAL_FILES_PREFIX + quote(rel, safe="/")


def write_frames(
    frames: np.ndarray | Sequence[np.ndarray],
    media_root: str | Path,
    relative_dir: str | Path,
    *,
    first_index: int = 0,
    fmt: str = "png",
    jpeg_quality: int = 92,
    overwrite: bool = False,
) -> list[str]:
    """Write frames (uint8 HxWx3) as ``<media_root>/<relative_dir>/f<index:06d>.<fmt>`` and return
    their ``/data/local-files/?d=...`` URLs. ``relative_dir`` must lie under a folder that a
    project's local-files storage points at. Existing files are kept unless ``overwrite``."""
    from PIL import Image

    fmt = fmt.lower()
    if fmt not in ("png", "jpg", "jpeg"):
        raise ValueError(f"frame format must be png or jpg, got {fmt!r}")
    ext = "jpg" if fmt in ("jpg", "jpeg") else "png"
    rel_dir = Path(relative_dir)
    if rel_dir.is_absolute() or ".." in rel_dir.parts:
        raise ValueError(f"relative_dir must be relative and stay inside the media root: {relative_dir}")
    out_dir = Path(media_root) / rel_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    urls = []
    for i, frame in enumerate(frames):
        arr = np.asarray(frame)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise ValueError(f"frame {first_index + i}: expected uint8 HxW or HxWx3, got {arr.dtype} {arr.shape}")
        name = f"f{first_index + i:06d}.{ext}"
        path = out_dir / name
        if overwrite or not path.exists():
            tmp = path.with_suffix(path.suffix + ".tmp")
            img = Image.fromarray(arr)
            if ext == "jpg":
                img.save(tmp, format="JPEG", quality=jpeg_quality)
            else:
                img.save(tmp, format="PNG", compress_level=1)
            tmp.replace(path)  # atomic: the server never serves half a file
        urls.append(local_file_url(rel_dir / name))
    return urls


@dataclass(frozen=True)
class ChunkObject:
    """One masklet in a chunk task: shown as label ``object_<slot>`` (slots start at 1)."""

    slot: int
    object_id: int
    label: str
    masklet_id: int | None = None


@dataclass
class ChunkTask:
    """One chunk of one video for one round kind.

    ``predicted`` maps (slot, frame offset in the chunk) to a bool[H, W] mask or an already
    encoded brush RLE (list of ints); frames/objects without an entry have no prediction.
    ``video_id``/``round_id`` are the database ids (needed when the importer records tasks).
    """

    dataset: str
    video: str
    chunk_index: int
    frame_start: int
    frame_stop: int
    round_number: int
    kind: str
    width: int
    height: int
    frame_urls: list[str]
    objects: list[ChunkObject]
    predicted: Mapping[tuple[int, int], np.ndarray | list[int]] = field(default_factory=dict)
    model_version: str | None = None
    score: float | None = None
    video_id: int | None = None
    round_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown round kind {self.kind!r}; expected one of {KINDS}")
        n = self.frame_stop - self.frame_start
        if n < 1 or self.frame_start < 0:
            raise ValueError(f"bad frame range [{self.frame_start}, {self.frame_stop})")
        if len(self.frame_urls) != n:
            raise ValueError(f"{len(self.frame_urls)} frame URLs for {n} frames")
        slots = [o.slot for o in self.objects]
        if sorted(slots) != list(range(1, len(slots) + 1)):
            raise ValueError(f"object slots must be 1..{len(slots)}, got {slots}")
        for (slot, t) in self.predicted:
            if slot not in slots or not 0 <= t < n:
                raise ValueError(f"prediction for slot {slot} frame {t} outside the task "
                                 f"({len(slots)} objects, {n} frames)")

    @property
    def n_frames(self) -> int:
        return self.frame_stop - self.frame_start

    @property
    def key(self) -> str:
        return idempotency_key(self.dataset, self.video, self.chunk_index, self.round_number, self.kind)


def brush_result(mask_or_brush: np.ndarray | list[int], slot: int, item_index: int,
                 width: int, height: int, region_id: str | None = None) -> dict:
    """One brush region (a result item) for object ``slot`` on frame ``item_index``."""
    if isinstance(mask_or_brush, np.ndarray):
        rle = mask_to_brush(mask_or_brush, expected_size=(height, width))
    else:
        rle = [int(v) for v in mask_or_brush]
    item = {
        "from_name": BRUSH_FROM_NAME,
        "to_name": IMAGE_TO_NAME,
        "type": "brushlabels",
        "origin": "prediction",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "item_index": int(item_index),
        "value": {"format": "rle", "rle": rle, "brushlabels": [label_for_slot(slot)]},
    }
    if region_id:
        item["id"] = region_id
    return item


def _legend(task: ChunkTask) -> str:
    objs = ", ".join(f"{label_for_slot(o.slot)} = {o.label} #{o.object_id}" for o in task.objects)
    what = "correct the masks" if task.kind == CORRECTION else "judge each masklet"
    return (f"{task.video} frames {task.frame_start}-{task.frame_stop - 1} "
            f"(round {task.round_number}, {what}): {objs}")


def build_task_payload(task: ChunkTask, *, prefill_verdicts: bool = False) -> dict:
    """The import payload: ``{"data": ..., "predictions": [{model_version, score, result}]}``.

    ``data`` carries what reading the results back needs (frame range, size, slot -> object map,
    kind) and the idempotency key."""
    data = {
        "frames": list(task.frame_urls),
        "legend": _legend(task),
        "idempotency_key": task.key,
        "dataset": task.dataset,
        "video": task.video,
        "chunk": task.chunk_index,
        "frame_start": task.frame_start,
        "frame_stop": task.frame_stop,
        "round": task.round_number,
        "kind": task.kind,
        "width": task.width,
        "height": task.height,
        "objects": [
            {"slot": o.slot, "object_id": o.object_id, "label": o.label,
             **({"masklet_id": o.masklet_id} if o.masklet_id is not None else {})}
            for o in task.objects
        ],
    }
    result = [
        brush_result(m, slot, t, task.width, task.height, region_id=f"p{slot}_{t}")
        for (slot, t), m in sorted(task.predicted.items())
    ]
    if prefill_verdicts and task.kind == VERIFICATION:
        result += [{"from_name": verdict_name(o.slot), "to_name": IMAGE_TO_NAME, "type": "choices",
                    "value": {"choices": ["satisfactory"]}} for o in task.objects]
    payload: dict = {"data": data}
    if result:
        pred: dict = {"result": result}
        if task.model_version is not None:
            pred["model_version"] = task.model_version
        if task.score is not None:
            pred["score"] = float(task.score)
        payload["predictions"] = [pred]
    return payload
