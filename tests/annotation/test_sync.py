"""Exactly-once sync against the REAL Label Studio server and both databases (``engine``).

Every annotation is delivered twice (webhook-shaped payloads + the bulk poll), out of order, with a
stale older version after the newer one, and a sync process is killed (SIGKILL) between fetch and
commit: the database must end identical (natural-key table dumps) to one clean sync.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from annotation.labelstudio import (
    CORRECTION,
    VERIFICATION,
    LabelStudioClient,
    LabelStudioUnavailable,
)
from annotation.labelstudio.effort import ObjectEffort, make_marker
from annotation.labelstudio.sync import (
    AnnotationSync,
    Delivery,
    normalize_timestamp,
    version_key,
)
from storage.db import make_engine, upgrade
from storage.masks import decode_rle, mask_to_brush
from storage.schema import (
    AnnotationTask,
    AppliedAnnotation,
    EffortEvent,
    FrameMask,
    Masklet,
    MaskletStatus,
    SourceKind,
    TaskStatus,
)
from tests.annotation.sync_helpers import dump, make_setup

pytestmark = pytest.mark.labelstudio

ROOT = Path(__file__).resolve().parents[2]
H, W = 32, 48


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def twin_engine(db_url, tmp_path):
    """A second, empty database of the same backend as ``engine`` (for the clean sync)."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'twin.db'}"
        eng = make_engine(url)
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    from tests.fixtures_db import create_pg_database, drop_pg_database, pg_database_url

    name = create_pg_database("dataengine_twin")
    eng = make_engine(pg_database_url(name))
    upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()
        drop_pg_database(name)


def _clone_seed(src, dst) -> None:
    """Copy the seeded rows (datasets .. annotation tasks) so both databases describe the same
    Label Studio tasks with the same ids."""
    from storage.schema import Base

    order = ["datasets", "model_versions", "annotation_rounds", "videos", "masklets",
             "frame_masks", "annotation_tasks"]
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    with src.connect() as s, dst.begin() as d:
        for name in order:
            rows = [dict(r._mapping) for r in s.execute(select(tables[name]))]
            if rows:
                d.execute(insert(tables[name]), rows)
        if d.dialect.name == "postgresql":  # keep sequences past the copied ids
            for name in order:
                d.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)")


def _edit(result: list[dict], slot: int, frame: int, mask: np.ndarray | None) -> list[dict]:
    """A person's edit: the region of ``slot`` on ``frame`` replaced (or removed: None)."""
    out = []
    for r in copy.deepcopy(result):
        if r.get("type") == "brushlabels" and r["item_index"] == frame \
                and r["value"]["brushlabels"] == [f"object_{slot}"]:
            if mask is None:
                continue
            r["value"]["rle"] = mask_to_brush(mask)
            r["origin"] = "prediction-changed"
        out.append(r)
    return out


def _verdict(slot: int, choice: str) -> dict:
    return {"type": "choices", "from_name": f"verdict_object_{slot}", "to_name": "frames",
            "value": {"choices": [choice]}}


def _box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _annotate_all(ls_client, setup):
    """People correct every task (varied edits and verdicts); one annotation is then updated.
    Returns (webhook-shaped deliveries of every version created, the stale first version)."""
    hooks, stale = [], None
    verdicts = ["fixed", "unsure", "reject", None]
    for i, (key, tid) in enumerate(sorted(setup.task_ids.items())):
        task = ls_client.get_task(tid)
        res = _edit(task["predictions"][0]["result"], 1, i % 4, _box(2 + i, 12 + i, 3, 20))
        if i % 2:
            res = _edit(res, 2, 0, None)  # object 2 erased on the first frame
        if verdicts[i % 4]:
            res.append(_verdict(1, verdicts[i % 4]))
        ann = ls_client.create_annotation(tid, res, lead_time=10.0 + i)
        hooks.append(Delivery(task=task, annotation=ann, project_id=setup.project_id, source="webhook"))
    # the first task's annotation is reopened and changed: version 2 supersedes version 1
    key0, tid0 = sorted(setup.task_ids.items())[0]
    v1 = hooks[0].annotation
    task0 = ls_client.get_task(tid0)
    res2 = _edit(v1["result"], 2, 1, _box(20, 30, 30, 44))
    v2 = ls_client.update_annotation(v1["id"], res2, lead_time=25.0)
    assert version_key(v2) > version_key(v1)
    stale = Delivery(task=task0, annotation=v1, project_id=setup.project_id, source="webhook")
    hooks.append(Delivery(task=task0, annotation=v2, project_id=setup.project_id, source="webhook"))
    return hooks, stale


