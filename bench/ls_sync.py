"""Label Studio sync benchmark: the bulk path (one snapshot export) vs one request per task.

Starts its own Label Studio server (a copy of the migrated template, on a free loopback port) and a
metadata database (SQLite in a temp dir unless --db-url), records N chunk tasks (``--frames``
frames, one object, ``--size`` px) with their predicted masklets, and imports them into Label
Studio together with one annotation each (a person's correction of one frame, with a verdict).
Then it times:
  - bulk: ``AnnotationSync.sync_project(method="export")`` applying all N annotations (export
    pages of 250 tasks, the next fetched while one is applied; validate; one transaction per
    annotation);
  - per_task: for a sample of ``--sample`` tasks, one ``GET task`` each and the same apply, into a
    second copy of the database; extrapolated to N.
Prints a human summary, and with --json one JSON object as its LAST line:
  {"ratio", "bulk_annotations_per_s", "per_task_annotations_per_s", ...}; goal: ratio >= 10.

Usage: python bench/ls_sync.py [--json] [--annotations 10000] [--sample 100] [--db-url URL]
"""
from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotation.labelstudio import (  # noqa: E402
    CORRECTION,
    ChunkObject,
    ChunkTask,
    LabelStudioClient,
    build_task_payload,
)
from annotation.labelstudio.server import LocalServer, free_port, new_token  # noqa: E402
from annotation.labelstudio.sync import AnnotationSync, deliveries_from_tasks  # noqa: E402
from storage.db import bulk_insert, make_engine, session_scope, upgrade  # noqa: E402
from storage.masklets import MaskletRecord, replace_model_masklets  # noqa: E402
from storage.masks import encode_rle, mask_to_brush  # noqa: E402
from storage.schema import (  # noqa: E402
    AnnotationRound,
    AnnotationTask,
    Dataset,
    ModelVersion,
    TaskStatus,
    Video,
)

TASKS_PER_VIDEO = 32


