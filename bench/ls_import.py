"""Label Studio import benchmark: the project's bulk path vs one request per task.

Starts its own Label Studio server (a copy of the migrated template, on a free loopback port) and
a metadata database (SQLite in a temp dir; ``--no-db`` leaves it out), warms the server up with
one request, then times, on the same server and through the same client:
  - single: M single-frame tasks (one 128x128 brush prediction each), one import request per task
    (what a naive loop does): half before and half after the bulk import, so that a change of the
    machine's load during the run weighs on both paths alike;
  - bulk: N such tasks through ``annotation.labelstudio.import_chunk_tasks`` (the project's path:
    tasks reserved in ``annotation_tasks``, batched import requests, the next batch encoded while
    one is on the server, the new task ids committed per batch), then the same call again, which
    must create nothing (idempotency, timed as ``rerun_s``);
  - bare (reference, ``--bare 0`` skips it): the same N payloads, built and encoded beforehand,
    in ONE import request: what the server alone costs; ``bulk_vs_bare`` is how close the
    project's path comes to it;
  - chunks: 32-frame chunk tasks with every object's mask on every frame as brush predictions
    (masks per second through the bulk path).
Prints a human summary, and with --json one JSON object as its LAST line:
  {"ratio", "bulk_tasks_per_s", "single_tasks_per_s", "masks_per_s", ...}; goal: ratio >= 50.
The ratio depends on the server's CPU: on a machine whose cores are busy with other work both paths
slow down, but not by the same factor (see docs/annotation.md).

Usage: python bench/ls_import.py [--json] [--bulk 2000] [--single 100] [--chunk-tasks 20]
                                 [--batch-size N] [--bare N] [--no-db]
"""
from __future__ import annotations

import argparse
import json
import secrets
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
    import_chunk_tasks,
)
from annotation.labelstudio.client import encode_task  # noqa: E402
from annotation.labelstudio.server import LocalServer, free_port, new_token  # noqa: E402

VIDEOS_OF = 100  # single-frame tasks per (synthetic) video


def seed_database(url: str, n_videos: int) -> tuple:
    """A migrated database with one dataset, ``n_videos`` videos and a round: what the importer
    needs to record tasks. Returns (engine, video ids, round id)."""
    from storage.db import make_engine, session_scope, upgrade
    from storage.schema import AnnotationRound, Dataset, Video

    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as s:
        ds = Dataset(name="bench-import")
        s.add(ds)
        s.flush()
        vids = [Video(dataset_id=ds.id, uri=f"file:///v{i}.mp4", sha256=f"{i + 1:064x}", fps=24.0,
                      frame_count=VIDEOS_OF * 32, width=128, height=128, size_bytes=1)
                for i in range(n_videos)]
        rnd = AnnotationRound(dataset_id=ds.id, number=1)
        s.add_all([rnd, *vids])
        s.flush()
        return engine, [v.id for v in vids], rnd.id


