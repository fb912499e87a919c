"""Publish the engine's database to a FiftyOne video dataset, incrementally and in bulk.

One FiftyOne sample per video (``video_id`` is the join key back to our database). What it carries:

- frame fields (FiftyOne frame numbers are 1-based: frame ``t`` of ours is frame ``t + 1``):
  ``masks`` (``fo.Detections``: one instance mask per current masklet present on the frame, with
  ``masklet_id``, ``object_id``, ``source`` (``model:<family>/<version>``, ``repropagated:<family>/<version>``, ``human``, ...),
  ``status``, ``round``, ``predicted_iou`` (also the detection's ``confidence``), ``object_score``
  and ``gt_iou``), ``ground_truth`` (synthetic data: the exact masks) and one ``emb_<family>``
  vector per keyframe embedding;
- sample fields: split, rounds, masklet counts and confidence, status counts, effort totals and
  ``effort_by_round``, ``gt_iou_mean``, a ``masklets`` summary list (one document per masklet,
  with its masklet embeddings), ``emb_<family>`` (the video embedding) and near-duplicate links;
- per embedding family a brain similarity index (``backend="sklearn"``), brain key ``sim_<family>``.

Embedding families are read from the ``embeddings`` table by name, so a new family (captions,
FLIP, ...) becomes new fields without code changes here.

Incremental: a watermark per FiftyOne dataset lives in our database as a ``pipeline_runs`` row
(``flow="fiftyone_publish"``, ``run_key="fiftyone_publish:<name>"``, the state in ``result``):
high-water ids of the append-only tables (frame masks, effort events, embeddings; writers replace
rows by delete + insert, so a change is always a new id) and one fingerprint per video of its
masklets (count, ids, statuses, ``updated_at``: catches deletions and status changes). A token
stored in both the watermark and the dataset's ``info`` detects a FiftyOne dataset that was
deleted or replaced behind our back: then everything is published again.

Bulk: the schema is declared up front, and nothing builds one ODM object per label. New videos of
a batch go in with one ``add_samples`` (sample fields; the masklet summaries by ``set_values``
from raw dicts), then all their frames, every frame field at once, with one ``insert_many`` of raw
frame documents. Videos published before are updated in place with one ``set_values`` per field
(raw dicts, ``validate=False``). The labels themselves (``annotation.fiftyone.labels``) are where
the time goes: every RLE decoded once, per video, with vectorised IoU against the ground truth.
"""
from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, false, func, select

from annotation.fiftyone.labels import LabelError, Track, serialize_mask, video_labels
from storage.blobs import BlobStore, LocalBlobStore
from storage.db import iter_rows, session_scope
from storage.schema import (
    AnnotationRound,
    AnnotationTask,
    Dataset,
    EffortEvent,
    Embedding,
    FrameMask,
    Masklet,
    MaskletStatus,
    ModelVersion,
    PipelineRun,
    RunStatus,
    SourceKind,
    SubjectKind,
    Video,
)

__all__ = [
    "PUBLISH_FLOW",
    "PublishError",
    "PublishReport",
    "embedding_field",
    "publish",
    "run_key",
]

PUBLISH_FLOW = "fiftyone_publish"
INFO_TOKEN = "dataengine_publish_token"
# Who wins when several masklets of one video share an object id: the latest round, then work by
# people over the model's, then the newest row.
_SOURCE_RANK = {SourceKind.GROUND_TRUTH: 4, SourceKind.HUMAN: 3, SourceKind.SCRIPTED_ANNOTATOR: 3,
                SourceKind.REPROPAGATED: 2, SourceKind.MODEL: 1}


class PublishError(RuntimeError):
    """The publication cannot run (unknown dataset, unreadable media)."""


@dataclass
class PublishReport:
    fo_dataset: str
    videos_total: int = 0
    videos_added: int = 0
    videos_updated: int = 0
    videos_removed: int = 0
    frames_written: int = 0
    masks_written: int = 0
    full: bool = False
    embedding_families: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.videos_added or self.videos_updated or self.videos_removed)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __str__(self) -> str:
        if not self.changed:
            return (f"{self.fo_dataset}: up to date ({self.videos_total} videos, "
                    f"{self.seconds:.2f} s)")
        return (f"{self.fo_dataset}: +{self.videos_added} new, {self.videos_updated} updated, "
                f"-{self.videos_removed} removed videos; {self.frames_written} frames, "
                f"{self.masks_written} masks in {self.seconds:.1f} s"
                + (" (full publish)" if self.full else ""))


def run_key(fo_dataset: str) -> str:
    return f"{PUBLISH_FLOW}:{fo_dataset}"


def embedding_field(family: str) -> str:
    """``sam2-encoder`` -> ``emb_sam2_encoder`` (a valid FiftyOne field name per family)."""
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", family).strip("_").lower()
    if not slug:
        raise ValueError(f"embedding family {family!r} gives no usable field name")
    return f"emb_{slug}"


