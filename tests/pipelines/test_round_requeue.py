"""Videos go through a later round again when verification sent a masklet back or curators tagged
them; they start from their latest corrected masklet, not from a new first-frame drawing (fast:
SQLite, no Label Studio, no Ray)."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import insert, select

pytestmark = pytest.mark.sam2


def _settings(tmp_path, db_url):
    from pipelines.settings import Settings

    return Settings(work_dir=tmp_path / "work", database_url=db_url, round_videos=2, round_frames=6,
                    round_objects=2)


def _masklet(conn, video_id, object_id, round_id, kind, status, mask, model_version_id=None):
    from storage.masks import encode_rle
    from storage.masklets import FRAME_MASK_COLUMNS, MaskletRecord, frame_rows
    from storage.schema import FrameMask, Masklet

    mid = conn.execute(insert(Masklet).values(
        video_id=video_id, object_id=object_id, label="object", source_kind=kind, status=status,
        round_id=round_id, source_model_version_id=model_version_id).returning(Masklet.id)).scalar_one()
    rec = MaskletRecord(object_id, "object", {0: encode_rle(mask)})
    conn.execute(insert(FrameMask), [dict(zip(FRAME_MASK_COLUMNS, r)) for r in frame_rows(mid, rec)])
    return mid


def test_sent_back_and_tagged_videos_join_the_next_round(tmp_path, sqlite_url):
    from pipelines.round_steps import RoundContext, ingest_step, preannotate_step, requeued_videos
    from storage.schema import CurationTag, Masklet, SourceKind

    settings = _settings(tmp_path, sqlite_url)
    r1 = RoundContext.build(settings, "rq", 1, seed=7)
    ing1 = ingest_step(r1)
    a, b = ing1["video_ids"]
    assert ing1["requeued_video_ids"] == []
    with r1.engine.begin() as c:
        mask = np.zeros((128, 128), bool)
        mask[40:70, 50:90] = True
        # video a: corrected by the scripted annotator, then its re-propagation sent back
        _masklet(c, a, 1, ing1["round_id"], SourceKind.SCRIPTED_ANNOTATOR, "corrected", mask)
        _masklet(c, a, 1, ing1["round_id"], SourceKind.REPROPAGATED, "in_review", mask,
                 ing1["model_version_id"])
        # video b: verified, but a curator tagged it for another pass
        _masklet(c, b, 1, ing1["round_id"], SourceKind.REPROPAGATED, "verified", mask,
                 ing1["model_version_id"])
        c.execute(insert(CurationTag).values(video_id=b, tag="reannotate", source="fiftyone:test"))

    r2 = RoundContext.build(settings, "rq", 2, seed=7)
    ing2 = ingest_step(r2)
    assert ing2["requeued_video_ids"] == [a, b]
    assert set(ing2["video_ids"]) == set(ing2["new_video_ids"]) | {a, b}
    with r2.engine.connect() as c:
        assert c.scalar(select(CurationTag.consumed_by_round_id)) == ing2["round_id"]
    # A re-run of the round's ingest (after a kill) sees the same set although the tag is consumed.
    assert requeued_videos(r2, ing2["round_id"], ing2["new_video_ids"]) == [a, b]
    # Round 3 does not see them again: nothing was sent back in round 2, the tag is consumed.
    r3 = RoundContext.build(settings, "rq", 3, seed=7)
    assert requeued_videos(r3, ing2["round_id"] + 1, []) == []

    from pipelines.round_steps import STEP_FUNCTIONS, run_round_step

    assert "verify" in STEP_FUNCTIONS
    run_round_step(r2, "ingest")
    pre = preannotate_step(r2)
    # New videos: the annotator drew frame 0 of every object; requeued ones started from their
    # latest corrected / verified masklet.
    assert pre["requeued_prompts"] == 2
    assert pre["first_frame_masks"] > 0
    with r2.engine.connect() as c:
        prompted = set(c.scalars(select(Masklet.video_id).where(
            Masklet.round_id == ing2["round_id"], Masklet.source_kind == SourceKind.MODEL)))
    assert {a, b} <= prompted
