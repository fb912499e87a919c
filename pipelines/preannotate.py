"""Pre-annotation: SAM 2 turns each video of a dataset into masklets stored in the database.

Plain functions (the Prefect flow wraps them at the edge):
- automatic masklets for new videos (point-grid proposals re-seeded every N frames, propagated
  forwards and backwards);
- prompted masklets for videos queued again: the first non-empty mask of each object's latest
  corrected / verified / human masklet becomes the mask prompt, or prompts given explicitly.
Writes are bulk and idempotent per (video, model version, round): a re-run replaces, never adds.
A video that cannot be read is reported and skipped; the others go on.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import Engine, select

from models.sam2.automatic import AutoConfig, AutomaticMasklets, Masklet, track_prompts
from models.sam2.predict import Prompt, PromptError, VideoSegmenter
from storage.blobs import BlobStore, BlobStoreError, LocalBlobStore
from storage.masklets import MaskletRecord, masklet_frames, replace_model_masklets
from storage.masks import decode_rle
from storage.schema import Dataset, Masklet as MaskletRow, MaskletStatus, SourceKind, Video
from storage.video import VideoError, read_video

PROMPT_SOURCES = (SourceKind.HUMAN, SourceKind.SCRIPTED_ANNOTATOR, SourceKind.GROUND_TRUTH)
PROMPT_STATUSES = (MaskletStatus.CORRECTED, MaskletStatus.VERIFIED)


@dataclass
class VideoOutcome:
    video_id: int
    uri: str
    mode: str
    masklets: int = 0
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class PreannotateReport:
    outcomes: list[VideoOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[VideoOutcome]:
        return [o for o in self.outcomes if o.error]

    @property
    def masklets(self) -> int:
        return sum(o.masklets for o in self.outcomes)


def load_video_frames(blob_store: BlobStore, video: Video, cache_dir: Path) -> np.ndarray:
    """Decode a stored video; the blob is fetched once into cache_dir (a local store needs no copy)."""
    key = video.blob_key
    if key is None:
        return read_video(video.source_path or video.uri)
    if isinstance(blob_store, LocalBlobStore):
        return read_video(blob_store.path(key))
    dest = cache_dir / key.replace("/", "_")
    if not dest.exists():
        blob_store.download(key, dest)
    return read_video(dest)


def prompts_from_previous_round(conn, video_id: int) -> list[Prompt]:
    """One mask prompt per object: its latest masklet that a person (or the scripted annotator,
    or ground truth) corrected or verified, on that masklet's first non-empty frame."""
    q = (select(MaskletRow.id, MaskletRow.object_id)
         .where(MaskletRow.video_id == video_id,
                (MaskletRow.source_kind.in_(PROMPT_SOURCES)) | (MaskletRow.status.in_(PROMPT_STATUSES)))
         .order_by(MaskletRow.object_id, MaskletRow.updated_at.desc(), MaskletRow.id.desc()))
    latest: dict[int, int] = {}
    for mid, oid in conn.execute(q):
        latest.setdefault(oid, mid)
    prompts = []
    for oid, mid in sorted(latest.items()):
        for t, rle in masklet_frames(conn, mid).items():
            mask = decode_rle(rle)
            if mask.any():
                prompts.append(Prompt(object_id=oid, frame_index=t, mask=mask))
                break
    return prompts


def to_records(masklets: dict[int, Masklet], labels: dict[int, str] | None = None) -> list[MaskletRecord]:
    labels = labels or {}
    return [MaskletRecord(object_id=oid, label=labels.get(oid, "object"), rles=m.rles,
                          pred_iou=m.pred_iou, object_score=m.object_score)
            for oid, m in sorted(masklets.items())]


def preannotate_video(engine: Engine, blob_store: BlobStore, segmenter: VideoSegmenter, video: Video,
                      *, model_version_id: int, round_id: int | None = None,
                      prompts: Sequence[Prompt] | None = None, auto_cfg: AutoConfig = AutoConfig(),
                      cache_dir: Path | None = None) -> VideoOutcome:
    started = time.time()
    out = VideoOutcome(video.id, video.uri, "prompted" if prompts else "automatic")
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="dataengine-frames-"))
    try:
        frames = load_video_frames(blob_store, video, cache)
        source = segmenter.frame_source(frames, where=video.uri)
        if prompts:
            masklets = track_prompts(segmenter, source, list(prompts), where=video.uri)
        else:
            masklets = AutomaticMasklets(segmenter, auto_cfg).run(source, where=video.uri)
    except (VideoError, PromptError, BlobStoreError) as exc:  # a missing blob is unreadable too
        out.error = str(exc)
        out.seconds = time.time() - started
        return out
    finally:
        if cache_dir is None:  # our own download folder: never leave a copy of the video behind
            shutil.rmtree(cache, ignore_errors=True)
    with engine.begin() as conn:
        replace_model_masklets(conn, video_id=video.id, model_version_id=model_version_id,
                               round_id=round_id, records=to_records(masklets))
    out.masklets = len(masklets)
    out.frames = len(source)
    out.seconds = time.time() - started
    return out


def preannotate_dataset(engine: Engine, blob_store: BlobStore, segmenter: VideoSegmenter,
                        dataset: str, *, model_version_id: int, round_id: int | None = None,
                        video_ids: Sequence[int] | None = None, prompted: bool = False,
                        auto_cfg: AutoConfig = AutoConfig(),
                        on_video: Callable[[VideoOutcome], None] | None = None) -> PreannotateReport:
    """Pre-annotate the videos of `dataset` (or only `video_ids`). With `prompted`, videos whose
    objects were corrected before are tracked from those masks; the rest get automatic masklets."""
    report = PreannotateReport()
    with engine.connect() as conn:
        ds = conn.execute(select(Dataset.id).where(Dataset.name == dataset)).scalar_one_or_none()
        if ds is None:
            raise ValueError(f"dataset {dataset!r} does not exist (ingest videos into it first)")
        q = select(Video).where(Video.dataset_id == ds).order_by(Video.id)
        if video_ids is not None:
            q = q.where(Video.id.in_(list(video_ids)))
    from storage.db import session_scope

    with session_scope(engine) as s:
        videos = list(s.scalars(q))
    # Downloads of remote blobs (one per video) go here and are removed at the end: a scheduled run
    # must not leave a copy of the dataset in the temp folder.
    cache = Path(tempfile.mkdtemp(prefix="dataengine-frames-"))
    try:
        for video in videos:
            prompts = None
            if prompted:
                with engine.connect() as conn:
                    prompts = prompts_from_previous_round(conn, video.id) or None
            outcome = preannotate_video(engine, blob_store, segmenter, video,
                                        model_version_id=model_version_id, round_id=round_id,
                                        prompts=prompts, auto_cfg=auto_cfg, cache_dir=cache)
            report.outcomes.append(outcome)
            if on_video:
                on_video(outcome)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return report
