"""FiftyOne publish benchmark: the bulk incremental publish vs adding samples one at a time.

Starts its own mongod (a copy of the template data dir, free loopback port) and a SQLite database
with a local blob store in a temp dir, and makes an engine dataset of ``--videos`` synthetic
videos (``--frames`` frames, 2 objects, ground truth, one round of masklets, effort events and
``sam2-encoder`` embeddings; see ``tests.fixtures_fiftyone.make_curation_data``). Then it times:

- bulk: ``annotation.fiftyone.publish.publish`` on a fresh FiftyOne dataset (every video is new:
  one ``add_samples`` per batch, every field by ``set_values`` from raw dicts), frames/s;
- noop: the same publish again with nothing changed (the watermark check only);
- one_at_a_time: for ``--sample`` videos, the same data read from the database the same way, but
  each video added as ODM objects (``fo.Sample`` + ``fo.Frame`` + ``fo.Detection``) with one
  ``dataset.add_sample`` call per video, frames/s.

Prints a summary, and with --json one JSON object as its LAST line:
  {"ratio": bulk fps / one-at-a-time fps (goal >= 10), "noop_ratio": noop s / bulk s (goal < 0.1), ...}

Usage: python bench/fiftyone_publish.py [--json] [--videos 40] [--frames 64] [--sample 6]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotation.fiftyone.mongod import MongoServer, free_port  # noqa: E402
from tests.fixtures_fiftyone import fiftyone_env, make_curation_data  # noqa: E402


def one_at_a_time(engine, blobs, ds_name: str, video_ids, families) -> tuple[int, float]:
    """The naive path: per video, read it, build ODM objects, ``add_sample``."""
    import fiftyone as fo

    from annotation.fiftyone.publish import _read_batch

    ds = fo.Dataset(ds_name)
    frames = 0
    t0 = time.perf_counter()
    for vid in video_ids:
        b = _read_batch(engine, blobs, [vid], families, None)
        meta = {k: v for k, v in b.metadata[vid].items() if k != "_cls"}
        sample = fo.Sample(filepath=b.filepaths[vid], metadata=fo.VideoMetadata(**meta))
        for name, per_video in b.sample_values.items():
            value = per_video.get(vid)
            if name == "masklets":
                value = [fo.DynamicEmbeddedDocument(**{k: v for k, v in d.items() if k != "_cls"})
                         for d in value]
            sample[name] = value
        for name, per_video in b.frame_values.items():
            for fn, value in per_video[vid].items():
                if value is None:
                    continue
                if isinstance(value, dict):
                    value = fo.Detections.from_dict(value)
                sample.frames[fn][name] = value
        frames += len(b.frame_values["masks"][vid])
        ds.add_sample(sample)
    return frames, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--sample", type=int, default=6, help="videos for the one-at-a-time path")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-fiftyone-") as tmp:
        tmp = Path(tmp)
        server = MongoServer(port=free_port(), base_dir=tmp / "mongod", venv=Path(sys.prefix))
        server.start()
        try:
            os.environ.update(fiftyone_env(server.uri, "bench"))
            import fiftyone as fo

            from annotation.fiftyone.publish import publish
            from storage.blobs import LocalBlobStore
            from storage.db import make_engine, upgrade

            engine = make_engine(f"sqlite:///{tmp / 'engine.db'}")
            upgrade(engine)
            blobs = LocalBlobStore(tmp / "blobs")
            t = time.perf_counter()
            data = make_curation_data(engine, blobs, tmp, videos=args.videos, frames=args.frames,
                                      size=args.size)
            setup_s = time.perf_counter() - t
            fo.list_datasets()  # connect once, outside the timings

            r1 = publish(engine, blobs, data.dataset, fo_dataset="bulk")
            r2 = publish(engine, blobs, data.dataset, fo_dataset="bulk")
            assert r1.full and not r2.changed, (r1, r2)
            sample_ids = data.video_ids[: args.sample]
            n_one, s_one = one_at_a_time(engine, blobs, "one", sample_ids, r1.embedding_families)
            engine.dispose()
        finally:
            server.stop()

    bulk_fps = r1.frames_written / r1.seconds
    one_fps = n_one / s_one
    out = {
        "ratio": round(bulk_fps / one_fps, 2),
        "noop_ratio": round(r2.seconds / r1.seconds, 4),
        "bulk_frames_per_s": round(bulk_fps, 1),
        "one_at_a_time_frames_per_s": round(one_fps, 1),
        "bulk_s": round(r1.seconds, 3),
        "noop_s": round(r2.seconds, 3),
        "videos": args.videos,
        "frames": r1.frames_written,
        "masks": r1.masks_written,
        "one_at_a_time_videos": len(sample_ids),
        "setup_s": round(setup_s, 1),
        "goals": {"ratio": ">= 10", "noop_ratio": "< 0.1"},
    }
    print(f"bulk publish: {r1.frames_written} frames ({r1.masks_written} masks, {args.videos} "
          f"videos) in {r1.seconds:.2f} s = {bulk_fps:.0f} frames/s")
    print(f"one at a time: {n_one} frames in {s_one:.2f} s = {one_fps:.0f} frames/s "
          f"-> ratio {out['ratio']}")
    print(f"no-op publish: {r2.seconds:.3f} s = {out['noop_ratio']} of the first")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
