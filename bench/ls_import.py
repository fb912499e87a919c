"""Label Studio import benchmark: the project's bulk path vs one request per task.

Starts its own Label Studio server (a copy of the migrated template, on a free loopback port),
then times:
  - bulk: N single-frame tasks (one 128x128 brush prediction each) through
    ``annotation.labelstudio.import_chunk_tasks`` (batched ``projects.import_tasks``, idempotency
    check included);
  - single: M such tasks, one ``import_tasks`` request per task (what a naive loop does);
  - chunks: 32-frame chunk tasks with every object's mask on every frame as brush predictions
    (masks per second through the bulk path).
Prints a human summary, and with --json one JSON object as its LAST line:
  {"ratio", "bulk_tasks_per_s", "single_tasks_per_s", "masks_per_s", ...}; goal: ratio >= 50.

Usage: python bench/ls_import.py [--json] [--bulk 2000] [--single 100] [--chunk-tasks 20]
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
from annotation.labelstudio.server import LocalServer, free_port, new_token  # noqa: E402


def single_frame_tasks(dataset: str, n: int, size: int = 128, seed: int = 0) -> list[ChunkTask]:
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
        ))
    return out


def chunk_tasks(dataset: str, n: int, frames: int = 32, objects: int = 2, size: int = 128,
                seed: int = 1) -> list[ChunkTask]:
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
            predicted=pred, model_version="bench", score=0.5,
        ))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--bulk", type=int, default=2000, help="single-frame tasks through the bulk path")
    ap.add_argument("--single", type=int, default=100, help="single-frame tasks, one request each")
    ap.add_argument("--chunk-tasks", type=int, default=20, help="32-frame, 2-object chunk tasks")
    ap.add_argument("--batch-size", type=int, default=250)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ls-bench-") as tmp:
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

            bulk = single_frame_tasks("bench-bulk", args.bulk)
            t0 = time.perf_counter()
            rep = import_chunk_tasks(client, bulk_p.id, bulk, batch_size=args.batch_size)
            bulk_s = time.perf_counter() - t0
            assert len(rep.created) == args.bulk, rep

            single = single_frame_tasks("bench-single", args.single, seed=2)
            t0 = time.perf_counter()
            for t in single:
                client.import_tasks(single_p.id, [build_task_payload(t)])
            single_s = time.perf_counter() - t0

            chunks = chunk_tasks("bench-chunks", args.chunk_tasks)
            n_masks = sum(len(c.predicted) for c in chunks)
            t0 = time.perf_counter()
            crep = import_chunk_tasks(client, chunk_p.id, chunks, batch_size=args.batch_size)
            chunk_s = time.perf_counter() - t0
            assert len(crep.created) == args.chunk_tasks, crep
        finally:
            server.stop()

    bulk_tps = args.bulk / bulk_s
    single_tps = args.single / single_s
    out = {
        "ratio": round(bulk_tps / single_tps, 1),
        "bulk_tasks_per_s": round(bulk_tps, 1),
        "single_tasks_per_s": round(single_tps, 2),
        "masks_per_s": round(n_masks / chunk_s, 1),
        "bulk_tasks": args.bulk,
        "bulk_requests": rep.requests,
        "single_tasks": args.single,
        "chunk_tasks": args.chunk_tasks,
        "chunk_frames": 32,
        "masks": n_masks,
        "mask_size": 128,
        "server_start_s": round(start_s, 1),
        "goal_ratio": 50,
    }
    print(f"server started in {start_s:.1f} s")
    print(f"bulk:   {args.bulk} tasks in {bulk_s:.2f} s = {bulk_tps:.1f} tasks/s ({rep.requests} requests)")
    print(f"single: {args.single} tasks in {single_s:.2f} s = {single_tps:.2f} tasks/s")
    print(f"chunks: {args.chunk_tasks} x 32 frames, {n_masks} masks in {chunk_s:.2f} s = "
          f"{n_masks / chunk_s:.1f} masks/s")
    print(f"ratio {out['ratio']} (goal >= 50)")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
