"""Ingest end to end (SQLite and PostgreSQL; local folders and S3 prefixes) and the `ingest` /
`status` commands. Bad files are part of every batch: they must be reported, skipped, and never
cost anything already stored."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipelines.ingest import IngestError, ingest_videos
from storage.blobs import LocalBlobStore, S3BlobStore
from storage.db import session_scope
from storage.schema import Dataset, Split, Video
from storage.synthetic.dataset import write_dataset
from storage.video import probe_video
from tests.fixtures_s3 import S3_TEST_CREDENTIALS, make_s3_client


@pytest.fixture(scope="module")
def clean_videos(tmp_path_factory) -> Path:
    """Three small synthetic videos, each with its <name>.gt.json."""
    out = tmp_path_factory.mktemp("synthetic")
    write_dataset(out, seed=11, videos=3, size=64, frames=8)
    return out


@pytest.fixture
def batch(clean_videos, tmp_path) -> Path:
    """The clean videos plus: a duplicate under another name, an mp4 cut in half, garbage bytes
    named .mp4, and a video whose ground truth is for another frame size."""
    src = tmp_path / "batch"
    shutil.copytree(clean_videos, src)
    first = sorted(src.glob("*.mp4"))[0]
    shutil.copy(first, src / "copy_of_first.mp4")
    data = first.read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])
    (src / "garbage.mp4").write_bytes(b"\x00not a video\xff" * 500)
    sub = src / "nested"
    sub.mkdir()
    write_dataset(sub, seed=12, videos=1, size=64, frames=8)
    odd = next(sub.glob("*.mp4"))
    gt = json.loads(odd.with_name(odd.stem + ".gt.json").read_text())
    gt["height"], gt["width"] = 32, 32  # wrong size: masks and metadata no longer fit the video
    odd.with_name(odd.stem + ".gt.json").write_text(json.dumps(gt))
    (src / "notes.txt").write_text("ignored: not a video")
    return src


def _counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.scalar(select(func.count()).select_from(Dataset)),
                conn.scalar(select(func.count()).select_from(Video)))


def test_ingest_end_to_end_and_reingest_is_a_noop(engine, batch, tmp_path, clean_videos):
    store = LocalBlobStore(tmp_path / "blobs")
    seen = []
    report = ingest_videos(engine, store, batch, "ds", split="val",
                           progress=lambda item, done, total: seen.append((done, total)))
    by_name = {Path(i.source).name: i for i in report.items}
    assert len(report.items) == 7 and seen[-1] == (7, 7)
    clean_names = sorted(p.name for p in clean_videos.glob("*.mp4"))
    assert sorted(Path(i.source).name for i in report.new) == clean_names
    assert by_name["copy_of_first.mp4"].status == "present"
    assert "same content as" in by_name["copy_of_first.mp4"].reason
    failed = {Path(i.source).name: i.reason for i in report.failed}
    assert set(failed) == {"cut.mp4", "garbage.mp4", "base_d12_v0000.mp4"}
    assert "truncated" in failed["cut.mp4"] or "corrupt" in failed["cut.mp4"]
    assert "not a readable video" in failed["garbage.mp4"]
    assert "32x32" in failed["base_d12_v0000.mp4"] and "64x64" in failed["base_d12_v0000.mp4"]
    assert not report.ok
    assert "3 new, 1 already present, 0 updated, 3 failed" in str(report)

    with session_scope(engine) as s:
        rows = s.scalars(select(Video).order_by(Video.id)).all()
        assert len(rows) == 3
        for row in rows:
            src = Path(row.source_path)
            assert row.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
            info = probe_video(src)
            assert (row.frame_count, row.width, row.height) == (8, 64, 64)
            assert row.fps == pytest.approx(info.fps) and row.fps > 0
            assert row.size_bytes == src.stat().st_size and row.split == Split.VAL
            assert store.get_bytes(row.blob_key) == src.read_bytes()
            assert row.uri == store.uri(row.blob_key)
            gt_key = store.key_for_uri(row.ground_truth_uri)
            assert store.get_bytes(gt_key) == src.with_name(src.stem + ".gt.json").read_bytes()
    blobs_before = sorted(store.list())
    assert len(blobs_before) == 6  # 3 videos + 3 ground truths; nothing from the failed files

    again = ingest_videos(engine, store, batch, "ds")
    assert len(again.new) == 0 and len(again.present) == 4 and len(again.failed) == 3
    assert _counts(engine) == (1, 3)
    assert sorted(store.list()) == blobs_before
    with session_scope(engine) as s:  # the second run's split does not rewrite known videos
        assert set(s.scalars(select(Video.split))) == {Split.VAL}


def test_same_bytes_in_two_datasets_share_one_blob(engine, clean_videos, tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    one = next(clean_videos.glob("*.mp4"))
    assert len(ingest_videos(engine, store, one, "a").new) == 1
    assert len(ingest_videos(engine, store, one, "b").new) == 1
    assert _counts(engine) == (2, 2)
    assert len(list(store.list())) == 2  # one video blob, one ground-truth blob


def test_ground_truth_added_later_is_linked(engine, clean_videos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    video = next(clean_videos.glob("*.mp4"))
    shutil.copy(video, src / video.name)
    store = LocalBlobStore(tmp_path / "blobs")
    first = ingest_videos(engine, store, src, "ds")
    assert len(first.new) == 1
    with session_scope(engine) as s:
        assert s.scalar(select(Video.ground_truth_uri)) is None
    shutil.copy(video.with_name(video.stem + ".gt.json"), src)
    second = ingest_videos(engine, store, src, "ds")
    assert [i.status for i in second.items] == ["updated"]
    with session_scope(engine) as s:
        assert s.scalar(select(Video.ground_truth_uri)) is not None
    assert [i.status for i in ingest_videos(engine, store, src, "ds").items] == ["present"]


@pytest.mark.badinput
def test_bad_ground_truth_fails_its_video_only(sqlite_url, clean_videos, tmp_path):
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    src = tmp_path / "src"
    shutil.copytree(clean_videos, src)
    videos = sorted(src.glob("*.mp4"))
    videos[0].with_name(videos[0].stem + ".gt.json").write_text("{ not json")
    gt1 = videos[1].with_name(videos[1].stem + ".gt.json")
    doc = json.loads(gt1.read_text())
    doc["frames"] = 9
    for obj in doc["objects"]:
        obj["masks"].append(obj["masks"][-1])
    gt1.write_text(json.dumps(doc))
    store = LocalBlobStore(tmp_path / "blobs")
    report = ingest_videos(engine, store, src, "ds")
    reasons = {Path(i.source).name: i.reason for i in report.failed}
    assert "not valid JSON" in reasons[videos[0].name]
    assert "9 frames" in reasons[videos[1].name] and "8" in reasons[videos[1].name]
    assert [Path(i.source).name for i in report.new] == [videos[2].name]
    assert len(list(store.list())) == 2
    engine.dispose()


@pytest.mark.badinput
def test_ground_truth_with_a_broken_rle_is_refused(clean_videos, tmp_path):
    from pipelines.ingest import _ItemFailed, check_ground_truth

    video = sorted(clean_videos.glob("*.mp4"))[0]
    info = probe_video(video)
    gt_src = video.with_name(video.stem + ".gt.json")
    check_ground_truth(gt_src, info)  # the original is fine
    doc = json.loads(gt_src.read_text())
    doc["objects"][0]["masks"][3]["counts"] = "0"  # one pixel's worth of runs for 64x64
    bad = tmp_path / "bad.gt.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(_ItemFailed, match="frame 3.*needs 4096"):
        check_ground_truth(bad, info)
    doc = json.loads(gt_src.read_text())
    doc["format"] = "something-else"
    bad.write_text(json.dumps(doc))
    with pytest.raises(_ItemFailed, match="not a dataengine-gt"):
        check_ground_truth(bad, info)


@pytest.mark.badinput
def test_unusable_sources(sqlite_url, tmp_path, moto_endpoint):
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(IngestError, match="does not exist"):
        ingest_videos(engine, store, tmp_path / "nowhere", "ds")
    with pytest.raises(IngestError, match="no-such-source-bucket"):
        ingest_videos(engine, store, "s3://no-such-source-bucket/x", "ds",
                      s3_client=make_s3_client(moto_endpoint))
    with pytest.raises(IngestError, match="S3 client"):
        ingest_videos(engine, store, "s3://bucket/x", "ds")
    assert _counts(engine) == (0, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ingest_videos(engine, store, empty, "ds").items == []
    engine.dispose()


@pytest.mark.s3
def test_ingest_from_s3_prefix_into_s3_store(sqlite_url, batch, s3_client, s3_bucket, moto_endpoint):
    from storage.db import make_engine

    for p in batch.rglob("*"):
        if p.is_file():
            s3_client.upload_file(str(p), s3_bucket, f"raw/{p.relative_to(batch).as_posix()}")
    s3_client.put_object(Bucket=s3_bucket, Key="elsewhere/other.mp4", Body=b"outside the prefix")
    engine = make_engine(sqlite_url)
    store = S3BlobStore(s3_bucket, prefix="blobs", endpoint_url=moto_endpoint, **S3_TEST_CREDENTIALS)
    report = ingest_videos(engine, store, f"s3://{s3_bucket}/raw", "ds", s3_client=s3_client)
    assert (len(report.new), len(report.present), len(report.failed)) == (3, 1, 3)
    assert all(i.source.startswith(f"s3://{s3_bucket}/raw/") for i in report.items)
    with session_scope(engine) as s:
        rows = s.scalars(select(Video)).all()
        assert len(rows) == 3
        for row in rows:
            assert row.uri == f"s3://{s3_bucket}/blobs/{row.blob_key}"
            assert row.ground_truth_uri.startswith(f"s3://{s3_bucket}/blobs/sha256/")
            assert hashlib.sha256(store.get_bytes(row.blob_key)).hexdigest() == row.sha256
    again = ingest_videos(engine, store, f"s3://{s3_bucket}/raw", "ds", s3_client=s3_client)
    assert len(again.new) == 0 and len(again.present) == 4
    engine.dispose()


# --- the command line ------------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """Embedded defaults in a private work dir; no .env or DATAENGINE_* setting leaks in."""
    import os

    for name in list(os.environ):
        if name.startswith("DATAENGINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAENGINE_WORK_DIR", str(tmp_path / "work"))
    # Wide enough that rich never wraps a long temporary path inside an error panel (CI has no
    # terminal: 80 columns), so messages can be matched as the user reads them.
    monkeypatch.setenv("COLUMNS", "400")
    from typer.testing import CliRunner

    from pipelines.cli import app

    return CliRunner(), app


def test_cli_ingest_and_status(cli_env, batch, clean_videos, tmp_path):
    runner, app = cli_env
    result = runner.invoke(app, ["ingest", str(batch), "--dataset", "cli", "--split", "test"])
    assert result.exit_code == 1, result.output  # some files failed; the rest is stored
    assert "new" in result.output and "garbage.mp4" in result.output
    assert (tmp_path / "work" / "dataengine.db").exists()

    result = runner.invoke(app, ["ingest", str(clean_videos), "--dataset", "cli"])
    assert result.exit_code == 0, result.output
    assert "already present" in result.output

    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    for title in ("rows per table", "videos per dataset", "annotation rounds"):
        assert title in result.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in result.output.splitlines() if line.count("│") == 3}
    assert rows["videos"] == "3" and rows["datasets"] == "1" and rows["frame_masks"] == "0"
    dataset_row = next(line for line in result.output.splitlines() if line.startswith("│ cli"))
    assert [c.strip() for c in dataset_row.split("│")[1:-1]] == ["cli", "3", "0", "0", "3"]
    from storage.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'work' / 'dataengine.db'}")
    with session_scope(engine) as s:
        assert set(s.scalars(select(Video.split))) == {Split.TEST}
    engine.dispose()
    assert len(list((tmp_path / "work" / "blobs" / "sha256").rglob("*.*"))) == 6


@pytest.mark.badinput
def test_cli_bad_arguments(cli_env, tmp_path):
    runner, app = cli_env
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["ingest", str(tmp_path), "--split", "holdout"])
    assert result.exit_code == 2 and "holdout" in result.output


@pytest.mark.s3
def test_cli_ingest_from_s3(cli_env, clean_videos, s3_client, s3_bucket, moto_endpoint, monkeypatch):
    runner, app = cli_env
    for p in clean_videos.iterdir():
        s3_client.upload_file(str(p), s3_bucket, f"in/{p.name}")
    monkeypatch.setenv("DATAENGINE_S3_ENDPOINT_URL", moto_endpoint)
    # boto3's own credential chain (what production uses) gets the dummy test credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_TEST_CREDENTIALS["aws_secret_access_key"])
    result = runner.invoke(app, ["ingest", f"s3://{s3_bucket}/in", "-d", "from-s3"])
    assert result.exit_code == 0, result.output
    assert "new" in result.output
    result = runner.invoke(app, ["status"])
    assert "from-s3" in result.output


def test_status_counts_per_table_and_round(engine):
    import datetime as dt

    from pipelines.cli_data import collect_status, print_status
    from storage.schema import (
        ActorKind, AnnotationRound, AnnotationTask, EffortEvent, EffortMode, FrameMask, Masklet,
        ModelVersion, SourceKind, TaskKind, TaskStatus,
    )

    with session_scope(engine) as s:
        ds = Dataset(name="st")
        s.add(ds)
        s.flush()
        video = Video(dataset_id=ds.id, uri="file:///v.mp4", sha256="a" * 64, fps=24.0,
                      frame_count=4, width=8, height=8, size_bytes=10)
        mv = ModelVersion(family="sam2", version="v1", artifact_uri="file:///m", artifact_sha256="b" * 64)
        s.add_all([video, mv])
        s.flush()
        r0 = AnnotationRound(dataset_id=ds.id, number=0, model_version_id=mv.id)
        r1 = AnnotationRound(dataset_id=ds.id, number=1)
        s.add_all([r0, r1])
        s.flush()
        for obj in range(2):
            m = Masklet(video_id=video.id, object_id=obj, label="x", source_kind=SourceKind.MODEL,
                        source_model_version_id=mv.id, round_id=r0.id)
            s.add(m)
            s.flush()
            s.add_all([FrameMask(masklet_id=m.id, frame_index=t, rle_counts="PP", height=8, width=8,
                                 area=0, bbox_x=0, bbox_y=0, bbox_w=0, bbox_h=0) for t in range(3)])
        s.add(Masklet(video_id=video.id, object_id=9, label="gt", source_kind=SourceKind.GROUND_TRUTH))
        for i, st in enumerate([TaskStatus.SYNCED, TaskStatus.OPEN]):
            s.add(AnnotationTask(idempotency_key=f"k{i}", tool="ls", project_id="1", kind=TaskKind.CORRECTION,
                                 video_id=video.id, round_id=r0.id, frame_start=0, frame_stop=4, status=st))
        s.add(EffortEvent(round_id=r1.id, actor_kind=ActorKind.HUMAN, actor_id="ann", mode=EffortMode.MANUAL,
                          occurred_at=dt.datetime.now(dt.timezone.utc)))

    report = collect_status(engine)
    assert report.tables["masklets"] == 3 and report.tables["frame_masks"] == 6
    assert report.tables["annotation_tasks"] == 2 and report.tables["videos"] == 1
    assert report.datasets == [{"dataset": "st", "videos": 1, "splits": {"train": 1}}]
    by_round = {r["round"]: r for r in report.rounds}
    assert by_round[0] == {"dataset": "st", "round": 0, "status": "planned", "model": "sam2/v1",
                           "masklets": 2, "frame_masks": 6, "tasks": 2, "tasks_synced": 1,
                           "effort_events": 0}
    assert (by_round[1]["masklets"], by_round[1]["effort_events"], by_round[1]["model"]) == (0, 1, "")
    assert by_round[None]["masklets"] == 1  # ground truth outside any round

    from rich.console import Console

    console = Console(record=True, width=200)
    print_status(engine, console)
    text = console.export_text()
    assert "sam2/v1" in text and "2 (1)" in text