_KILL_SCRIPT = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from annotation.labelstudio import LabelStudioClient
from annotation.labelstudio.sync import AnnotationSync
from storage.db import make_engine
url, token, db_url, project, kill_at = sys.argv[2], os.environ["LS_TOKEN"], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
n = {"commits": 0}
def before_commit(d):
    n["commits"] += 1
    if n["commits"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # between fetch and commit, mid-transaction
AnnotationSync(make_engine(db_url), before_commit=before_commit).sync_project(
    LabelStudioClient(url, token), project)
print("not killed")
"""


def _engine_url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_every_annotation_twice_out_of_order_and_killed_ends_like_a_clean_sync(
        labelstudio, ls_client, engine, twin_engine):
    setup = make_setup(engine, ls_client, _name("eo"), n_videos=2, frames=8, chunk_frames=4,
                       height=H, width=W, objects=2)
    _clone_seed(engine, twin_engine)
    hooks, stale = _annotate_all(ls_client, setup)

    # 1. a sync process is killed inside its second transaction (after fetching everything)
    r = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(ROOT), labelstudio.url,
                        _engine_url(engine), str(setup.project_id), "2"],
                       env={**os.environ, "LS_TOKEN": labelstudio.token},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(AppliedAnnotation)) == 1  # one committed
    # 2. the webhooks arrive late, newest first, one request each, then the stale version 1
    sync = AnnotationSync(engine)
    outcomes = [sync.apply_one(d) for d in reversed(hooks)]
    assert outcomes.count("applied") == len(hooks) - 1 - 1  # one was committed before the kill
    assert sync.apply_one(stale) == "stale"
    # 3. the poll delivers everything again, and then everything is replayed once more
    rep = sync.sync_project(ls_client, setup.project_id)
    assert rep.applied == 0 and rep.duplicates == rep.fetched == len(setup.task_ids)
    rep = sync.apply([*hooks, stale, *hooks])
    assert rep.applied == 0 and rep.duplicates + rep.stale == 2 * len(hooks) + 1

    clean = AnnotationSync(twin_engine).sync_project(ls_client, setup.project_id)
    assert clean.applied == len(setup.task_ids) and not clean.invalid
    messy, reference = dump(engine), dump(twin_engine)
    assert messy == reference
    # and the content is what the people did
    assert all(status == "synced" for _, _, status in reference["tasks"])
    human = [(k, v) for k, v in reference["masklets"] if k[2] == "human"]
    assert len(human) == 2 * 2  # 2 videos x 2 objects
    # verdicts: v0 chunk0 'fixed', chunk1 'unsure' -> in_review; v1 chunk0 'reject' -> rejected
    by_video = {(k[0], k[1]): v[1] for k, v in human}
    v0, v1 = setup.video_ids
    assert by_video[(v0, 1)] == "in_review" and by_video[(v1, 1)] == "rejected"
    assert by_video[(v0, 2)] == by_video[(v1, 2)] == "corrected"
    effort = reference["effort"]
    assert len(effort) == len(setup.task_ids) * 2
    assert all(e[3] == "human" and e[4].startswith("labelstudio:user:") for e in effort)
    # seconds per task add up to the lead time of the newest version
    secs = {}
    for e in effort:
        secs[e[2]] = secs.get(e[2], 0) + e[10]
    first_key = sorted(setup.task_ids)[0]
    assert secs[first_key] == pytest.approx(25.0)


def test_masks_effort_and_frames_changed_match_the_annotation(ls_client, engine):
    setup = make_setup(engine, ls_client, _name("fx"), n_videos=1, frames=4, chunk_frames=4,
                       height=H, width=W, objects=2)
    (key, tid), = setup.task_ids.items()
    task = ls_client.get_task(tid)
    new1 = _box(3, 9, 4, 30)
    res = _edit(task["predictions"][0]["result"], 1, 2, new1)
    res = _edit(res, 2, 3, None)
    ls_client.create_annotation(tid, res + [_verdict(1, "fixed")], lead_time=40.0)
    rep = AnnotationSync(engine).sync_project(ls_client, setup.project_id)
    assert rep.applied == 1 and not rep.invalid
    with engine.connect() as c:
        rows = c.execute(select(Masklet.id, Masklet.object_id, Masklet.source_kind, Masklet.status)
                         .where(Masklet.source_kind == SourceKind.HUMAN)).all()
        assert {(o, s) for _, o, _, s in rows} == {(1, MaskletStatus.CORRECTED), (2, MaskletStatus.CORRECTED)}
        mid = {o: m for m, o, _, _ in rows}
        frames = {(r.masklet_id, r.frame_index): decode_rle({"size": [r.height, r.width], "counts": r.rle_counts}) for r in
                  c.execute(select(FrameMask).where(FrameMask.masklet_id.in_(list(mid.values()))))}
        ev = {r.masklet_id: r for r in c.execute(select(EffortEvent))}
    expect1 = setup.predicted[(0, 1)].copy()
    expect1[2] = new1
    expect2 = setup.predicted[(0, 2)].copy()
    expect2[3] = False
    for t in range(4):
        assert (frames[(mid[1], t)] == expect1[t]).all()
        assert (frames[(mid[2], t)] == expect2[t]).all()
    assert ev[mid[1]].frames_edited == 1 and ev[mid[2]].frames_edited == 1
    assert ev[mid[1]].frames_total == 4 and ev[mid[1]].strokes == 1
    assert ev[mid[1]].seconds + ev[mid[2]].seconds == pytest.approx(40.0)


def test_an_older_version_arriving_first_is_superseded(ls_client, engine, twin_engine):
    setup = make_setup(engine, ls_client, _name("ver"), frames=4, chunk_frames=4, height=H, width=W)
    _clone_seed(engine, twin_engine)
    (key, tid), = setup.task_ids.items()
    task = ls_client.get_task(tid)
    v1 = ls_client.create_annotation(tid, _edit(task["predictions"][0]["result"], 1, 0, _box(1, 5, 1, 5)),
                                     lead_time=5.0)
    v2 = ls_client.update_annotation(v1["id"], _edit(v1["result"], 1, 0, _box(10, 20, 10, 20)),
                                     lead_time=9.0)
    d1 = Delivery(task=task, annotation=v1, project_id=setup.project_id)
    d2 = Delivery(task=task, annotation=v2, project_id=setup.project_id)
    a, b = AnnotationSync(engine), AnnotationSync(twin_engine)
    assert a.apply_one(d1) == "applied" and a.apply_one(d2) == "applied"  # in order: both
    assert b.apply_one(d2) == "applied" and b.apply_one(d1) == "stale"  # reversed: v1 is a no-op
    da, db = dump(engine), dump(twin_engine)
    assert len(da["applied"]) == 2 and len(db["applied"]) == 1  # the ledger keeps what was applied
    da.pop("applied"), db.pop("applied")
    assert da == db  # masks, effort, statuses: the newest version's


def test_invalid_annotations_are_reported_per_task_and_never_half_applied(ls_client, engine):
    setup = make_setup(engine, ls_client, _name("bad"), frames=8, chunk_frames=4, height=H, width=W)
    (k0, t0), (k1, t1) = sorted(setup.task_ids.items())
    good = ls_client.get_task(t0)["predictions"][0]["result"]
    bad = copy.deepcopy(ls_client.get_task(t1)["predictions"][0]["result"])
    bad[0]["value"]["rle"] = mask_to_brush(np.ones((H + 1, W), bool))  # RLE of the wrong size
    bad[1]["value"]["brushlabels"] = ["object_9"]  # unknown label
    bad.append({"type": "rectanglelabels", "from_name": "mask", "to_name": "frames", "value": {}})
    ls_client.create_annotation(t0, good, lead_time=1.0)
    bad_ann = ls_client.create_annotation(t1, bad, lead_time=1.0)
    sync = AnnotationSync(engine)
    rep = sync.sync_project(ls_client, setup.project_id)
    assert rep.applied == 1 and list(rep.invalid) == [t1]
    text = " ".join(rep.invalid[t1])
    assert "bad_size" in text and "unknown_label" in text and "bad_type" in text
    with engine.connect() as c:
        status = dict(c.execute(select(AnnotationTask.idempotency_key, AnnotationTask.status)).all())
        assert status == {k0: TaskStatus.SYNCED, k1: TaskStatus.OPEN}
        applied = c.execute(select(AppliedAnnotation.external_annotation_id)).scalars().all()
        assert applied == [str(ls_client.get_task(t0)["annotations"][0]["id"])]
        # nothing of the bad task: no effort for it, no frames of its chunk in corrected masklets
        bad_task_id = c.scalar(select(AnnotationTask.id).where(AnnotationTask.idempotency_key == k1))
        assert c.scalar(select(func.count()).select_from(EffortEvent)
                        .where(EffortEvent.task_id == bad_task_id)) == 0
        human = select(Masklet.id).where(Masklet.source_kind == SourceKind.HUMAN)
        assert c.scalar(select(func.max(FrameMask.frame_index))
                        .where(FrameMask.masklet_id.in_(human))) == 3
    # a person fixes it in Label Studio: the next sync applies the new version
    ls_client.update_annotation(bad_ann["id"], ls_client.get_task(t1)["predictions"][0]["result"])
    rep = sync.sync_project(ls_client, setup.project_id)
    assert rep.applied == 1 and not rep.invalid and rep.duplicates == 1


def test_task_data_that_disagrees_with_the_database_is_invalid(ls_client, engine):
    setup = make_setup(engine, ls_client, _name("td"), frames=4, chunk_frames=4, height=H, width=W)
    (key, tid), = setup.task_ids.items()
    task = ls_client.get_task(tid)
    ann = ls_client.create_annotation(tid, task["predictions"][0]["result"])
    forged = copy.deepcopy(task)
    forged["data"]["frame_start"], forged["data"]["frame_stop"] = 100, 104
    rep = AnnotationSync(engine).apply([Delivery(task=forged, annotation=ann, project_id=setup.project_id)])
    assert list(rep.invalid) == [tid] and "bad_task_data" in rep.invalid[tid][0]
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(AppliedAnnotation)) == 0


def test_deleted_task_unknown_task_and_cancelled_annotation(ls_client, engine):
    setup = make_setup(engine, ls_client, _name("del"), frames=12, chunk_frames=4, height=H, width=W)
    (k0, t0), (k1, t1), (k2, t2) = sorted(setup.task_ids.items())
    ls_client.create_annotation(t0, ls_client.get_task(t0)["predictions"][0]["result"])
    ls_client.create_annotation(t1, [], was_cancelled=True)  # skipped by the annotator
    ls_client.delete_task(t2)
    sync = AnnotationSync(engine)
    rep = sync.sync_project(ls_client, setup.project_id)
    assert (rep.applied, rep.cancelled, rep.deleted_tasks) == (1, 1, [t2])
    rep2 = sync.sync_project(ls_client, setup.project_id, method="per_task")
    assert rep2.deleted_tasks == [t2] and rep2.duplicates == 2 and rep2.applied == 0
    with engine.connect() as c:
        status = dict(c.execute(select(AnnotationTask.idempotency_key, AnnotationTask.status)).all())
    assert status == {k0: TaskStatus.SYNCED, k1: TaskStatus.SYNCED, k2: TaskStatus.CANCELLED}
    # an annotation of a task this database never recorded is reported, not applied
    other = ls_client.ensure_project(_name("other"), CORRECTION, 2)
    from annotation.labelstudio import build_task_payload
    from tests.annotation.ls_helpers import make_chunk

    (tid,) = ls_client.import_tasks(other.id, [build_task_payload(make_chunk(dataset="other"))])
    ann = ls_client.create_annotation(tid, [])
    rep3 = sync.apply([Delivery(task=ls_client.get_task(tid), annotation=ann, project_id=other.id)])
    assert rep3.unknown_tasks == [tid] and rep3.applied == 0


def test_verification_verdicts_set_masklet_status(ls_client, engine):
    setup = make_setup(engine, ls_client, _name("vf"), frames=8, chunk_frames=4, height=H, width=W,
                       kind=VERIFICATION)
    (k0, t0), (k1, t1) = sorted(setup.task_ids.items())
    for tid, v2 in ((t0, "satisfactory"), (t1, "unsatisfactory")):
        ls_client.create_annotation(tid, [_verdict(1, "satisfactory"), _verdict(2, v2)], lead_time=6.0)
    sync = AnnotationSync(engine)
    rep = sync.sync_project(ls_client, setup.project_id)
    assert rep.applied == 2 and not rep.invalid

    def statuses():
        with engine.connect() as c:
            return dict(c.execute(select(Masklet.object_id, Masklet.status)
                                  .where(Masklet.source_kind == SourceKind.MODEL)).all())

    # object 2 is unsatisfactory on one chunk: back to correction
    assert statuses() == {1: MaskletStatus.VERIFIED, 2: MaskletStatus.IN_REVIEW}
    with engine.connect() as c:
        modes = set(c.execute(select(EffortEvent.mode)).scalars())
        assert c.scalar(select(func.count()).select_from(Masklet)) == 2  # no new masklets
    assert {str(m) for m in modes} == {"review"}
    # the verifier changes their mind: satisfactory everywhere -> verified
    ann = ls_client.get_task(t1)["annotations"][0]
    ls_client.update_annotation(ann["id"], [_verdict(1, "satisfactory"), _verdict(2, "satisfactory")])
    sync.sync_project(ls_client, setup.project_id)
    assert statuses() == {1: MaskletStatus.VERIFIED, 2: MaskletStatus.VERIFIED}
    # a verification annotation without every verdict is invalid
    ls_client.update_annotation(ann["id"], [_verdict(1, "satisfactory")])
    rep = sync.sync_project(ls_client, setup.project_id)
    assert list(rep.invalid) == [t1] and "missing_verdict" in rep.invalid[t1][0]


def test_scripted_marker_is_never_stored_as_human(ls_client, engine):
    setup = make_setup(engine, ls_client, _name("mk"), frames=4, chunk_frames=4, height=H, width=W)
    (key, tid), = setup.task_ids.items()
    res = _edit(ls_client.get_task(tid)["predictions"][0]["result"], 1, 0, _box(0, 4, 0, 4))
    marker = make_marker("test-bot", {1: ObjectEffort(clicks=3, strokes=1, seconds=7.0),
                                      2: ObjectEffort(seconds=1.0)})
    ls_client.create_annotation(tid, res + [marker], lead_time=12.0)
    rep = AnnotationSync(engine).sync_project(ls_client, setup.project_id)
    assert rep.applied == 1
    with engine.connect() as c:
        kinds = set(c.execute(select(Masklet.source_kind)).scalars())
        ev = c.execute(select(EffortEvent.actor_kind, EffortEvent.actor_id, EffortEvent.clicks,
                              EffortEvent.seconds, EffortEvent.mode).order_by(EffortEvent.clicks)).all()
    assert kinds == {SourceKind.MODEL, SourceKind.SCRIPTED_ANNOTATOR}
    assert [(str(a), i, cl, str(m)) for a, i, cl, _, m in ev] == [
        ("scripted_annotator", "scripted_annotator:test-bot", 0, "interactive"),
        ("scripted_annotator", "scripted_annotator:test-bot", 3, "interactive")]
    # stated per-object seconds, plus the shared rest (12 - 8) split evenly
    assert [s for *_, s, _ in ev] == [pytest.approx(3.0), pytest.approx(9.0)]


def test_server_down_fails_with_bounded_retries_and_changes_nothing(engine, ls_client):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = LabelStudioClient(f"http://127.0.0.1:{port}", "ab" * 20, attempts=2, retry_wait_s=0.01)
    setup = make_setup(engine, ls_client, _name("down"), frames=4, chunk_frames=4, height=H, width=W)
    before = dump(engine)
    with pytest.raises(LabelStudioUnavailable, match=r"did not answer .* after 2 attempt"):
        AnnotationSync(engine).sync_project(dead, setup.project_id)
    assert dump(engine) == before


def test_version_keys_sort_by_time_and_fall_back_to_content():
    a = {"id": 1, "updated_at": "2026-01-02T03:04:05.5Z", "result": []}
    b = {"id": 1, "updated_at": "2026-01-02T03:04:05.123456+00:00", "result": []}
    assert version_key(a) == "2026-01-02T03:04:05.500000Z" and version_key(b) < version_key(a)
    assert normalize_timestamp("garbage") is None
    c = {"id": 1, "result": [{"x": 1}]}
    assert version_key(c).startswith("sha256:") and version_key(c) == version_key(json.loads(json.dumps(c)))
