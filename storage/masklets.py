"""Writing and reading masklets (an object's masks through a video) in bulk.

A model's output for one video is replaced as a whole, in one transaction: re-running
pre-annotation with the same model version (and round) leaves exactly one copy, and a crash half
way leaves the previous copy intact. Frame masks go through `copy_insert` (COPY on PostgreSQL).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

from sqlalchemy import Connection, delete, func, select

from storage.db import copy_insert
from storage.masks import rle_area, rle_bbox
from storage.schema import FrameMask, Masklet, MaskletStatus, SourceKind

FRAME_MASK_COLUMNS = ("masklet_id", "frame_index", "rle_counts", "height", "width", "area",
                      "bbox_x", "bbox_y", "bbox_w", "bbox_h", "predicted_iou", "object_score")


@dataclass
class MaskletRecord:
    """Plain data for one masklet: COCO RLE per frame index, optional per-frame scores."""

    object_id: int
    label: str
    rles: dict[int, dict]
    pred_iou: dict[int, float] = field(default_factory=dict)
    object_score: dict[int, float] = field(default_factory=dict)


def _finite(x: float | None) -> float | None:
    if x is None or x != x:  # NaN
        return None
    return float(x)


def frame_rows(masklet_id: int, rec: MaskletRecord) -> Iterator[tuple]:
    for t in sorted(rec.rles):
        rle = rec.rles[t]
        h, w = int(rle["size"][0]), int(rle["size"][1])
        x, y, bw, bh = rle_bbox(rle)
        counts = rle["counts"] if isinstance(rle["counts"], str) else rle["counts"].decode("ascii")
        yield (masklet_id, int(t), counts, h, w, rle_area(rle), float(x), float(y), float(bw),
               float(bh), _finite(rec.pred_iou.get(t)), _finite(rec.object_score.get(t)))


def replace_model_masklets(conn: Connection, *, video_id: int, model_version_id: int,
                           round_id: int | None, records: Sequence[MaskletRecord],
                           status: MaskletStatus = MaskletStatus.PREDICTED,
                           source_kind: SourceKind = SourceKind.MODEL) -> list[int]:
    """Replace the masklets that `model_version_id` produced for `video_id` (in `round_id`):
    its first predictions (``SourceKind.MODEL``) or its re-propagation of corrected frames
    (``SourceKind.REPROPAGATED``), each kind apart from the other.

    Runs in the caller's transaction; returns the new masklet ids in `records` order.
    """
    if source_kind not in (SourceKind.MODEL, SourceKind.REPROPAGATED):
        raise ValueError(f"model masklets are {SourceKind.MODEL} or {SourceKind.REPROPAGATED}, not {source_kind}")
    old = select(Masklet.id).where(
        Masklet.video_id == video_id,
        Masklet.source_kind == source_kind,
        Masklet.source_model_version_id == model_version_id,
        (Masklet.round_id == round_id) if round_id is not None else Masklet.round_id.is_(None),
    )
    old_ids = [r[0] for r in conn.execute(old)]
    if old_ids:
        conn.execute(delete(FrameMask).where(FrameMask.masklet_id.in_(old_ids)))
        conn.execute(delete(Masklet).where(Masklet.id.in_(old_ids)))
    ids = []
    for rec in records:
        mid = conn.execute(
            Masklet.__table__.insert().values(
                video_id=video_id, object_id=int(rec.object_id), label=rec.label,
                source_kind=source_kind, source_model_version_id=model_version_id,
                status=status, round_id=round_id,
            ).returning(Masklet.id)
        ).scalar_one()
        ids.append(mid)
    rows = (row for mid, rec in zip(ids, records) for row in frame_rows(mid, rec))
    copy_insert(conn, FrameMask, rows, FRAME_MASK_COLUMNS)
    return ids


def masklet_frames(conn: Connection, masklet_id: int) -> dict[int, dict]:
    """{frame_index: COCO RLE} of one masklet, read in frame order through the unique index."""
    q = select(FrameMask.frame_index, FrameMask.rle_counts, FrameMask.height, FrameMask.width).where(
        FrameMask.masklet_id == masklet_id).order_by(FrameMask.frame_index)
    return {t: {"size": [h, w], "counts": c} for t, c, h, w in conn.execute(q)}


def masklet_scores(conn: Connection, masklet_ids: Sequence[int]) -> dict[int, dict]:
    """Mean predicted IoU / object score and frame count per masklet (for ranking queues)."""
    if not masklet_ids:
        return {}
    q = select(FrameMask.masklet_id, func.avg(FrameMask.predicted_iou), func.avg(FrameMask.object_score),
               func.count()).where(FrameMask.masklet_id.in_(list(masklet_ids))).group_by(FrameMask.masklet_id)
    return {mid: {"mean_pred_iou": iou, "mean_object_score": sc, "frames": n}
            for mid, iou, sc, n in conn.execute(q)}
