"""Shared set-up for the sync, webhook and scripted-annotator tests: a dataset with videos, a
round, a model version and its predicted masklets in the database; chunk tasks imported into a
real Label Studio project (recorded in annotation_tasks); table dumps by natural keys."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from annotation.labelstudio import ChunkObject, ChunkTask, import_chunk_tasks
from annotation.labelstudio.label_config import CORRECTION
from storage.db import session_scope
from storage.masklets import MaskletRecord, replace_model_masklets
from storage.masks import encode_rle
from storage.schema import (
    AnnotationRound,
    AnnotationTask,
    AppliedAnnotation,
    Dataset,
    EffortEvent,
    FrameMask,
    Masklet,
    ModelVersion,
    Video,
)


@dataclass
class Setup:
    dataset: str
    project_id: int
    round_id: int
    model_version_id: int
    video_ids: list[int]
    chunks: list[ChunkTask]
    task_ids: dict[str, int]  # idempotency key -> LS task id
    predicted: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (video_idx, object_id) -> bool[T,H,W]


def seed_db(engine, dataset: str, n_videos: int, frames: int, height: int, width: int,
            objects: int, *, masks=None, seed: int = 0, round_number: int = 1):
    """Dataset, videos, a round, a model version and predicted masklets (moving rectangles unless
    ``masks[(video_idx, object_id)]`` bool[T,H,W] are given). Returns ids and the masks."""
    rng = np.random.default_rng(seed)
    with session_scope(engine) as s:
        ds = Dataset(name=dataset)
        s.add(ds)
        s.flush()
        mv = ModelVersion(family="sam2", version=f"{dataset}-v1", artifact_uri="file:///m.pt",
                          artifact_sha256="0" * 64, config={}, metrics={})
        s.add(mv)
        s.flush()
        rnd = AnnotationRound(dataset_id=ds.id, number=round_number, model_version_id=mv.id)
        vids = [Video(dataset_id=ds.id, uri=f"file:///{dataset}/v{i}.mp4", sha256=f"{i + 1:064x}",
                      fps=24.0, frame_count=frames, width=width, height=height, size_bytes=1)
                for i in range(n_videos)]
        s.add_all([rnd, *vids])
        s.flush()
        video_ids, round_id, mv_id = [v.id for v in vids], rnd.id, mv.id
    predicted = dict(masks or {})
    masklet_ids: dict[tuple[int, int], int] = {}
    with engine.begin() as conn:
        for vi, vid in enumerate(video_ids):
            recs = []
            for oid in range(1, objects + 1):
                if (vi, oid) not in predicted:
                    m = np.zeros((frames, height, width), bool)
                    y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
                    h, w = rng.integers(4, height // 2), rng.integers(4, width // 2)
                    for t in range(frames):
                        m[t, min(y + t % 4, height - 1):y + t % 4 + h, x:x + w] = True
                    predicted[(vi, oid)] = m
                m = predicted[(vi, oid)]
                recs.append(MaskletRecord(object_id=oid, label=f"class{oid}",
                                          rles={t: encode_rle(m[t]) for t in range(frames)}))
            ids = replace_model_masklets(conn, video_id=vid, model_version_id=mv_id,
                                         round_id=round_id, records=recs)
            for oid, mid in zip(range(1, objects + 1), ids):
                masklet_ids[(vi, oid)] = mid
    return video_ids, round_id, mv_id, predicted, masklet_ids


def make_setup(engine, client, dataset: str, *, n_videos=1, frames=8, chunk_frames=4, height=32,
               width=48, objects=2, kind=CORRECTION, masks=None, seed=0, media_urls=None,
               masklet_ids_for=None, round_number=1) -> Setup:
    video_ids, round_id, mv_id, predicted, masklet_ids = seed_db(
        engine, dataset, n_videos, frames, height, width, objects, masks=masks, seed=seed,
        round_number=round_number)
    project = client.ensure_project(dataset, kind, objects)
    chunks = []
    for vi, vid in enumerate(video_ids):
        for c, start in enumerate(range(0, frames, chunk_frames)):
            stop = min(start + chunk_frames, frames)
            urls = (media_urls[vi][start:stop] if media_urls else
                    [f"/data/local-files/?d={dataset}/v{vi}/f{t:06d}.png" for t in range(start, stop)])
            mids = masklet_ids_for(vi) if masklet_ids_for else {
                oid: masklet_ids[(vi, oid)] for oid in range(1, objects + 1)}
            chunks.append(ChunkTask(
                dataset=dataset, video=f"v{vi}", chunk_index=c, frame_start=start, frame_stop=stop,
                round_number=round_number, kind=kind, width=width, height=height, frame_urls=urls,
                objects=[ChunkObject(slot=oid, object_id=oid, label=f"class{oid}",
                                     masklet_id=mids[oid]) for oid in range(1, objects + 1)],
                predicted={(oid, t - start): predicted[(vi, oid)][t]
                           for oid in range(1, objects + 1) for t in range(start, stop)
                           if predicted[(vi, oid)][t].any()},
                model_version=f"{dataset}-v1", score=0.5, video_id=vid, round_id=round_id,
            ))
    rep = import_chunk_tasks(client, project.id, chunks, engine=engine)
    assert not rep.failed, rep.failed
    return Setup(dataset, project.id, round_id, mv_id, video_ids, chunks, rep.task_ids, predicted)


def dump(engine) -> dict:
    """The tables the sync writes, by natural keys (no surrogate ids, no wall-clock times), so
    that two databases that saw the same annotations compare equal."""
    with engine.connect() as c:
        tasks = {r.id: r.idempotency_key for r in c.execute(select(AnnotationTask.id, AnnotationTask.idempotency_key))}
        mk = {}
        masklets = {}
        for r in c.execute(select(Masklet.id, Masklet.video_id, Masklet.object_id, Masklet.label,
                                  Masklet.source_kind, Masklet.status, Masklet.round_id,
                                  Masklet.source_model_version_id)):
            key = (r.video_id, r.object_id, str(r.source_kind), r.round_id, r.source_model_version_id)
            mk[r.id] = key
            masklets[key] = (r.label, str(r.status))
        frames = sorted((mk[r.masklet_id], r.frame_index, r.rle_counts, r.height, r.width, r.area,
                         r.bbox_x, r.bbox_y, r.bbox_w, r.bbox_h, r.predicted_iou, r.object_score)
                        for r in c.execute(select(FrameMask)))
        applied = sorted((tasks[r.task_id], r.tool, r.external_annotation_id, r.version,
                          _canon(r.summary)) for r in c.execute(select(AppliedAnnotation)))
        effort = sorted((r.round_id, mk.get(r.masklet_id), tasks.get(r.task_id), str(r.actor_kind),
                         r.actor_id, str(r.mode), r.frames_total, r.frames_edited, r.clicks,
                         r.strokes, round(r.seconds, 6)) for r in c.execute(select(EffortEvent)))
        task_rows = sorted((r.idempotency_key, r.external_task_id, str(r.status))
                           for r in c.execute(select(AnnotationTask)))
    return {"masklets": sorted(masklets.items()), "frames": frames, "applied": applied,
            "effort": effort, "tasks": task_rows}


def _canon(v):
    import json

    return json.dumps(v, sort_keys=True)
