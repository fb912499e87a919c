"""The round trip: curators tag in FiftyOne -> sync -> the next round re-queues exactly those
videos; exclude keeps them out of training. Real mongod, real FiftyOne, real database."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from storage.blobs import LocalBlobStore
from storage.db import session_scope
from storage.schema import AnnotationRound, CurationTag
from tests.fixtures_fiftyone import make_curation_data


@pytest.fixture
def blob_store(tmp_path):
    return LocalBlobStore(tmp_path / "blobs")


def test_tags_round_trip(engine, blob_store, tmp_path, fo_dataset_name):
    import fiftyone as fo

    from annotation.fiftyone.publish import publish
    from annotation.fiftyone.tags import sync_tags, tag_source
    from pipelines.curation import consume_tags, excluded_from_training, videos_to_requeue

    data = make_curation_data(engine, blob_store, tmp_path, videos=4, frames=4)
    publish(engine, blob_store, data.dataset, fo_dataset=fo_dataset_name)
    ds = fo.load_dataset(fo_dataset_name)
    a, b, c, d = data.video_ids

    def sample(vid):
        return ds.match({"video_id": vid})

    sample(a).tag_samples("reannotate")
    sample(c).tag_samples("exclude")
    sample(d).tag_samples("looks-fine")  # not a curation tag: ignored
    # A frame-level verdict on video b: the curator tags one mask (masklet) on frame 3.
    mid_b = data.masklet_ids[b][1]
    from fiftyone import ViewField as F

    one_label = (sample(b).match_frames(F("frame_number") == 3)
                 .filter_labels("frames.masks", F("masklet_id") == mid_b))
    one_label.tag_labels("needs-review", label_fields="frames.masks")
    assert ds.count_label_tags() == {"needs-review": 1}

    r = sync_tags(engine, ds)
    assert len(r.added) == 3 and not r.withdrawn
    assert videos_to_requeue(engine, data.dataset) == [a, b]
    ex = excluded_from_training(engine, data.dataset)
    assert ex.videos == {c} and ex.excludes(c) and not ex.excludes(a)
    with session_scope(engine) as s:
        row = s.scalar(select(CurationTag).where(CurationTag.video_id == b))
        assert (row.frame_index, row.masklet_id, row.tag, row.source) == (
            2, mid_b, "needs-review", tag_source(fo_dataset_name))
    # The saved views list what curators tagged.
    ds.reload()
    assert ds.load_saved_view("to-reannotate").values("video_id") == [a]
    assert ds.load_saved_view("needs-review").values("video_id") == [b]

    # Idempotent.
    r = sync_tags(engine, ds)
    assert not r.added and not r.withdrawn
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(CurationTag)).scalar() == 3

    # A withdrawn tag withdraws the pending row.
    ds.select_labels(tags="needs-review").untag_labels("needs-review")
    r = sync_tags(engine, ds)
    assert len(r.withdrawn) == 1
    assert videos_to_requeue(engine, data.dataset) == [a]

    # The next round consumes the tags: nothing left to re-queue; the next sync clears the tag in
    # the App (the row stays as history), and tagging again asks for another pass.
    with session_scope(engine) as s:
        rnd = AnnotationRound(dataset_id=data.dataset_id, number=2)
        s.add(rnd)
        s.flush()
        round2 = rnd.id
    assert consume_tags(engine, data.dataset, round2, video_ids=[a]) == 1
    assert videos_to_requeue(engine, data.dataset) == []
    r = sync_tags(engine, ds)
    assert len(r.cleared_consumed) == 1 and not r.added
    assert "reannotate" not in sample(a).first().tags
    assert "exclude" in sample(c).first().tags  # exclude is never consumed
    sample(a).tag_samples("reannotate")
    r = sync_tags(engine, ds)
    assert len(r.added) == 1
    assert videos_to_requeue(engine, data.dataset) == [a]
    with engine.connect() as conn:
        consumed = conn.execute(select(func.count()).select_from(CurationTag).where(
            CurationTag.consumed_by_round_id == round2)).scalar()
    assert consumed == 1
