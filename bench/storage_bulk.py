"""Bulk vs one-at-a-time writes of frame masks (the largest table) to PostgreSQL.

Writes --rows frame masks (128x128 masks encoded as COCO RLE) with COPY (storage.db.copy_insert)
and with executemany (storage.db.bulk_insert), then --single-rows masks one ORM object at a time
with a commit per object, and extrapolates that rate. Mask encoding happens before any timer starts:
only database writes are timed (each including its commit). The table is emptied between methods
so that each starts from the same index size.

By default it creates a temporary PostgreSQL database on 127.0.0.1:5432 (user postgres) and drops
it afterwards; --database-url points it at an existing database instead (it must be migrated or
migratable to head; the bench's rows are written to it and its frame_masks table is TRUNCATEd).

Prints a human summary; with --json, the last line is one JSON object:
  ratio                    bulk rows/s (COPY) over one-at-a-time rows/s (goal: >= 20)
  bulk_rows_per_s          COPY rate;  executemany_rows_per_s, ratio_executemany likewise
  single_rows_per_s        ORM add + commit per object
  rows, single_rows, backend, chunk, encode_s, single_extrapolated_s, meets_goal
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from sqlalchemy import func, select, text  # noqa: E402

from storage.db import bulk_insert, copy_insert, make_engine, session_scope, upgrade  # noqa: E402
from storage.schema import Dataset, FrameMask, Masklet, SourceKind, Video  # noqa: E402

GOAL_RATIO = 20.0
SIZE = 128
FRAMES_PER_MASKLET = 1000
COLUMNS = [c.name for c in FrameMask.__table__.c if c.name != "id"]


def _codec():
    """storage.masks when present (the project's codec), else pycocotools directly."""
    try:
        from storage.masks import encode_rle, rle_area, rle_bbox

        return "storage.masks", lambda m: _with_stats(encode_rle(m), rle_area, rle_bbox)
    except ImportError:
        from pycocotools import mask as mask_utils

        def encode(m):
            rle = mask_utils.encode(np.asfortranarray(m, dtype=np.uint8))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            return rle["counts"].decode("ascii"), int(mask_utils.area(rle)), (x, y, w, h)

        return "pycocotools", encode


def _with_stats(rle, rle_area, rle_bbox):
    return rle["counts"], rle_area(rle), tuple(float(v) for v in rle_bbox(rle))


def make_rows(n: int, masklet_ids: list[int], seed: int = 0) -> tuple[list[dict], float, str]:
    """n frame-mask rows: an ellipse per frame that drifts and breathes, like a tracked object."""
    codec_name, encode = _codec()
    rng = np.random.default_rng(seed)
    axis = np.arange(SIZE, dtype=np.float32)
    xx, yy = axis[None, :], axis[:, None]  # broadcast to H x W only in the comparison
    t0 = time.perf_counter()
    rows = []
    for i in range(n):
        masklet_id = masklet_ids[i // FRAMES_PER_MASKLET]
        frame = i % FRAMES_PER_MASKLET
        phase = frame / 40.0 + (i // FRAMES_PER_MASKLET)
        cx, cy = 64 + 40 * math.sin(phase), 64 + 30 * math.cos(1.3 * phase)
        rx, ry = 10 + 8 * abs(math.sin(2 * phase)), 14 + rng.uniform(-3, 3)
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        counts, area, (x, y, w, h) = encode(mask)
        rows.append({
            "masklet_id": masklet_id, "frame_index": frame, "rle_counts": counts,
            "height": SIZE, "width": SIZE, "area": area, "bbox_x": x, "bbox_y": y,
            "bbox_w": w, "bbox_h": h, "predicted_iou": float(rng.uniform(0.5, 1.0)),
            "object_score": float(rng.normal(3, 1)),
        })
    return rows, time.perf_counter() - t0, codec_name


def setup_parents(engine, n_masklets: int) -> list[int]:
    with session_scope(engine) as s:
        ds = Dataset(name=f"bench-{uuid.uuid4().hex[:8]}")
        s.add(ds)
        s.flush()
        video = Video(dataset_id=ds.id, uri="bench://video.mp4", sha256="0" * 64, fps=24.0,
                      frame_count=FRAMES_PER_MASKLET, width=SIZE, height=SIZE, size_bytes=1)
        s.add(video)
        s.flush()
        masklets = [Masklet(video_id=video.id, object_id=k, label="object",
                            source_kind=SourceKind.SCRIPTED_ANNOTATOR) for k in range(n_masklets)]
        s.add_all(masklets)
        s.flush()
        return [m.id for m in masklets]


def empty_frame_masks(engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE frame_masks"))
        else:
            conn.execute(FrameMask.__table__.delete())


def count_frame_masks(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(FrameMask)).scalar_one()


def timed(label: str, engine, fn, expected: int) -> float:
    empty_frame_masks(engine)
    t0 = time.perf_counter()
    written = fn()
    elapsed = time.perf_counter() - t0
    stored = count_frame_masks(engine)
    if written != expected or stored != expected:
        raise SystemExit(f"{label}: wrote {written}, stored {stored}, expected {expected} rows")
    return elapsed


def run(url: str, n_rows: int, n_single: int, chunk: int) -> dict:
    engine = make_engine(url)
    try:
        upgrade(engine)
        n_masklets = math.ceil(max(n_rows, n_single) / FRAMES_PER_MASKLET)
        masklet_ids = setup_parents(engine, n_masklets)
        rows, encode_s, codec = make_rows(max(n_rows, n_single), masklet_ids)
        bulk_rows, single_rows = rows[:n_rows], rows[:n_single]

        def copy():
            with engine.begin() as conn:
                return copy_insert(conn, FrameMask, bulk_rows, COLUMNS)

        def executemany():
            with engine.begin() as conn:
                return bulk_insert(conn, FrameMask, bulk_rows, chunk=chunk)

        def one_at_a_time():
            with session_scope(engine) as s:
                for row in single_rows:
                    s.add(FrameMask(**row))
                    s.commit()
            return len(single_rows)

        copy_s = timed("COPY", engine, copy, n_rows)
        many_s = timed("executemany", engine, executemany, n_rows)
        single_s = timed("one-at-a-time", engine, one_at_a_time, n_single)
        empty_frame_masks(engine)
        backend = engine.dialect.name
    finally:
        engine.dispose()

    copy_rate, many_rate, single_rate = n_rows / copy_s, n_rows / many_s, n_single / single_s
    return {
        "ratio": round(copy_rate / single_rate, 1),
        "bulk_rows_per_s": round(copy_rate),
        "single_rows_per_s": round(single_rate, 1),
        "executemany_rows_per_s": round(many_rate),
        "ratio_executemany": round(many_rate / single_rate, 1),
        "rows": n_rows,
        "single_rows": n_single,
        "backend": backend,
        "bulk_method": "copy" if backend == "postgresql" else "executemany (COPY fallback)",
        "chunk": chunk,
        "copy_s": round(copy_s, 3),
        "executemany_s": round(many_s, 3),
        "single_s": round(single_s, 3),
        "single_extrapolated_s": round(n_rows / single_rate, 1),
        "encode_s": round(encode_s, 2),
        "codec": codec,
        "mask_size": [SIZE, SIZE],
        "goal_ratio": GOAL_RATIO,
        "meets_goal": copy_rate / single_rate >= GOAL_RATIO,
    }


class TemporaryPostgres:
    """A fresh database on a local PostgreSQL server, dropped (WITH (FORCE)) on exit."""

    def __init__(self, host: str, port: int, user: str):
        self.host, self.port, self.user = host, port, user
        self.name = f"dataengine_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    def _admin(self):
        import psycopg

        try:
            return psycopg.connect(host=self.host, port=self.port, user=self.user,
                                   dbname="postgres", autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise SystemExit(
                f"PostgreSQL not reachable at {self.host}:{self.port} as {self.user!r}: {exc}"
                " (start it with infra/postgres/ensure_running.sh, or pass --database-url)"
            ) from exc

    def __enter__(self) -> str:
        from psycopg import sql

        with self._admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.name}"

    def __exit__(self, *exc) -> None:
        from psycopg import sql

        with self._admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(self.name)))


def summary(r: dict) -> str:
    return "\n".join([
        f"storage bulk bench: {r['rows']:,} frame masks ({r['mask_size'][0]}x{r['mask_size'][1]}"
        f" COCO RLE via {r['codec']}, encoded in {r['encode_s']} s, untimed) on {r['backend']}",
        f"  COPY            {r['bulk_rows_per_s']:>10,} rows/s  ({r['copy_s']} s)",
        f"  executemany     {r['executemany_rows_per_s']:>10,} rows/s  ({r['executemany_s']} s,"
        f" chunks of {r['chunk']})",
        f"  one at a time   {r['single_rows_per_s']:>10,} rows/s  ({r['single_rows']} rows in"
        f" {r['single_s']} s; {r['rows']:,} rows would take ~{r['single_extrapolated_s']} s)",
        f"  ratio COPY / one-at-a-time = {r['ratio']}x, executemany / one-at-a-time ="
        f" {r['ratio_executemany']}x (goal >= {r['goal_ratio']:g}x:"
        f" {'met' if r['meets_goal'] else 'NOT met'})",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="frame masks written in bulk")
    p.add_argument("--single-rows", type=int, default=500,
                   help="frame masks written one ORM object + commit at a time")
    p.add_argument("--chunk", type=int, default=5000, help="rows per executemany")
    p.add_argument("--database-url", default=None,
                   help="existing database (default: a temporary PostgreSQL database)")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.rows < 1 or args.single_rows < 1:
        p.error("--rows and --single-rows must be >= 1")

    if args.database_url:
        result = run(args.database_url, args.rows, args.single_rows, args.chunk)
    else:
        with TemporaryPostgres(args.pg_host, args.pg_port, args.pg_user) as url:
            result = run(url, args.rows, args.single_rows, args.chunk)
    print(summary(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
