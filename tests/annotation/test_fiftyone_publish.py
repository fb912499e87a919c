"""Publishing to FiftyOne: a real mongod, real FiftyOne, a real database (SQLite and PostgreSQL),
real mp4 files in a local blob store."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, update

from storage.blobs import LocalBlobStore
from storage.db import session_scope
from storage.masks import decode_rle
from storage.schema import Masklet, MaskletStatus, PipelineRun, SourceKind
from tests.fixtures_fiftyone import make_curation_data


@pytest.fixture
def blob_store(tmp_path):
    return LocalBlobStore(tmp_path / "blobs")


def test_publish_full_then_noop_then_incremental(engine, blob_store, tmp_path, fo_dataset_name):
    import fiftyone as fo

    from annotation.fiftyone.publish import PUBLISH_FLOW, publish, run_key

    data = make_curation_data(engine, blob_store, tmp_path, videos=3, frames=8, duplicate_last=True)
    r1 = publish(engine, blob_store, data.dataset, fo_dataset=fo_dataset_name)
    assert r1.full and r1.videos_added == 3 and r1.videos_updated == 0
    assert r1.frames_written == 24 and r1.masks_written > 0
    assert r1.embedding_families == ["sam2-encoder"]
    ds = fo.load_dataset(fo_dataset_name)
    assert ds.media_type == "video" and len(ds) == 3 and ds.count("frames") == 24
    assert sorted(ds.values("video_id")) == sorted(data.video_ids)

    # Every mask in FiftyOne is the stored mask, pixel for pixel (crop in its box, 1-based frames).
    vid = data.video_ids[0]
    sample = ds.match({"video_id": vid}).first()
    with engine.connect() as conn:
        from storage.masklets import masklet_frames

        for mid in data.masklet_ids[vid]:
            for t, rle in masklet_frames(conn, mid).items():
                full = decode_rle(rle)
                dets = [d for d in (sample.frames[t + 1].masks.detections or [])
                        if d.masklet_id == mid]
                if not full.any():
                    assert not dets
                    continue
                (d,) = dets
                h, w = full.shape
                x, y, bw, bh = d.bounding_box
                x0, y0 = round(x * w), round(y * h)
                crop = full[y0:y0 + round(bh * h), x0:x0 + round(bw * w)]
                assert np.array_equal(d.mask, crop)
                assert d.source == "model:sam2/curation-test" and d.status == "predicted"
                assert d.round == 1 and d.confidence == d.predicted_iou
                assert 0.0 <= d.gt_iou <= 1.0
    # Ground truth, effort, split, embeddings, similarity index, near-duplicates.
    assert sample.has_ground_truth and sample.frames[1].ground_truth is not None
    assert 0.0 < sample.gt_iou_mean < 1.0
    assert sample.effort_seconds > 0 and "1" in sample.effort_by_round
    assert sample.split == "train" and sample.rounds == [1] and sample.latest_round == 1
    assert len(sample.emb_sam2_encoder) == 16
    assert len(sample.masklets) == 2 and all(len(m.emb_sam2_encoder) == 16 for m in sample.masklets)
    assert len(sample.frames[1].emb_sam2_encoder) == 16 and not sample.frames[2].emb_sam2_encoder
    assert "sim_sam2_encoder" in ds.list_brain_runs()
    assert ds.exists("near_duplicate_of").values("near_duplicate_of") == [data.video_ids[0]]
    assert set(ds.list_saved_views()) >= {"least-confident-masklets", "most-corrected-videos",
                                          "rejected-at-verification", "gt-disagreement",
                                          "near-duplicates"}
    assert ds.info["effort_per_round"]["1"]["seconds"] > 0

    # Nothing changed: nothing is written.
    r2 = publish(engine, blob_store, data.dataset, fo_dataset=fo_dataset_name)
    assert not r2.changed and not r2.full and r2.frames_written == 0

    # One masklet rejected at verification: only its video is published again, in place.
    tags_before = ds.match({"video_id": vid}).first().id
    ds.match({"video_id": vid}).tag_samples("keep-me")
    mid = data.masklet_ids[vid][0]
    with engine.begin() as conn:
        conn.execute(update(Masklet).where(Masklet.id == mid).values(status=MaskletStatus.REJECTED))
    r3 = publish(engine, blob_store, data.dataset, fo_dataset=fo_dataset_name)
    assert (r3.videos_added, r3.videos_updated, r3.videos_removed) == (0, 1, 0) and not r3.full
    ds.reload()
    s = ds.match({"video_id": vid}).first()
    assert s.id == tags_before and "keep-me" in s.tags  # updated in place: curator tags survive
    assert s.rejected_masklets == 1
    assert ds.load_saved_view("rejected-at-verification").values("video_id") == [vid]
    statuses = ds.load_saved_view("rejected-at-verification").distinct(
        "frames.masks.detections.status")
    assert statuses == ["rejected"]

    # Another video's masklet re-propagated and sent back at verification (unsatisfactory).
    vid2 = data.video_ids[1]
    mid2 = data.masklet_ids[vid2][0]
    with engine.begin() as conn:
        conn.execute(update(Masklet).where(Masklet.id == mid2).values(
            source_kind=SourceKind.REPROPAGATED, status=MaskletStatus.IN_REVIEW))
    publish(engine, blob_store, data.dataset, fo_dataset=fo_dataset_name)
    ds.reload()
    assert ds.match({"video_id": vid2}).first().sent_back_masklets == 1
    sent_back = ds.load_saved_view("sent-back-at-verification")
    assert sent_back.values("video_id") == [vid2]
    assert sent_back.distinct("frames.masks.detections.status") == ["in_review"]
    assert sent_back.distinct("frames.masks.detections.masklet_id") == [mid2]

    with session_scope(engine) as ses:
        run = ses.scalar(select(PipelineRun).where(PipelineRun.run_key == run_key(fo_dataset_name)))
        assert run.flow == PUBLISH_FLOW and run.result["last"]["videos_updated"] == 1


def test_publish_recovers_when_the_fiftyone_dataset_is_gone(sqlite_url, blob_store, tmp_path,
                                                           fo_dataset_name):
    import fiftyone as fo

    from annotation.fiftyone.publish import publish
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    data = make_curation_data(engine, blob_store, tmp_path, videos=2, frames=4)
    publish(engine, blob_store, data.dataset, fo_dataset=fo_dataset_name)
    fo.delete_dataset(fo_dataset_name)
    r = publish(engine, blob_store, data.dataset, fo_dataset=fo_dataset_name)
    assert r.full and r.videos_added == 2
    assert len(fo.load_dataset(fo_dataset_name)) == 2
    engine.dispose()


def test_publish_unknown_dataset_is_a_clear_error(sqlite_url, blob_store, fo_dataset_name):
    from annotation.fiftyone.publish import PublishError, publish
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    with pytest.raises(PublishError, match="'nope' does not exist"):
        publish(engine, blob_store, "nope", fo_dataset=fo_dataset_name)
    engine.dispose()
