"""FiftyOne publish benchmark: the bulk incremental publish vs adding samples one at a time.

Starts its own mongod (a copy of the template data dir, free loopback port) and a SQLite database
with a local blob store in a temp dir, and makes an engine dataset of ``--videos`` synthetic
videos (``--frames`` frames, 2 objects, ground truth, one round of masklets, effort events and
``sam2-encoder`` embeddings; see ``tests.fixtures_fiftyone.make_curation_data``). Then it times:

- bulk: ``annotation.fiftyone.publish.publish`` on a fresh FiftyOne dataset, all of it (every
  video is new: one ``add_samples`` per batch with the sample fields, the frames with one
  ``insert_many`` of raw documents; plus the schema, similarity index, saved views and
  watermark, which the one-at-a-time path does not do), frames/s;
- noop: the same publish again with nothing changed (the watermark check only);
- one_at_a_time: for ``--sample`` videos, the same content from the same preparation code
  (``publish._read_batch`` per video, masks left as arrays; ``publish._sample_for``), each video
  added as ODM objects (``fo.Sample`` + ``fo.Frame`` + ``fo.Detection``) with one
  ``dataset.add_sample`` call, frames/s; run once as is (``ratio``) and once under the garbage-
  collector setting the publish uses (``same_gc_ratio``: the ODM path gains from it too).

Both paths run ``--repeat`` times, interleaved (this machine's load changes by the second), and
the fastest run of each is reported.

Prints a summary, and with --json one JSON object as its LAST line:
  {"ratio": bulk fps / one-at-a-time fps (goal >= 10), "noop_ratio": noop s / bulk s (goal < 0.1),
   "cpu_ratio", "same_gc_ratio", "same_gc_cpu_ratio", ...}

Usage: python bench/fiftyone_publish.py [--json] [--videos 40] [--frames 64] [--sample 6] [--repeat 3]
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


def cpu_seconds(mongod_pid: int | None) -> float:
    """CPU time of this process plus the mongod's (user + system): the work a path costs, which
    depends less than wall time on what else this machine runs (waiting for a busy CPU is not
    counted; a busy sibling hyper-thread still slows it)."""
    total = time.process_time()
    if mongod_pid is not None:
        try:
            fields = Path(f"/proc/{mongod_pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def one_at_a_time(engine, blobs, ds_name: str, video_ids, families,
                  mongod_pid: int | None = None) -> tuple[int, float, float]:
    """The naive path over the same preparation as the publish: per video, read it with the
    publish's own reader (masks left as numpy arrays), build ODM objects (``fo.Sample`` with the
    publish's sample fields, ``fo.Frame`` + ``fo.Detection``), one ``add_sample``."""
    import fiftyone as fo

    from annotation.fiftyone.publish import _read_batch, _sample_for

    ds = fo.Dataset(ds_name)
    frames = 0
    t0, c0 = time.perf_counter(), cpu_seconds(mongod_pid)
    for vid in video_ids:
        b = _read_batch(engine, blobs, [vid], families, None, serialize_masks=False)
        sample = _sample_for(b, vid)
        for name, per_video in b.frame_values.items():
            for fn, value in per_video[vid].items():
                if value is None:
                    continue
                if isinstance(value, dict):  # Detections: labels as the ODM builds them
                    value = fo.Detections(detections=[
                        fo.Detection(**{k: x for k, x in d.items() if k not in ("_id", "_cls")})
                        for d in value["detections"]])
                sample.frames[fn][name] = value
        frames += len(b.frame_values["masks"][vid])
        ds.add_sample(sample)
    return frames, time.perf_counter() - t0, cpu_seconds(mongod_pid) - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--sample", type=int, default=6, help="videos for the one-at-a-time path")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each path, interleaved; the fastest of each is reported")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-fiftyone-") as tmp:
        tmp = Path(tmp)
        server = MongoServer(port=free_port(), base_dir=tmp / "mongod", venv=Path(sys.prefix))
        server.start()
        try:
            os.environ.update(fiftyone_env(server.uri, "bench"))
            import fiftyone as fo

            from annotation.fiftyone.publish import _young_gc, publish
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

            sample_ids = data.video_ids[: args.sample]
            pid = int(server.pid_file.read_text().split()[0]) if server.pid_file.exists() else None
            runs = []
            for k in range(max(1, args.repeat)):  # interleaved: load changes hit both paths
                c0 = cpu_seconds(pid)
                r1 = publish(engine, blobs, data.dataset, fo_dataset=f"bulk{k}")
                c1 = cpu_seconds(pid) - c0
                r2 = publish(engine, blobs, data.dataset, fo_dataset=f"bulk{k}")
                assert r1.full and not r2.changed, (r1, r2)
                one = one_at_a_time(engine, blobs, f"one{k}", sample_ids, r1.embedding_families,
                                    pid)
                with _young_gc():  # the publish's own garbage-collector setting, for comparison
                    one_gc = one_at_a_time(engine, blobs, f"one-gc{k}", sample_ids,
                                           r1.embedding_families, pid)
                runs.append((r1, r2, one, c1, one_gc))
            engine.dispose()
        finally:
            server.stop()

    r1 = min((r[0] for r in runs), key=lambda r: r.seconds)
    r2 = min((r[1] for r in runs), key=lambda r: r.seconds)
    n_one, s_one, _ = min((r[2] for r in runs), key=lambda r: r[1])
    bulk_fps = r1.frames_written / r1.seconds
    one_fps = n_one / s_one
    bulk_cpu = min(r[3] for r in runs)
    one_cpu = min(r[2][2] for r in runs)
    n_gc, s_gc, _ = min((r[4] for r in runs), key=lambda r: r[1])
    gc_cpu = min(r[4][2] for r in runs)
    out = {
        "ratio": round(bulk_fps / one_fps, 2),
        "noop_ratio": round(r2.seconds / r1.seconds, 4),
        # The same ratio in CPU seconds (this process + mongod) instead of wall seconds: round
        # trips cost the one-at-a-time path more wall time when the machine is busy.
        "cpu_ratio": round((r1.frames_written / bulk_cpu) / (n_one / one_cpu), 2),
        # Against the one-at-a-time path run under the publish's garbage-collector setting
        # (publish._young_gc): what the write path alone is worth, without that setting's share.
        "same_gc_ratio": round(bulk_fps / (n_gc / s_gc), 2),
        "same_gc_cpu_ratio": round((r1.frames_written / bulk_cpu) / (n_gc / gc_cpu), 2),
        "bulk_frames_per_s": round(bulk_fps, 1),
        "one_at_a_time_frames_per_s": round(one_fps, 1),
        "bulk_s": round(r1.seconds, 3),
        "noop_s": round(r2.seconds, 3),
        "videos": args.videos,
        "frames": r1.frames_written,
        "masks": r1.masks_written,
        "one_at_a_time_videos": len(sample_ids),
        "repeat": len(runs),
        "bulk_s_runs": [round(r[0].seconds, 3) for r in runs],
        "one_at_a_time_s_runs": [round(r[2][1], 3) for r in runs],
        "bulk_cpu_s": round(bulk_cpu, 3),
        "one_at_a_time_cpu_s": round(one_cpu, 3),
        "one_at_a_time_same_gc_s": round(s_gc, 3),
        "one_at_a_time_same_gc_cpu_s": round(gc_cpu, 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "setup_s": round(setup_s, 1),
        "goals": {"ratio": ">= 10", "noop_ratio": "< 0.1"},
    }
    print(f"bulk publish: {r1.frames_written} frames ({r1.masks_written} masks, {args.videos} "
          f"videos) in {r1.seconds:.2f} s = {bulk_fps:.0f} frames/s")
    print(f"one at a time: {n_one} frames in {s_one:.2f} s = {one_fps:.0f} frames/s "
          f"-> ratio {out['ratio']}")
    print(f"in CPU seconds (this process + mongod): bulk {bulk_cpu:.2f} s, one at a time "
          f"{one_cpu:.2f} s -> cpu_ratio {out['cpu_ratio']} (load average {out['load_avg_1m']})")
    print(f"one at a time under the publish's gc setting: {n_gc / s_gc:.0f} frames/s -> "
          f"same_gc_ratio {out['same_gc_ratio']} (cpu {out['same_gc_cpu_ratio']})")
    print(f"no-op publish: {r2.seconds:.3f} s = {out['noop_ratio']} of the first")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