def brain_key(family: str) -> str:
    return "sim_" + embedding_field(family)[4:]


# --- what changed --------------------------------------------------------------------------------
@dataclass
class _DbState:
    dataset_id: int
    fingerprints: dict[int, str]
    frame_mask_max_id: int
    effort_max_id: int
    embedding_max_id: int
    families: list[str]


def _db_state(conn, dataset_id: int) -> _DbState:
    videos = select(Video.id).where(Video.dataset_id == dataset_id).scalar_subquery()
    acc: dict[int, list] = {}
    for vid, split, gt, sha in conn.execute(
            select(Video.id, Video.split, Video.ground_truth_uri, Video.sha256)
            .where(Video.dataset_id == dataset_id)):
        acc[vid] = [str(split), gt or "", sha]
    q = (select(Masklet.video_id, Masklet.status, func.count(), func.max(Masklet.id),
                func.sum(Masklet.id), func.max(Masklet.updated_at))
         .where(Masklet.video_id.in_(videos))
         .group_by(Masklet.video_id, Masklet.status)
         .order_by(Masklet.video_id, Masklet.status))
    for vid, status, n, mx, sm, upd in conn.execute(q):
        acc.setdefault(vid, []).append((str(status), n, mx, sm, str(upd)))
    fps = {vid: hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]
           for vid, parts in acc.items()}
    fam_q = (select(Embedding.family).where(Embedding.video_id.in_(videos))
             .distinct().order_by(Embedding.family))
    return _DbState(
        dataset_id=dataset_id,
        fingerprints=fps,
        frame_mask_max_id=conn.execute(select(func.max(FrameMask.id))).scalar() or 0,
        effort_max_id=conn.execute(select(func.max(EffortEvent.id))).scalar() or 0,
        embedding_max_id=conn.execute(select(func.max(Embedding.id))).scalar() or 0,
        families=[f for (f,) in conn.execute(fam_q)],
    )


def _touched_since(conn, dataset_id: int, wm: dict) -> set[int]:
    """Videos with frame masks, effort events or embeddings newer than the watermark."""
    videos = select(Video.id).where(Video.dataset_id == dataset_id).scalar_subquery()
    out: set[int] = set()
    if wm.get("frame_mask_max_id") is not None:
        q = (select(Masklet.video_id).join(FrameMask, FrameMask.masklet_id == Masklet.id)
             .where(FrameMask.id > wm["frame_mask_max_id"], Masklet.video_id.in_(videos))
             .distinct())
        out.update(v for (v,) in conn.execute(q))
    if wm.get("effort_max_id") is not None:
        new = EffortEvent.id > wm["effort_max_id"]
        q1 = (select(Masklet.video_id).join(EffortEvent, EffortEvent.masklet_id == Masklet.id)
              .where(new, Masklet.video_id.in_(videos)).distinct())
        q2 = (select(AnnotationTask.video_id).join(EffortEvent, EffortEvent.task_id == AnnotationTask.id)
              .where(new, AnnotationTask.video_id.in_(videos)).distinct())
        out.update(v for (v,) in conn.execute(q1))
        out.update(v for (v,) in conn.execute(q2))
    if wm.get("embedding_max_id") is not None:
        q = (select(Embedding.video_id).where(Embedding.id > wm["embedding_max_id"],
                                              Embedding.video_id.in_(videos)).distinct())
        out.update(v for (v,) in conn.execute(q))
    return out


