"""pipelines.preannotate against real databases (SQLite and PostgreSQL via the `engine` fixture), a
real local blob store holding real mp4 files, and a random-init SAM 2 registered in the registry."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from models.registry import ModelRegistry
from models.sam2.automatic import AutoConfig
from pipelines.preannotate import preannotate_dataset
from storage.blobs import LocalBlobStore, S3BlobStore, blob_key, sha256_file
from storage.db import copy_insert, session_scope
from storage.masklets import FRAME_MASK_COLUMNS, MaskletRecord, frame_rows, masklet_frames
from storage.masks import decode_rle, encode_rle, mask_iou
from storage.schema import Dataset, FrameMask, Masklet, MaskletStatus, SourceKind, Video
from storage.synthetic.dataset import write_video
from storage.synthetic.videos import generate_video
from tests.fixtures_s3 import S3_TEST_CREDENTIALS
from tests.models.conftest import make_segmenter, write_random_checkpoint

pytestmark = pytest.mark.sam2

FRAMES = 8
SIZE = (64, 96)  # H, W: small and non-square
DATASET = "clips"
# Random weights: no thresholds on the (meaningless) IoU head or stability; a 4x4 point grid and
# at most 2 objects keep a video at about half a second.
AUTO = AutoConfig(points_per_side=4, pred_iou_thresh=0.0, stability_thresh=0.0, min_area_frac=0.0,
                  max_area_frac=1.0, reseed_every=4, max_objects=2)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shares 2 cores with a training job
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("sam2") / "random.pt")


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return make_segmenter(checkpoint)


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory) -> list[tuple[Path, np.ndarray]]:
    """Three synthetic clips written once: (mp4 path, ground-truth masks bool[T, O, H, W])."""
    out = tmp_path_factory.mktemp("videos")
    clips = []
    for seed in (1, 2, 3):
        v = generate_video(seed, size=SIZE, frames=FRAMES, objects=2, name=f"clip{seed}")
        clips.append((write_video(v, out), v.masks))
    return clips


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def model_version_id(engine, store, checkpoint) -> int:
    info = ModelRegistry(engine, store).register("sam2", checkpoint, config={"config": "dataengine_s128"})
    return info.id


def add_videos(engine, store, files: list[Path], upload: bool = True) -> list[int]:
    """Dataset + one Video row per file, its bytes in the blob store (blob_key set; with
    upload=False the row names the key the file would have, but the store never gets it)."""
    with session_scope(engine) as s:
        ds = s.scalars(select(Dataset).where(Dataset.name == DATASET)).one_or_none()
        if ds is None:
            ds = Dataset(name=DATASET)
            s.add(ds)
            s.flush()
        rows = []
        for path in files:
            digest, size = sha256_file(path)
            key = store.put_file(path) if upload else blob_key(digest, ".mp4")
            rows.append(Video(dataset_id=ds.id, uri=path.resolve().as_uri(), blob_key=key,
                              sha256=digest, fps=24.0, frame_count=FRAMES, width=SIZE[1], height=SIZE[0],
                              size_bytes=size))
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def model_output(engine, video_id: int) -> dict[tuple[int, int], str]:
    """{(object_id, frame_index): RLE counts} of the model masklets of one video, read directly."""
    q = (select(Masklet.object_id, FrameMask.frame_index, FrameMask.rle_counts)
         .join(FrameMask, FrameMask.masklet_id == Masklet.id)
         .where(Masklet.video_id == video_id, Masklet.source_kind == SourceKind.MODEL))
    with engine.connect() as conn:
        return {(o, t): c for o, t, c in conn.execute(q)}


def count(engine, table, video_id: int) -> int:
    with engine.connect() as conn:
        if table is Masklet:
            return conn.execute(select(func.count()).select_from(Masklet).where(Masklet.video_id == video_id)).scalar_one()
        return conn.execute(select(func.count()).select_from(FrameMask).join(Masklet)
                            .where(Masklet.video_id == video_id)).scalar_one()


def test_automatic_preannotation_is_idempotent(engine, store, segmenter, mp4s, model_version_id):
    ids = add_videos(engine, store, [p for p, _ in mp4s[:2]])

    first = preannotate_dataset(engine, store, segmenter, DATASET, model_version_id=model_version_id,
                                auto_cfg=AUTO)
    assert [o.video_id for o in first.outcomes] == ids
    assert not first.failed
    assert all(o.mode == "automatic" and o.frames == FRAMES and o.masklets >= 1 for o in first.outcomes)
    before = {v: model_output(engine, v) for v in ids}
    counts = {v: (count(engine, Masklet, v), count(engine, FrameMask, v)) for v in ids}
    for v, o in zip(ids, first.outcomes):
        # What the report says is what the database holds: every masklet on every frame.
        assert counts[v] == (o.masklets, o.masklets * FRAMES)

    second = preannotate_dataset(engine, store, segmenter, DATASET, model_version_id=model_version_id,
                                 auto_cfg=AUTO)
    assert [o.masklets for o in second.outcomes] == [o.masklets for o in first.outcomes]
    # Replaced, not added: same counts and the very same masks.
    assert {v: (count(engine, Masklet, v), count(engine, FrameMask, v)) for v in ids} == counts
    assert {v: model_output(engine, v) for v in ids} == before

    with engine.connect() as conn:
        rows = conn.execute(select(Masklet.source_model_version_id, Masklet.status, Masklet.round_id)).all()
    assert {tuple(r) for r in rows} == {(model_version_id, MaskletStatus.PREDICTED, None)}


@pytest.mark.badinput
def test_corrupt_video_is_reported_and_the_others_are_written(engine, store, segmenter, mp4s,
                                                              model_version_id, tmp_path):
    broken = tmp_path / "broken.mp4"
    data = mp4s[0][0].read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # truncated: the header survives, the frames do not
    ids = add_videos(engine, store, [mp4s[0][0], broken, mp4s[1][0]])
    broken_key = store.put_file(broken)  # same bytes -> the key its Video row holds

    seen = []
    report = preannotate_dataset(engine, store, segmenter, DATASET, model_version_id=model_version_id,
                                 auto_cfg=AUTO, on_video=seen.append)
    assert [o.video_id for o in report.outcomes] == [o.video_id for o in seen] == ids
    assert [o.video_id for o in report.failed] == [ids[1]]
    failure = report.failed[0]
    assert failure.uri == broken.resolve().as_uri()
    # The message names the file that failed to decode (the blob fetched for it).
    assert Path(broken_key).name in failure.error
    assert failure.masklets == 0 and count(engine, Masklet, ids[1]) == 0
    for v, o in zip((ids[0], ids[2]), (report.outcomes[0], report.outcomes[2])):
        assert o.error is None and o.masklets >= 1
        assert count(engine, Masklet, v) == o.masklets


@pytest.mark.s3
@pytest.mark.badinput
def test_s3_blobs_missing_one_is_reported_and_downloads_are_cleaned_up(
        engine, segmenter, mp4s, model_version_id, moto_endpoint, s3_bucket, tmp_path, monkeypatch):
    store = S3BlobStore(s3_bucket, prefix="videos", endpoint_url=moto_endpoint, **S3_TEST_CREDENTIALS)
    present, = add_videos(engine, store, [mp4s[0][0]])
    absent, = add_videos(engine, store, [mp4s[1][0]], upload=False)
    # Temp folders of this run land here, so the test can see what is left behind.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    report = preannotate_dataset(engine, store, segmenter, DATASET, model_version_id=model_version_id,
                                 auto_cfg=AUTO)
    ok, failed = report.outcomes
    assert (ok.video_id, failed.video_id) == (present, absent)
    assert ok.error is None and ok.masklets >= 1 and count(engine, Masklet, present) == ok.masklets
    with engine.connect() as conn:
        missing_key = conn.execute(select(Video.blob_key).where(Video.id == absent)).scalar_one()
    assert failed.error and missing_key in failed.error and "not found" in failed.error
    assert list(scratch.iterdir()) == []  # the downloaded video did not outlive the run


def add_human_masklet(engine, video_id: int, object_id: int, masks: np.ndarray) -> int:
    """A corrected masklet as the Label Studio sync would leave it (source human)."""
    with engine.begin() as conn:
        mid = conn.execute(Masklet.__table__.insert().values(
            video_id=video_id, object_id=object_id, label="blob", source_kind=SourceKind.HUMAN,
            status=MaskletStatus.CORRECTED).returning(Masklet.id)).scalar_one()
        rec = MaskletRecord(object_id=object_id, label="blob",
                            rles={t: encode_rle(m) for t, m in enumerate(masks)})
        copy_insert(conn, FrameMask, frame_rows(mid, rec), FRAME_MASK_COLUMNS)
    return mid


def test_prompted_mode_starts_from_the_first_non_empty_human_frame(engine, store, segmenter, mp4s,
                                                                   model_version_id):
    (path_a, gt_a), (path_b, _) = mp4s[0], mp4s[1]
    vid_a, vid_b = add_videos(engine, store, [path_a, path_b])
    late = gt_a[:, 0].copy()
    late[:3] = False  # this object appears on frame 3 for the person: frames 0-2 are empty masks
    early = gt_a[:, 1]
    first_of_early = int(np.argmax(early.reshape(FRAMES, -1).any(axis=1)))
    assert late[3].any() and first_of_early < 3
    add_human_masklet(engine, vid_a, object_id=5, masks=late)
    add_human_masklet(engine, vid_a, object_id=6, masks=early)

    report = preannotate_dataset(engine, store, segmenter, DATASET, model_version_id=model_version_id,
                                 prompted=True, auto_cfg=AUTO)
    assert not report.failed, report.failed
    # A video with corrections is tracked from them; one without falls back to automatic masklets.
    assert [(o.video_id, o.mode) for o in report.outcomes] == [(vid_a, "prompted"), (vid_b, "automatic")]
    assert report.outcomes[0].masklets == 2

    with engine.connect() as conn:
        rows = conn.execute(select(Masklet.object_id, Masklet.id).where(
            Masklet.video_id == vid_a, Masklet.source_kind == SourceKind.MODEL)).all()
        by_object = {oid: mid for oid, mid in rows}
        assert sorted(by_object) == [5, 6]  # the person's object ids are kept
        frames = {oid: masklet_frames(conn, mid) for oid, mid in by_object.items()}
        ious = {oid: dict(conn.execute(select(FrameMask.frame_index, FrameMask.predicted_iou)
                                       .where(FrameMask.masklet_id == mid)).all())
                for oid, mid in by_object.items()}
    for oid, human, prompt_frame in ((5, late, 3), (6, early, first_of_early)):
        assert sorted(frames[oid]) == list(range(FRAMES))  # forwards, then back to frame 0
        # The prompt frame is the first non-empty one: the predictor reports certainty 1.0 there
        # and nowhere else, and stores the person's mask (through the 128 px model resolution).
        assert [t for t, v in ious[oid].items() if v == 1.0] == [prompt_frame]
        assert mask_iou(decode_rle(frames[oid][prompt_frame]), human[prompt_frame]) > 0.85