def seed(engine, n_tasks: int, frames: int, size: int, seed_: int = 0):
    """Videos of TASKS_PER_VIDEO chunks, one predicted masklet each; returns ChunkTasks (with
    masklet ids) and their predicted masks."""
    rng = np.random.default_rng(seed_)
    n_videos = -(-n_tasks // TASKS_PER_VIDEO)
    total = TASKS_PER_VIDEO * frames
    with session_scope(engine) as s:
        ds = Dataset(name="bench-sync")
        mv = ModelVersion(family="sam2", version="bench", artifact_uri="file:///m.pt",
                          artifact_sha256="0" * 64, config={}, metrics={})
        s.add_all([ds, mv])
        s.flush()
        rnd = AnnotationRound(dataset_id=ds.id, number=1, model_version_id=mv.id)
        vids = [Video(dataset_id=ds.id, uri=f"file:///v{i}.mp4", sha256=f"{i + 1:064x}", fps=24.0,
                      frame_count=total, width=size, height=size, size_bytes=1)
                for i in range(n_videos)]
        s.add_all([rnd, *vids])
        s.flush()
        video_ids, round_id, mv_id = [v.id for v in vids], rnd.id, mv.id
    chunks, preds = [], []
    with engine.begin() as conn:
        for vi, vid in enumerate(video_ids):
            m = np.zeros((total, size, size), bool)
            y, x = rng.integers(0, size // 2, 2)
            for t in range(total):
                m[t, (y + t) % (size // 2):(y + t) % (size // 2) + size // 3, x:x + size // 3] = True
            (mid,) = replace_model_masklets(conn, video_id=vid, model_version_id=mv_id,
                                            round_id=round_id, records=[MaskletRecord(
                                                1, "object", {t: encode_rle(m[t]) for t in range(total)})])
            for c in range(TASKS_PER_VIDEO):
                if len(chunks) == n_tasks:
                    break
                s0 = c * frames
                chunks.append(ChunkTask(
                    dataset="bench-sync", video=f"v{vi:05d}", chunk_index=c, frame_start=s0,
                    frame_stop=s0 + frames, round_number=1, kind=CORRECTION, width=size, height=size,
                    frame_urls=[f"/data/local-files/?d=bench/v{vi}/f{s0 + t:06d}.png" for t in range(frames)],
                    objects=[ChunkObject(1, 1, "object", masklet_id=mid)],
                    predicted={(1, t): m[s0 + t] for t in range(frames)}, model_version="bench",
                    score=0.5, video_id=vid, round_id=round_id))
                preds.append(m[s0:s0 + frames])
    return chunks


def payload_with_annotation(chunk: ChunkTask, i: int) -> dict:
    """The task with its prediction and a person's annotation: frame i % T of the object redrawn
    as a box, verdict 'fixed'."""
    p = build_task_payload(chunk)
    result = [dict(r) for r in p["predictions"][0]["result"]]
    t = i % chunk.n_frames
    box = np.zeros((chunk.height, chunk.width), bool)
    box[2 + i % 7:20 + i % 7, 3:30] = True
    for r in result:
        if r["item_index"] == t:
            r["value"] = {**r["value"], "rle": mask_to_brush(box)}
            r["origin"] = "prediction-changed"
    result.append({"type": "choices", "from_name": "verdict_object_1", "to_name": "frames",
                   "value": {"choices": ["fixed"]}})
    p["annotations"] = [{"result": result, "lead_time": 20.0 + i % 13}]
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--annotations", type=int, default=10000)
    ap.add_argument("--sample", type=int, default=100, help="tasks synced one request each")
    ap.add_argument("--frames", type=int, default=4, help="frames per chunk task")
    ap.add_argument("--size", type=int, default=64, help="frame side in px")
    ap.add_argument("--batch-size", type=int, default=500, help="tasks per import request (set-up)")
    ap.add_argument("--db-url", default=None, help="an EMPTY database (default: SQLite in a temp dir)")
    args = ap.parse_args(argv)
    n = args.annotations

    with tempfile.TemporaryDirectory(prefix="ls-sync-bench-") as tmp:
        tmp = Path(tmp)
        db_url = args.db_url or f"sqlite:///{tmp / 'bulk.db'}"
        engine = make_engine(db_url)
        upgrade(engine)
        t0 = time.perf_counter()
        chunks = seed(engine, n, args.frames, args.size)
        seed_s = time.perf_counter() - t0
        server = LocalServer(port=free_port(), data_dir=tmp / "data", media_root=tmp / "media",
                             username="bench@dataengine.local", password=secrets.token_urlsafe(16),
                             token=new_token())
        server.start()
        try:
            client = LabelStudioClient(server.url, server.token)
            project = client.ensure_project("bench-sync", CORRECTION, 1)
            t0 = time.perf_counter()
            rows = []
            for b in range(0, n, args.batch_size):
                batch = chunks[b:b + args.batch_size]
                ids = client.import_tasks(project.id, [payload_with_annotation(c, b + j)
                                                       for j, c in enumerate(batch)])
                rows += [{"idempotency_key": c.key, "tool": "labelstudio",
                          "project_id": str(project.id), "external_task_id": str(tid),
                          "kind": c.kind, "video_id": c.video_id, "round_id": c.round_id,
                          "frame_start": c.frame_start, "frame_stop": c.frame_stop,
                          "status": TaskStatus.OPEN} for c, tid in zip(batch, ids)]
            with engine.begin() as conn:
                bulk_insert(conn, AnnotationTask, rows)
            import_s = time.perf_counter() - t0
            if db_url.startswith("sqlite"):  # the per-task run starts from the same state
                engine.dispose()
                shutil.copyfile(tmp / "bulk.db", tmp / "single.db")
                engine = make_engine(db_url)
                single_engine = make_engine(f"sqlite:///{tmp / 'single.db'}")
            else:
                single_engine = None

            # bulk: one export, then every annotation applied (one transaction each)
            t0 = time.perf_counter()
            rep = AnnotationSync(engine).sync_project(client, project.id, method="export")
            bulk_s = time.perf_counter() - t0
            assert rep.applied == n and not rep.invalid, rep

            # per task: GET task + apply, for a sample (into the untouched copy when we have one)
            sample_ids = [int(r["external_task_id"]) for r in rows[:: max(1, n // args.sample)]][:args.sample]
            sync1 = AnnotationSync(single_engine) if single_engine is not None else None
            t0 = time.perf_counter()
            get_s = 0.0
            for tid in sample_ids:
                g0 = time.perf_counter()
                task = client.get_task(tid)
                get_s += time.perf_counter() - g0
                if sync1 is not None:
                    r1 = sync1.apply(deliveries_from_tasks([task], project.id, "task"))
                    assert r1.applied == 1, r1
            per_task_s = (time.perf_counter() - t0) / len(sample_ids)
        finally:
            server.stop()
            engine.dispose()

    per_task_total = per_task_s * n
    out = {
        "ratio": round(per_task_total / bulk_s, 1),
        "bulk_annotations_per_s": round(n / bulk_s, 1),
        "per_task_annotations_per_s": round(1 / per_task_s, 2),
        "bulk_s": round(bulk_s, 1),
        "bulk_fetch_s": round(rep.fetch_s, 1),
        "bulk_apply_s": round(rep.apply_s, 1),
        "per_task_extrapolated_s": round(per_task_total, 1),
        "per_task_get_ms": round(1000 * get_s / len(sample_ids), 1),
        "annotations": n,
        "sample": len(sample_ids),
        "frames_per_task": args.frames,
        "mask_size": args.size,
        "database": db_url.split(":", 1)[0],
        "setup_seed_s": round(seed_s, 1),
        "setup_import_s": round(import_s, 1),
        "goal_ratio": 10,
    }
    print(f"set-up: seeded {n} tasks in {seed_s:.1f} s, imported with annotations in {import_s:.1f} s")
    print(f"bulk:     {n} annotations in {bulk_s:.1f} s (fetch {rep.fetch_s:.1f} s, apply "
          f"{rep.apply_s:.1f} s) = {n / bulk_s:.1f} /s")
    print(f"per task: {per_task_s * 1000:.1f} ms each (GET {out['per_task_get_ms']} ms) over "
          f"{len(sample_ids)} tasks -> {per_task_total:.1f} s for {n}")
    print(f"ratio {out['ratio']} (goal >= 10)")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