def _load_watermark(engine: Engine, fo_dataset: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(select(PipelineRun.result, PipelineRun.status)
                           .where(PipelineRun.run_key == run_key(fo_dataset))).first()
    if row is None or row.status != RunStatus.SUCCEEDED or not row.result:
        return None
    return row.result.get("watermark")


def _save_watermark(engine: Engine, fo_dataset: str, dataset: str, watermark: dict,
                    report: PublishReport, started: dt.datetime) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope(engine) as s:
        row = s.scalar(select(PipelineRun).where(PipelineRun.run_key == run_key(fo_dataset)))
        if row is None:
            row = PipelineRun(flow=PUBLISH_FLOW, run_key=run_key(fo_dataset))
            s.add(row)
        row.status = RunStatus.SUCCEEDED
        row.params = {"dataset": dataset, "fo_dataset": fo_dataset}
        row.result = {"watermark": watermark, "last": report.to_dict()}
        row.error = None
        row.started_at = started
        row.finished_at = now


# --- reading one batch of videos ------------------------------------------------------------------
@dataclass
class _MaskletInfo:
    id: int
    video_id: int
    object_id: int
    label: str
    source_kind: SourceKind
    source: str
    status: MaskletStatus
    round: int | None
    updated_at: Any
    current: bool = False
    frames: dict[int, tuple] = field(default_factory=dict)  # t -> (rle, bbox, pred_iou, score)
    effort: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    gt_iou: float | None = None
    embeddings: dict[str, list[float]] = field(default_factory=dict)


def _vector(row, blob_store: BlobStore) -> list[float]:
    raw = row.vector if row.vector is not None else blob_store.get_bytes(row.blob_key)
    vec = np.frombuffer(raw, dtype="<f4")
    if vec.size != row.dim:
        raise PublishError(f"embedding {row.id} ({row.family}) has {vec.size} values, dim says {row.dim}")
    return vec.astype(float).tolist()


def _ground_truth(video: Video, blob_store: BlobStore) -> dict | None:
    if not video.ground_truth_uri:
        return None
    from storage.synthetic.dataset import GT_FORMAT

    doc = json.loads(blob_store.get_bytes(blob_store.key_for_uri(video.ground_truth_uri)))
    if doc.get("format") != GT_FORMAT:
        raise PublishError(f"video {video.id}: {video.ground_truth_uri} is not a {GT_FORMAT} document")
    return doc


@dataclass
class _Batch:
    """Everything one batch of videos publishes: sample field values and frame field values."""

    video_ids: list[int]
    filepaths: dict[int, str] = field(default_factory=dict)
    metadata: dict[int, dict] = field(default_factory=dict)
    sample_values: dict[str, dict[int, Any]] = field(default_factory=lambda: defaultdict(dict))
    frame_values: dict[str, dict[int, dict[int, Any]]] = field(default_factory=lambda: defaultdict(dict))
    frames: int = 0
    masks: int = 0


def _media_path(video: Video, blob_store: BlobStore, media_dir: Path | None) -> str:
    if video.blob_key is None:
        return video.source_path or video.uri
    if isinstance(blob_store, LocalBlobStore):
        return str(blob_store.path(video.blob_key))
    if media_dir is None:
        raise PublishError("videos live in a remote blob store: give a media_dir to copy them into")
    dest = Path(media_dir) / video.blob_key
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        blob_store.download(video.blob_key, dest)
    return str(dest)


def _read_batch(engine: Engine, blob_store: BlobStore, video_ids: list[int],
                families: Sequence[str], media_dir: Path | None,
                serialize_masks: bool = True) -> _Batch:
    """Everything ``video_ids`` publish, read with a handful of queries. Masks are serialized
    (BSON-ready) unless ``serialize_masks`` is False (numpy arrays, for ``fo.Detection``)."""
    serialize = serialize_mask if serialize_masks else None
    batch = _Batch(video_ids)
    with session_scope(engine) as s:
        videos = {v.id: v for v in s.scalars(select(Video).where(Video.id.in_(video_ids)))}
        round_no = dict(s.execute(select(AnnotationRound.id, AnnotationRound.number)
                                  .where(AnnotationRound.dataset_id == next(iter(videos.values())).dataset_id)
                                  ).all()) if videos else {}
        mv = {i: f"{fam}/{ver}" for i, fam, ver in s.execute(
            select(ModelVersion.id, ModelVersion.family, ModelVersion.version))}
        masklets: dict[int, _MaskletInfo] = {}
        for m in s.scalars(select(Masklet).where(Masklet.video_id.in_(video_ids))
                           .order_by(Masklet.video_id, Masklet.id)):
            src = (f"{m.source_kind}:{mv.get(m.source_model_version_id, m.source_model_version_id)}"
                   if m.source_kind in (SourceKind.MODEL, SourceKind.REPROPAGATED) else str(m.source_kind))
            masklets[m.id] = _MaskletInfo(m.id, m.video_id, m.object_id, m.label, m.source_kind, src,
                                          m.status, round_no.get(m.round_id), m.updated_at)
        ids = list(masklets)
        for lo in range(0, len(ids), 500):
            part = ids[lo:lo + 500]
            q = (select(FrameMask.masklet_id, FrameMask.frame_index, FrameMask.rle_counts,
                        FrameMask.height, FrameMask.width, FrameMask.bbox_x, FrameMask.bbox_y,
                        FrameMask.bbox_w, FrameMask.bbox_h, FrameMask.predicted_iou,
                        FrameMask.object_score)
                 .where(FrameMask.masklet_id.in_(part)))
            for mid, t, counts, h, w, bx, by, bw, bh, piou, score in iter_rows(s, q, batch=5000):
                masklets[mid].frames[t] = ({"size": [h, w], "counts": counts}, (bx, by, bw, bh),
                                           piou, score)
        # Effort: per masklet (events that name one) and per video and round (all events).
        tasks = dict(s.execute(select(AnnotationTask.id, AnnotationTask.video_id)
                               .where(AnnotationTask.video_id.in_(video_ids))).all())
        effort_video: dict[int, dict] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
        q = select(EffortEvent).where(
            (EffortEvent.masklet_id.in_(ids) if ids else false()) |
            (EffortEvent.task_id.in_(list(tasks)) if tasks else false()))
        for e in s.scalars(q):
            vid = masklets[e.masklet_id].video_id if e.masklet_id in masklets else tasks.get(e.task_id)
            if vid is None:
                continue
            counts = {"seconds": e.seconds, "frames_edited": e.frames_edited, "clicks": e.clicks,
                      "strokes": e.strokes, "events": 1}
            rnd = str(round_no.get(e.round_id, e.round_id))
            for k, v in counts.items():
                effort_video[vid][rnd][k] += v
                if e.masklet_id in masklets:
                    masklets[e.masklet_id].effort[k] += v
            effort_video[vid][rnd]["human_seconds" if e.actor_kind == "human" else "other_seconds"] += e.seconds
        # Embeddings by family.
        emb_video: dict[int, dict[str, list]] = defaultdict(dict)
        emb_frame: dict[int, dict[str, dict[int, list]]] = defaultdict(lambda: defaultdict(dict))
        if families:
            q = (select(Embedding).where(Embedding.video_id.in_(video_ids),
                                         Embedding.family.in_(list(families)))
                 .order_by(Embedding.id))  # newest last: it wins
            for e in s.scalars(q):
                vec = _vector(e, blob_store)
                fname = embedding_field(e.family)
                if e.subject_kind == SubjectKind.VIDEO:
                    emb_video[e.video_id][fname] = vec
                elif e.subject_kind == SubjectKind.FRAME:
                    emb_frame[e.video_id][fname][e.frame_index] = vec
                elif e.masklet_id in masklets:
                    masklets[e.masklet_id].embeddings[fname] = vec

        by_video: dict[int, list[_MaskletInfo]] = defaultdict(list)
        for m in masklets.values():
            by_video[m.video_id].append(m)
        for vid in video_ids:
            v = videos.get(vid)
            if v is None:
                continue
            batch.filepaths[vid] = _media_path(v, blob_store, media_dir)
            batch.metadata[vid] = {
                "_cls": "VideoMetadata", "size_bytes": int(v.size_bytes), "mime_type": "video/mp4",
                "frame_width": int(v.width), "frame_height": int(v.height),
                "frame_rate": float(v.fps), "total_frame_count": int(v.frame_count),
                "duration": float(v.frame_count / v.fps) if v.fps else None,
                "encoding_str": None,
            }
            _video_values(batch, v, by_video.get(vid, []), _ground_truth(v, blob_store),
                          effort_video.get(vid, {}), emb_video.get(vid, {}),
                          emb_frame.get(vid, {}), families, serialize)
    return batch


def _video_values(batch: _Batch, v: Video, masklets: list[_MaskletInfo], gt: dict | None,
                  effort: dict, emb_video: dict, emb_frame: dict, families: Sequence[str],
                  serialize: Callable | None) -> None:
    # The current masklet of each object: latest round, people over the model, newest row.
    best: dict[int, _MaskletInfo] = {}
    for m in masklets:
        key = (m.round if m.round is not None else -1, _SOURCE_RANK.get(m.source_kind, 0), m.id)
        cur = best.get(m.object_id)
        if cur is None or key > (cur.round if cur.round is not None else -1,
                                 _SOURCE_RANK.get(cur.source_kind, 0), cur.id):
            best[m.object_id] = m
    current = sorted(best.values(), key=lambda m: m.object_id)
    for m in current:
        m.current = True
    n_frames = int(v.frame_count) or (1 + max((t for m in masklets for t in m.frames), default=-1))
    tracks = [Track(m.frames, {"label": m.label, "masklet_id": m.id, "object_id": m.object_id,
                               "source": m.source, "status": str(m.status), "round": m.round})
              for m in current]
    try:
        labels = video_labels(tracks, gt, n_frames, int(v.width), int(v.height), serialize)
    except LabelError as exc:
        raise PublishError(f"video {v.id}: {exc}") from exc
    for m, iou in zip(current, labels.track_gt_iou):
        m.gt_iou = iou
    gt_mean = labels.gt_iou_mean

    vid = v.id
    sv = batch.sample_values
    mean_iou = {}
    for m in masklets:
        vals = [f[2] for f in m.frames.values() if f[2] is not None]
        mean_iou[m.id] = (float(np.mean(vals)), float(np.min(vals))) if vals else (None, None)
    cur_means = [mean_iou[m.id][0] for m in current if mean_iou[m.id][0] is not None]
    status_counts = defaultdict(int)
    for m in current:
        status_counts[str(m.status)] += 1
    rounds = sorted({m.round for m in masklets if m.round is not None} |
                    {int(r) for r in effort if str(r).isdigit()})
    totals = defaultdict(float)
    for per in effort.values():
        for k, x in per.items():
            totals[k] += x
    sv["video_id"][vid] = vid
    sv["split"][vid] = str(v.split)
    sv["sha256"][vid] = v.sha256
    sv["source_path"][vid] = v.source_path
    sv["rounds"][vid] = rounds
    sv["latest_round"][vid] = rounds[-1] if rounds else None
    sv["masklet_count"][vid] = len(current)
    sv["mean_pred_iou"][vid] = float(np.mean(cur_means)) if cur_means else None
    sv["least_masklet_pred_iou"][vid] = float(min(cur_means)) if cur_means else None
    sv["status_counts"][vid] = dict(status_counts)
    sv["rejected_masklets"][vid] = status_counts.get("rejected", 0)
    # Re-propagated masklets judged unsatisfactory at verification go back to in_review.
    sv["sent_back_masklets"][vid] = sum(1 for m in current if m.source_kind == SourceKind.REPROPAGATED
                                        and m.status == MaskletStatus.IN_REVIEW)
    sv["corrected_masklets"][vid] = status_counts.get("corrected", 0) + status_counts.get("verified", 0)
    sv["effort_seconds"][vid] = float(totals.get("seconds", 0.0))
    sv["effort_frames_edited"][vid] = int(totals.get("frames_edited", 0))
    sv["effort_clicks"][vid] = int(totals.get("clicks", 0))
    sv["effort_strokes"][vid] = int(totals.get("strokes", 0))
    sv["effort_by_round"][vid] = {r: {k: float(x) for k, x in per.items()} for r, per in effort.items()}
    sv["has_ground_truth"][vid] = gt is not None
    sv["gt_iou_mean"][vid] = gt_mean
    docs = []
    for m in sorted(masklets, key=lambda m: (m.object_id, m.id)):
        doc = {"_cls": "DynamicEmbeddedDocument", "masklet_id": m.id, "object_id": m.object_id,
               "label": m.label, "source": m.source, "status": str(m.status), "round": m.round,
               "current": m.current, "num_frames": len(m.frames),
               "mean_pred_iou": mean_iou[m.id][0], "min_pred_iou": mean_iou[m.id][1],
               "effort_seconds": float(m.effort.get("seconds", 0.0)),
               "effort_frames_edited": int(m.effort.get("frames_edited", 0)),
               "gt_iou": m.gt_iou}
        for fam in families:
            doc[embedding_field(fam)] = m.embeddings.get(embedding_field(fam))
        docs.append(doc)
    sv["masklets"][vid] = docs
    for fam in families:
        sv[embedding_field(fam)][vid] = emb_video.get(embedding_field(fam))

    batch.masks += labels.mask_count
    batch.frame_values["masks"][vid] = labels.masks
    batch.frame_values["ground_truth"][vid] = (labels.ground_truth if labels.ground_truth is not None
                                               else dict.fromkeys(labels.masks))
    batch.frames += n_frames
    for fam in families:
        fname = embedding_field(fam)
        per = emb_frame.get(fname, {})
        batch.frame_values[fname][vid] = {t + 1: per.get(t) for t in range(n_frames)}


# --- FiftyOne side --------------------------------------------------------------------------------
_DETECTION_ATTRS = {"masklet_id": "IntField", "object_id": "IntField", "source": "StringField",
                    "status": "StringField", "round": "IntField", "predicted_iou": "FloatField",
                    "object_score": "FloatField", "gt_iou": "FloatField"}
_SAMPLE_FIELDS = {
    "video_id": "IntField", "split": "StringField", "sha256": "StringField",
    "source_path": "StringField", "latest_round": "IntField", "masklet_count": "IntField",
    "mean_pred_iou": "FloatField", "least_masklet_pred_iou": "FloatField",
    "rejected_masklets": "IntField", "sent_back_masklets": "IntField", "corrected_masklets": "IntField",
    "effort_seconds": "FloatField", "effort_frames_edited": "IntField",
    "effort_clicks": "IntField", "effort_strokes": "IntField", "has_ground_truth": "BooleanField",
    "gt_iou_mean": "FloatField", "near_duplicate_of": "IntField", "duplicate_distance": "FloatField",
}
_MASKLET_DOC_FIELDS = {"masklet_id": "IntField", "object_id": "IntField", "label": "StringField",
                       "source": "StringField", "status": "StringField", "round": "IntField",
                       "current": "BooleanField", "num_frames": "IntField",
                       "mean_pred_iou": "FloatField", "min_pred_iou": "FloatField",
                       "effort_seconds": "FloatField", "effort_frames_edited": "IntField",
                       "gt_iou": "FloatField"}


def _schema(families: Sequence[str]) -> tuple[dict, dict]:
    """(sample fields, frame fields) as {path: FiftyOne field}; roots before their subpaths."""
    import fiftyone as fo

    def floats():
        return fo.ListField(fo.FloatField())

    sample = {name: getattr(fo, t)() for name, t in _SAMPLE_FIELDS.items()}
    sample["rounds"] = fo.ListField(fo.IntField())
    sample["status_counts"] = fo.DictField()
    sample["effort_by_round"] = fo.DictField()
    sample["masklets"] = fo.ListField(fo.EmbeddedDocumentField(fo.DynamicEmbeddedDocument))
    frame = {"masks": fo.EmbeddedDocumentField(fo.Detections),
             "ground_truth": fo.EmbeddedDocumentField(fo.Detections)}
    for fam in families:
        sample[embedding_field(fam)] = floats()
        frame[embedding_field(fam)] = floats()
    for name, t in _MASKLET_DOC_FIELDS.items():
        sample[f"masklets.{name}"] = getattr(fo, t)()
    for fam in families:
        sample[f"masklets.{embedding_field(fam)}"] = floats()
    for name, t in _DETECTION_ATTRS.items():
        frame[f"masks.detections.{name}"] = getattr(fo, t)()
    frame["ground_truth.detections.object_id"] = fo.IntField()
    return sample, frame


def _ensure_schema(ds, families: Sequence[str]) -> None:
    """Declare every field up front (set_values then writes raw dicts without inferring)."""
    if ds.media_type != "video":
        ds.media_type = "video"
    sample, frame = _schema(families)
    sample = {k: f for k, f in sample.items() if not ds.has_sample_field(k)}
    frame = {k: f for k, f in frame.items() if not ds.has_frame_field(k)}
    if not sample and not frame:
        return
    # One schema merge per level (roots, then their subpaths) and one dataset reload in all,
    # instead of a merge and a reload per field (~50 fields one by one cost seconds) or per level
    # (each reload is ~50 ms of round trips). Private in FiftyOne 1.22: the public way is the
    # fallback.
    try:
        roots = lambda d: {k: f for k, f in d.items() if "." not in k}  # noqa: E731
        subs = lambda d: {k: f for k, f in d.items() if "." in k}  # noqa: E731
        for doc_cls, schema in ((ds._sample_doc_cls, sample), (ds._frame_doc_cls, frame)):
            for part in (roots(schema), subs(schema)):
                if part:
                    doc_cls.merge_field_schema(part)
        ds._reload()
    except (AttributeError, TypeError):
        for k, f in sample.items():
            if not ds.has_sample_field(k):
                ds.add_sample_field(k, type(f), **_field_kwargs(f))
        for k, f in frame.items():
            if not ds.has_frame_field(k):
                ds.add_frame_field(k, type(f), **_field_kwargs(f))


def _field_kwargs(f) -> dict:
    import fiftyone as fo

    if isinstance(f, fo.ListField) and f.field is not None:
        kw = {"subfield": type(f.field)}
        if isinstance(f.field, fo.EmbeddedDocumentField):
            kw["embedded_doc_type"] = f.field.document_type
        return kw
    if isinstance(f, fo.EmbeddedDocumentField):
        return {"embedded_doc_type": f.document_type}
    return {}


def _sample_for(batch: _Batch, vid: int, skip: Sequence[str] = ()):
    """A new ``fo.Sample`` with the sample-level fields of ``vid`` (but ``skip``)."""
    import fiftyone as fo

    fields = {}
    for name, per_video in batch.sample_values.items():
        if name in skip:
            continue
        value = per_video.get(vid)
        if name == "masklets":
            value = [fo.DynamicEmbeddedDocument(**{k: x for k, x in d.items() if k != "_cls"})
                     for d in value or ()]
        fields[name] = value
    meta = {k: x for k, x in batch.metadata[vid].items() if k != "_cls"}
    return fo.Sample(filepath=batch.filepaths[vid], metadata=fo.VideoMetadata(**meta), **fields)


# Sample fields written as raw dicts after add_samples rather than through it: add_samples turns
# every document back into ODM objects, and a masklet summary costs over a millisecond there (one
# dynamic field object per attribute), more than all of a video's other sample fields together.
_RAW_SAMPLE_FIELDS = ("masklets",)


def _add_new_samples(ds, batch: _Batch, vids: list[int]) -> list[str]:
    """One ``add_samples`` for the new videos' samples, then one ``set_values`` per field of
    ``_RAW_SAMPLE_FIELDS``; returns their ids."""
    samples = [_sample_for(batch, vid, skip=_RAW_SAMPLE_FIELDS) for vid in vids]
    added = ds.add_samples(samples, progress=False)
    # FiftyOne reloads every live sample of the dataset, one query each, after every later
    # set_values, and a Sample and its Frames form a reference cycle, so the samples must be
    # collected, not just dropped (cheap under publish's _young_gc: only this publish's objects).
    del samples
    gc.collect()
    for name in _RAW_SAMPLE_FIELDS:
        per_video = batch.sample_values.get(name, {})
        ds.set_values(name, {sid: per_video.get(vid) for vid, sid in zip(vids, added)},
                      key_field="id", expand_schema=False, validate=False)
    return added


def _insert_frames(ds, batch: _Batch, vids: list[int], sample_ids: dict[int, str]) -> bool:
    """New videos' frames, every frame field at once, with one ``insert_many`` of raw frame
    documents (the layout ``fiftyone.core.frame.Frames`` writes: None fields omitted). Returns
    False where FiftyOne does not expose its frame collection (then set_values does it)."""
    from bson import ObjectId

    coll = getattr(ds, "_frame_collection", None)
    dataset_id = getattr(getattr(ds, "_doc", None), "id", None)
    if coll is None or dataset_id is None:
        return False
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # FiftyOne stores naive UTC
    names = list(batch.frame_values)
    docs = []
    for vid in vids:
        sid = ObjectId(sample_ids[vid])
        per_field = [batch.frame_values[name][vid] for name in names]
        for fn in sorted(set().union(*per_field)):
            doc = {"frame_number": fn}
            for name, per in zip(names, per_field):
                value = per.get(fn)
                if value is not None:
                    doc[name] = value
            doc.update(_sample_id=sid, _dataset_id=dataset_id, created_at=now, last_modified_at=now)
            docs.append(doc)
    if docs:
        coll.insert_many(docs, ordered=False)
    return True


def _write_batch(ds, batch: _Batch, sample_ids: dict[int, str]) -> tuple[int, int]:
    """New videos: one ``add_samples`` with their sample fields, then all their frames with one
    ``insert_many``. Videos already published, in place: one ``set_values`` per sample field and
    per frame field (which also clears what a frame no longer has). Returns (added, updated)."""
    new = [vid for vid in batch.filepaths if vid not in sample_ids]
    old = [vid for vid in batch.filepaths if vid in sample_ids]
    if new:
        for vid, sid in zip(new, _add_new_samples(ds, batch, new)):
            sample_ids[vid] = sid
        if not _insert_frames(ds, batch, new, sample_ids):
            _set_frame_values(ds, batch, new, sample_ids, fresh=True)
    if old:
        ids = {vid: sample_ids[vid] for vid in old}
        ds.set_values("filepath", {ids[v]: batch.filepaths[v] for v in old}, key_field="id",
                      expand_schema=False, validate=False)
        ds.set_values("metadata", {ids[v]: batch.metadata[v] for v in old}, key_field="id",
                      expand_schema=False, validate=False)
        for name, per_video in batch.sample_values.items():
            ds.set_values(name, {ids[v]: per_video.get(v) for v in old}, key_field="id",
                          expand_schema=False, validate=False)
        _set_frame_values(ds, batch, old, sample_ids, fresh=False)
    return len(new), len(old)


def _set_frame_values(ds, batch: _Batch, vids: list[int], sample_ids: dict[int, str],
                      fresh: bool) -> None:
    """One ``set_values`` per frame field (frames created where missing)."""
    view = ds.select([sample_ids[v] for v in vids], ordered=True)
    for name, per_video in batch.frame_values.items():
        if fresh:  # new frames have no values to clear: write only what exists
            values = [{fn: x for fn, x in per_video[v].items() if x is not None} for v in vids]
            if not any(values):
                continue
            values = [x or {} for x in values]
        else:
            values = [per_video[v] for v in vids]
        view.set_values(f"frames.{name}", values, expand_schema=False, validate=False)


def _update_similarity(ds, families: Sequence[str], dup_thresh: float) -> None:
    """(Re)build one sklearn similarity index per family over the video embeddings, and mark
    near-duplicates (``near_duplicate_of``: the video id each duplicate repeats)."""
    import fiftyone.brain as fob
    from fiftyone import ViewField as F

    ds.set_values("near_duplicate_of", [None] * len(ds), expand_schema=False, validate=False)
    ds.set_values("duplicate_distance", [None] * len(ds), expand_schema=False, validate=False)
    for fam in families:
        fname, key = embedding_field(fam), brain_key(fam)
        if key in ds.list_brain_runs():
            ds.delete_brain_run(key)
        view = ds.exists(fname)
        if len(view) < 2:
            continue
        index = fob.compute_similarity(view, embeddings=fname, backend="sklearn", brain_key=key,
                                       metric="cosine", progress=False)
        if fam != families[0]:
            continue  # near-duplicate links come from the first family (the default: sam2-encoder)
        index.find_duplicates(thresh=dup_thresh)
        vid_of = dict(zip(*view.values(["id", "video_id"])))
        dup_of, dist = {}, {}
        for keep, dups in (index.neighbors_map or {}).items():
            for sid, d in dups:
                dup_of[str(sid)] = vid_of[str(keep)]
                dist[str(sid)] = float(d)
        if dup_of:
            ds.set_values("near_duplicate_of", dup_of, key_field="id", expand_schema=False,
                          validate=False)
            ds.set_values("duplicate_distance", dist, key_field="id", expand_schema=False,
                          validate=False)
    _ = F  # (kept for readers: views filter on these fields with ViewField)


@contextmanager
def _young_gc():
    """Let the garbage collector look only at objects created from here on. A publish allocates
    tens of thousands of small objects per batch (label dicts), which triggers full collections,
    and with FiftyOne loaded each one walks ~300k objects (~0.2 s): that made the label
    preparation ~1.5x slower inside publish than alone. ``gc.freeze()`` parks the existing heap
    (still alive, still reachable) until the matching ``gc.unfreeze()``; a caller that froze the
    heap itself is left alone."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def effort_per_round(ds) -> dict[str, dict[str, float]]:
    """Totals of ``effort_by_round`` over the dataset: {round: {seconds, frames_edited, ...}}."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for per in ds.values("effort_by_round"):
        for r, vals in (per or {}).items():
            for k, x in vals.items():
                totals[r][k] += x
    return {r: dict(v) for r, v in sorted(totals.items(), key=lambda kv: (len(kv[0]), kv[0]))}


@_young_gc()
def publish(engine: Engine, blob_store: BlobStore, dataset: str, *, fo_dataset: str | None = None,
            media_dir: Path | None = None, families: Sequence[str] | None = None,
            batch_videos: int = 64, full: bool = False, duplicate_thresh: float = 0.02,
            saved_views: bool = True,
            progress: Callable[[int, int], None] | None = None) -> PublishReport:
    """Publish engine dataset ``dataset`` to FiftyOne dataset ``fo_dataset`` (default: the same
    name): only the videos that changed since the last publish, unless ``full``. ``families``:
    the embedding families to publish (default: every family the dataset has)."""
    import fiftyone as fo

    started = time.perf_counter()
    started_at = dt.datetime.now(dt.timezone.utc)
    fo_name = fo_dataset or dataset
    report = PublishReport(fo_dataset=fo_name)
    with engine.connect() as conn:
        ds_id = conn.execute(select(Dataset.id).where(Dataset.name == dataset)).scalar()
        if ds_id is None:
            raise PublishError(f"dataset {dataset!r} does not exist (ingest videos into it first)")
        state = _db_state(conn, ds_id)
        fams = list(state.families if families is None else families)
        wm = None if full else _load_watermark(engine, fo_name)
        exists = fo.dataset_exists(fo_name)
        ds = fo.load_dataset(fo_name) if exists else None
        if (wm is None or ds is None or ds.info.get(INFO_TOKEN) != wm.get("token")
                or wm.get("families") != fams):
            wm = None
        if wm is None:
            changed = set(state.fingerprints)
        else:
            old = {int(k): v for k, v in wm["fingerprints"].items()}
            changed = {v for v, fp in state.fingerprints.items() if old.get(v) != fp}
            changed |= _touched_since(conn, ds_id, wm) & set(state.fingerprints)
    report.full = wm is None
    report.embedding_families = fams
    report.videos_total = len(state.fingerprints)
    if ds is None:
        ds = fo.Dataset(fo_name, persistent=True)
    _ensure_schema(ds, fams)
    sample_ids = {int(v): sid for v, sid in zip(*ds.values(["video_id", "id"])) if v is not None}
    removed = [sid for v, sid in sample_ids.items() if v not in state.fingerprints]
    if wm is not None and not changed and not removed:
        report.seconds = time.perf_counter() - started
        return report

    if removed:
        ds.delete_samples(removed)
        report.videos_removed = len(removed)
        sample_ids = {v: s for v, s in sample_ids.items() if v in state.fingerprints}
    todo = sorted(changed)
    for lo in range(0, len(todo), batch_videos):
        part = todo[lo:lo + batch_videos]
        batch = _read_batch(engine, blob_store, part, fams, media_dir)
        added, updated = _write_batch(ds, batch, sample_ids)
        report.videos_added += added
        report.videos_updated += updated
        report.frames_written += batch.frames
        report.masks_written += batch.masks
        if progress is not None:
            progress(min(lo + batch_videos, len(todo)), len(todo))
    if fams and (todo or removed):
        _update_similarity(ds, fams, duplicate_thresh)
    token = secrets.token_hex(8)
    ds.info[INFO_TOKEN] = token
    ds.info["dataengine_dataset"] = dataset
    ds.info["effort_per_round"] = effort_per_round(ds)
    ds.save()
    if saved_views:
        from annotation.fiftyone.views import VIEWS_VERSION, save_views

        if ds.info.get("dataengine_views") != VIEWS_VERSION:
            save_views(ds, families=fams)
            ds.info["dataengine_views"] = VIEWS_VERSION
            ds.save()
    report.seconds = time.perf_counter() - started
    watermark = {"token": token, "families": fams, "fingerprints": state.fingerprints,
                 "frame_mask_max_id": state.frame_mask_max_id,
                 "effort_max_id": state.effort_max_id,
                 "embedding_max_id": state.embedding_max_id}
    _save_watermark(engine, fo_name, dataset, watermark, report, started_at)
    return report
