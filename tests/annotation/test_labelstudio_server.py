"""The Label Studio adapter against the REAL server (session fixture ``labelstudio``)."""
from __future__ import annotations

import socket
import subprocess
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from annotation.labelstudio import (
    CORRECTION,
    VERIFICATION,
    AnnotationInvalid,
    LabelStudioApiError,
    LabelStudioClient,
    LabelStudioUnavailable,
    build_task_payload,
    frames_changed,
    import_chunk_tasks,
    validate_annotation,
    write_frames,
)
from annotation.labelstudio.server import DEFAULT_SCRIPTS_DIR
from storage.masks import mask_to_brush
from tests.annotation.ls_helpers import make_chunk, stack

pytestmark = pytest.mark.labelstudio


def _db_objects(engine, n_videos=1):
    from storage.db import session_scope
    from storage.schema import AnnotationRound, Dataset, Video

    with session_scope(engine) as s:
        ds = Dataset(name="ds")
        s.add(ds)
        s.flush()
        vids = [Video(dataset_id=ds.id, uri=f"file:///v{i}.mp4", sha256=f"{i:064x}", fps=24.0,
                      frame_count=64, width=64, height=48, size_bytes=1) for i in range(n_videos)]
        rnd = AnnotationRound(dataset_id=ds.id, number=1)
        s.add_all([*vids, rnd])
        s.flush()
        return [v.id for v in vids], rnd.id


def test_server_scripts_keep_secrets_out_of_logs_and_refuse_a_busy_port(labelstudio, tmp_path):
    log = labelstudio.log_file.read_text()
    assert labelstudio.token not in log and labelstudio.password not in log
    port = int(labelstudio.url.rsplit(":", 1)[1])
    r = subprocess.run(["bash", str(DEFAULT_SCRIPTS_DIR / "start.sh"), "--port", str(port),
                        "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LS_USERNAME": "x@y.z",
                            "LS_PASSWORD": "pw-not-used", "LS_TOKEN": "ab" * 20}, timeout=60)
    assert r.returncode != 0 and "already in use" in r.stderr
    r = subprocess.run(["bash", str(DEFAULT_SCRIPTS_DIR / "status.sh"), "--data-dir",
                        str(labelstudio.data_dir), "--port", str(port)], capture_output=True, text=True)
    assert r.returncode == 0 and "healthy" in r.stdout


def test_projects_are_found_or_created_by_title(ls_client):
    a = ls_client.ensure_project("titles", CORRECTION, 2)
    b = ls_client.ensure_project("titles", CORRECTION, 2)
    v = ls_client.ensure_project("titles", VERIFICATION, 2)
    assert a.id == b.id != v.id and a.title == "titles / correction"
    wider = ls_client.ensure_project("titles", CORRECTION, 4)
    assert wider.id == a.id and wider.n_slots == 4
    assert ls_client.ensure_project("titles", CORRECTION, 1).n_slots == 4  # never narrowed