def single_frame_tasks(dataset: str, n: int, size: int = 128, seed: int = 0,
                       video_ids: list[int] | None = None, round_id: int | None = None,
                       ) -> list[ChunkTask]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = np.zeros((size, size), bool)
        y, x = rng.integers(0, size // 2, 2)
        h, w = rng.integers(8, size // 2, 2)
        m[y:y + h, x:x + w] = True
        out.append(ChunkTask(
            dataset=dataset, video=f"v{i // 100:04d}", chunk_index=i % 100, frame_start=0,
            frame_stop=1, round_number=1, kind=CORRECTION, width=size, height=size,
            frame_urls=[f"/data/local-files/?d={dataset}/f{i:06d}.png"],
            objects=[ChunkObject(1, 1, "object")], predicted={(1, 0): m},
            model_version="bench", score=0.5,
            video_id=video_ids[i // VIDEOS_OF] if video_ids else None, round_id=round_id,
        ))
    return out


def chunk_tasks(dataset: str, n: int, frames: int = 32, objects: int = 2, size: int = 128,
                seed: int = 1, video_id: int | None = None, round_id: int | None = None,
                ) -> list[ChunkTask]:
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n):
        pred = {}
        for s in range(1, objects + 1):
            y, x = rng.integers(0, size // 2, 2)
            for t in range(frames):
                m = np.zeros((size, size), bool)
                m[(y + t) % size:(y + t) % size + 20, x:x + 30] = True
                pred[(s, t)] = m
        out.append(ChunkTask(
            dataset=dataset, video="long", chunk_index=c, frame_start=c * frames,
            frame_stop=(c + 1) * frames, round_number=1, kind=CORRECTION, width=size, height=size,
            frame_urls=[f"/data/local-files/?d={dataset}/f{c * frames + t:06d}.png" for t in range(frames)],
            objects=[ChunkObject(s, s, "object") for s in range(1, objects + 1)],
            predicted=pred, model_version="bench", score=0.5, video_id=video_id, round_id=round_id,
        ))
    return out


def timed_single(client: LabelStudioClient, project_id: int, tasks: list[ChunkTask]) -> float:
    """One import request per task, through the same client call the bulk path uses."""
    t0 = time.perf_counter()
    for t in tasks:
        client.import_tasks(project_id, [build_task_payload(t)])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--bulk", type=int, default=2000, help="single-frame tasks through the bulk path")
    ap.add_argument("--single", type=int, default=100, help="single-frame tasks, one request each")
    ap.add_argument("--chunk-tasks", type=int, default=20, help="32-frame, 2-object chunk tasks")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="tasks per import request (default: the importer's)")
    ap.add_argument("--bare", type=int, default=None,
                    help="tasks in the one-request reference import (default: --bulk; 0: skip)")
    ap.add_argument("--no-db", action="store_true", help="import without recording tasks in a database")
    args = ap.parse_args(argv)
    bare_n = args.bulk if args.bare is None else args.bare
    batch = {} if args.batch_size is None else {"batch_size": args.batch_size}

    with tempfile.TemporaryDirectory(prefix="ls-bench-") as tmp:
        engine, video_ids, round_id = (None, None, None) if args.no_db else seed_database(
            f"sqlite:///{tmp}/bench.db", -(-args.bulk // VIDEOS_OF) + 1)
        server = LocalServer(port=free_port(), data_dir=Path(tmp) / "data",
                             media_root=Path(tmp) / "media", username="bench@dataengine.local",
                             password=secrets.token_urlsafe(16), token=new_token())
        t0 = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - t0
        try:
            client = LabelStudioClient(server.url, server.token)
            bulk_p = client.ensure_project("bench-bulk", CORRECTION, 1)
            single_p = client.ensure_project("bench-single", CORRECTION, 1)
            chunk_p = client.ensure_project("bench-chunks", CORRECTION, 2)
            # The first requests to a fresh server pay for its lazy imports and caches: not timed.
            warm_p = client.ensure_project("bench-warmup", CORRECTION, 1)
            client.import_tasks(warm_p.id, [build_task_payload(t) for t in
                                            single_frame_tasks("bench-warmup", 2, seed=3)])

            single = single_frame_tasks("bench-single", args.single, seed=2)
            half = len(single) // 2
            single_s = timed_single(client, single_p.id, single[:half])

            bulk = single_frame_tasks("bench-bulk", args.bulk, video_ids=video_ids,
                                      round_id=round_id)
            t0 = time.perf_counter()
            rep = import_chunk_tasks(client, bulk_p.id, bulk, engine=engine, **batch)
            bulk_s = time.perf_counter() - t0
            assert len(rep.created) == args.bulk and not rep.failed, rep
            t0 = time.perf_counter()
            again = import_chunk_tasks(client, bulk_p.id, bulk, engine=engine, **batch)
            rerun_s = time.perf_counter() - t0
            assert not again.created and again.existing == rep.created, again

            single_s += timed_single(client, single_p.id, single[half:])

            bare_s = None
            if bare_n > 0:
                bare_p = client.ensure_project("bench-bare", CORRECTION, 1)
                encoded = [encode_task(build_task_payload(t))
                           for t in single_frame_tasks("bench-bare", bare_n, seed=4)]
                t0 = time.perf_counter()
                ids = client.import_tasks(bare_p.id, encoded)
                bare_s = time.perf_counter() - t0
                assert len(ids) == bare_n

            chunks = chunk_tasks("bench-chunks", args.chunk_tasks,
                                 video_id=video_ids[-1] if video_ids else None, round_id=round_id)
            n_masks = sum(len(c.predicted) for c in chunks)
            t0 = time.perf_counter()
            crep = import_chunk_tasks(client, chunk_p.id, chunks, engine=engine, **batch)
            chunk_s = time.perf_counter() - t0
            assert len(crep.created) == args.chunk_tasks, crep
        finally:
            server.stop()
            if engine is not None:
                engine.dispose()

    bulk_tps = args.bulk / bulk_s
    single_tps = args.single / single_s
    bare_tps = bare_n / bare_s if bare_s else None
    out = {
        "ratio": round(bulk_tps / single_tps, 1),
        "bulk_tasks_per_s": round(bulk_tps, 1),
        "single_tasks_per_s": round(single_tps, 2),
        "masks_per_s": round(n_masks / chunk_s, 1),
        "bare_tasks_per_s": round(bare_tps, 1) if bare_tps else None,
        "bulk_vs_bare": round(bulk_tps / bare_tps, 2) if bare_tps else None,
        "bulk_tasks": args.bulk,
        "bulk_requests": rep.requests,
        "bulk_encode_s": round(rep.encode_seconds, 2),
        "bulk_mb": round(rep.bytes_sent / 2**20, 1),
        "rerun_s": round(rerun_s, 2),
        "recorded_in_db": engine is not None,
        "single_tasks": args.single,
        "chunk_tasks": args.chunk_tasks,
        "chunk_frames": 32,
        "masks": n_masks,
        "mask_size": 128,
        "server_start_s": round(start_s, 1),
        "goal_ratio": 50,
    }
    print(f"server started in {start_s:.1f} s")
    print(f"single: {args.single} tasks in {single_s:.2f} s = {single_tps:.2f} tasks/s "
          f"(one request each, half before and half after the bulk import)")
    print(f"bulk:   {args.bulk} tasks in {bulk_s:.2f} s = {bulk_tps:.1f} tasks/s ({rep.requests} "
          f"requests, {rep.encode_seconds:.2f} s encoding, {rep.bytes_sent / 2**20:.1f} MB"
          f"{', recorded in SQLite' if engine is not None else ''}); re-run {rerun_s:.2f} s, "
          f"nothing created")
    if bare_tps:
        print(f"bare:   {bare_n} pre-encoded tasks in one request in {bare_s:.2f} s = "
              f"{bare_tps:.1f} tasks/s (bulk path at {bulk_tps / bare_tps:.0%} of it)")
    print(f"chunks: {args.chunk_tasks} x 32 frames, {n_masks} masks in {chunk_s:.2f} s = "
          f"{n_masks / chunk_s:.1f} masks/s")
    print(f"ratio {out['ratio']} (goal >= 50)")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