def test_chunk_tasks_round_trip_pixel_exact_with_frames_served(labelstudio, ls_client, sqlite_url):
    from storage.db import make_engine
    from storage.schema import AnnotationTask, TaskStatus

    engine = make_engine(sqlite_url)
    (video_id,), round_id = _db_objects(engine)
    project = ls_client.ensure_project("rt", CORRECTION, 2)
    ls_client.ensure_local_storage(project.id, labelstudio.media_root / "rt")
    frames = np.random.default_rng(1).integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
    urls = write_frames(frames, labelstudio.media_root, "rt/vid")
    chunks = [make_chunk(dataset="rt", chunk_index=c, n_frames=4, urls=urls[4 * c:4 * c + 4],
                         video_id=video_id, round_id=round_id, seed=c) for c in (0, 1)]
    rep = import_chunk_tasks(ls_client, project.id, chunks, engine=engine)
    assert len(rep.created) == 2 and not rep.failed and rep.requests == 1
    # idempotent: a re-run creates nothing, in Label Studio or in the database
    again = import_chunk_tasks(ls_client, project.id, chunks, engine=engine)
    assert not again.created and again.existing == rep.created and again.requests == 0
    assert len(ls_client.task_keys(project.id)) == 2
    with engine.connect() as c:
        rows = c.execute(select(AnnotationTask.idempotency_key, AnnotationTask.external_task_id,
                                AnnotationTask.status)).all()
    assert {(k, int(t), s) for k, t, s in rows} == {(k, t, TaskStatus.OPEN) for k, t in rep.created.items()}

    task_id = rep.created[chunks[1].key]
    task = ls_client.get_task(task_id)
    assert task["data"]["frame_start"] == 4
    pred = task["predictions"][0]
    assert pred["model_version"] == "sam2-test-1" and pred["score"] == pytest.approx(0.75)
    # the frame behind the URL is the frame we wrote
    r = httpx.get(labelstudio.url + task["data"]["frames"][2],
                  headers={"Authorization": f"Token {labelstudio.token}"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"

    # an annotator fixes object 2 on frame 3 and confirms object 1
    fixed = np.zeros((48, 64), bool)
    fixed[10:30, 20:40] = True
    result = [dict(r) for r in pred["result"]]
    for r_ in result:
        if r_["item_index"] == 3 and r_["value"]["brushlabels"] == ["object_2"]:
            r_["value"] = {**r_["value"], "rle": mask_to_brush(fixed)}
    result.append({"type": "choices", "from_name": "verdict_object_1", "to_name": "frames",
                   "value": {"choices": ["fixed"]}})
    ann = ls_client.create_annotation(task_id, result, lead_time=42.0)
    task = ls_client.get_task(task_id)
    v = validate_annotation(task, task["annotations"][0])
    assert v.annotation_id == ann["id"] and v.lead_time == pytest.approx(42.0)
    assert (v.masks[1] == stack(chunks[1].predicted, 1, 4)).all()
    expect2 = stack(chunks[1].predicted, 2, 4)
    expect2[3] = fixed
    assert (v.masks[2] == expect2).all()
    assert v.verdicts == {1: "fixed"}
    assert frames_changed(v, {s: stack(chunks[1].predicted, s, 4) for s in (1, 2)}) == {1: 0, 2: 1}
    # the snapshot export (bulk read path) returns the same annotation
    snap = ls_client.export_snapshot(project.id)
    assert [t["id"] for t in snap] == [task_id]
    assert snap[0]["annotations"][0]["result"] == task["annotations"][0]["result"]


def test_crash_between_import_and_commit_is_adopted_not_duplicated(ls_client, sqlite_url):
    from storage.db import make_engine, session_scope
    from storage.schema import AnnotationTask

    engine = make_engine(sqlite_url)
    (video_id,), round_id = _db_objects(engine)
    project = ls_client.ensure_project("crash", CORRECTION, 2)
    chunks = [make_chunk(dataset="crash", chunk_index=c, video_id=video_id, round_id=round_id)
              for c in range(3)]
    # an earlier run reserved rows and imported chunk 0 and 1 but died before recording the ids
    with session_scope(engine) as s:
        for c in chunks:
            s.add(AnnotationTask(idempotency_key=c.key, tool="labelstudio", project_id=str(project.id),
                                 kind=c.kind, video_id=video_id, round_id=round_id,
                                 frame_start=c.frame_start, frame_stop=c.frame_stop))
    early = ls_client.import_tasks(project.id, [build_task_payload(c) for c in chunks[:2]])
    rep = import_chunk_tasks(ls_client, project.id, chunks, engine=engine)
    assert rep.existing == dict(zip([c.key for c in chunks[:2]], early))
    assert list(rep.created) == [chunks[2].key]
    assert len(ls_client.task_keys(project.id)) == 3
    with engine.connect() as c:
        assert c.scalar(select(func.count()).where(AnnotationTask.external_task_id.is_(None))) == 0


def test_import_without_database_is_idempotent_by_key(ls_client):
    project = ls_client.ensure_project("nodb", CORRECTION, 2)
    chunks = [make_chunk(dataset="nodb", chunk_index=c) for c in range(5)]
    first = import_chunk_tasks(ls_client, project.id, chunks[:3], batch_size=2)
    assert len(first.created) == 3 and first.requests == 2
    second = import_chunk_tasks(ls_client, project.id, chunks, batch_size=2)
    assert second.existing == first.created and len(second.created) == 2
    assert len(ls_client.task_keys(project.id)) == 5


@pytest.mark.badinput
def test_a_refused_batch_is_marked_failed_and_the_other_batches_go_in(ls_client, sqlite_url,
                                                                      monkeypatch):
    from annotation.labelstudio import importer
    from storage.db import make_engine
    from storage.schema import AnnotationTask, TaskStatus

    engine = make_engine(sqlite_url)
    (video_id,), round_id = _db_objects(engine)
    project = ls_client.ensure_project("refused", CORRECTION, 2)
    chunks = [make_chunk(dataset="refused", chunk_index=c, video_id=video_id, round_id=round_id)
              for c in range(6)]
    bad = chunks[3].key
    real = importer.build_task_payload

    def broken(task, **kw):  # Label Studio validates little, but refuses this (HTTP 400)
        p = real(task, **kw)
        if task.key == bad:
            p["predictions"] = "not a list"
        return p

    monkeypatch.setattr(importer, "build_task_payload", broken)
    rep = import_chunk_tasks(ls_client, project.id, chunks, engine=engine, batch_size=2)
    assert rep.requests == 3 and set(rep.failed) == {chunks[2].key, bad}
    assert "HTTP 400" in rep.failed[bad]
    assert sorted(rep.created) == sorted(c.key for c in chunks if c.key not in rep.failed)
    with engine.connect() as c:
        status = dict(c.execute(select(AnnotationTask.idempotency_key, AnnotationTask.status)).all())
    assert {k for k, v in status.items() if v == TaskStatus.FAILED} == set(rep.failed)
    # fixed, a re-run imports exactly the two that failed
    monkeypatch.setattr(importer, "build_task_payload", real)
    again = import_chunk_tasks(ls_client, project.id, chunks, engine=engine, batch_size=2)
    assert set(again.created) == set(rep.failed) and len(again.existing) == 4
    assert len(ls_client.task_keys(project.id)) == 6


@pytest.mark.badinput
def test_a_bad_mask_stops_the_import_after_the_batch_in_flight_is_recorded(ls_client, sqlite_url):
    from storage.db import make_engine
    from storage.masks import MaskSizeError
    from storage.schema import AnnotationTask, TaskStatus

    engine = make_engine(sqlite_url)
    (video_id,), round_id = _db_objects(engine)
    project = ls_client.ensure_project("badmask", CORRECTION, 2)
    chunks = [make_chunk(dataset="badmask", chunk_index=c, video_id=video_id, round_id=round_id)
              for c in range(5)]
    good = chunks[3].predicted[(1, 0)]
    chunks[3].predicted[(1, 0)] = np.zeros((10, 10), bool)  # not the 48x64 frame
    with pytest.raises(MaskSizeError):
        import_chunk_tasks(ls_client, project.id, chunks, engine=engine, batch_size=2)
    # the first batch went in (and was recorded) while the second was being encoded
    with engine.connect() as c:
        status = dict(c.execute(select(AnnotationTask.idempotency_key, AnnotationTask.status)).all())
    assert [status[c.key] for c in chunks] == [TaskStatus.OPEN] * 2 + [TaskStatus.PENDING] * 3
    assert len(ls_client.task_keys(project.id)) == 2
    chunks[3].predicted[(1, 0)] = good
    rep = import_chunk_tasks(ls_client, project.id, chunks, engine=engine, batch_size=2)
    assert len(rep.existing) == 2 and len(rep.created) == 3
    assert len(ls_client.task_keys(project.id)) == 5


@pytest.mark.badinput
def test_invalid_annotation_and_deleted_task(ls_client):
    project = ls_client.ensure_project("bad", CORRECTION, 2)
    chunk = make_chunk(dataset="bad")
    task_id = import_chunk_tasks(ls_client, project.id, [chunk]).created[chunk.key]
    # Label Studio accepts anything in a result; we do not
    pred = ls_client.get_task(task_id)["predictions"][0]["result"]
    bad = [dict(pred[0], item_index=999), dict(pred[1], value={**pred[1]["value"], "brushlabels": ["zebra"]})]
    ls_client.create_annotation(task_id, bad)
    task = ls_client.get_task(task_id)
    with pytest.raises(AnnotationInvalid) as ei:
        validate_annotation(task, task["annotations"][0])
    assert {i.code for i in ei.value.issues} == {"bad_frame", "unknown_label"}
    ls_client.delete_task(task_id)
    with pytest.raises(LabelStudioApiError) as ei:
        ls_client.get_task(task_id)
    assert ei.value.status == 404


@pytest.mark.badinput
def test_server_down_gives_bounded_retries_then_a_clear_error(labelstudio):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = LabelStudioClient(f"http://127.0.0.1:{port}", labelstudio.token, attempts=3,
                             retry_wait_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(LabelStudioUnavailable) as ei:
        down.ensure_project("x", CORRECTION, 1)
    assert time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg and "3 attempt" in msg and labelstudio.token not in msg
    with pytest.raises(LabelStudioUnavailable, match="did not answer"):
        import_chunk_tasks(down, 1, [make_chunk()], attempts=2, retry_wait_s=0.01)


class _LostAnswer(LabelStudioClient):
    """The real server applies the first import, but its answer is "lost" (as on a timeout)."""

    lost = 0

    def import_tasks(self, project_id, tasks, *, attempts=None):
        ids = super().import_tasks(project_id, tasks, attempts=attempts)
        if self.lost == 0:
            self.lost += 1
            raise LabelStudioUnavailable("simulated: answer lost after the server created the tasks")
        return ids


@pytest.mark.badinput
def test_a_lost_import_answer_is_adopted_on_retry_not_duplicated(labelstudio):
    client = _LostAnswer(labelstudio.url, labelstudio.token)
    project = client.ensure_project("lost", CORRECTION, 2)
    chunks = [make_chunk(dataset="lost", chunk_index=c) for c in range(4)]
    rep = import_chunk_tasks(client, project.id, chunks, batch_size=2, retry_wait_s=0.01)
    assert client.lost == 1 and rep.retries == 1
    assert len(rep.existing) == 2 and len(rep.created) == 2 and not rep.failed
    assert len(client.task_keys(project.id)) == 4


@pytest.mark.badinput
def test_wrong_token_is_refused_clearly(labelstudio):
    wrong = LabelStudioClient(labelstudio.url, "0" * 40, attempts=2, retry_wait_s=0.01)
    with pytest.raises(LabelStudioApiError) as ei:
        wrong.whoami()
    assert ei.value.status == 401 and "0" * 40 not in str(ei.value)
