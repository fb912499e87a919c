"""The webhook receiver with the REAL Label Studio server calling it (the fixture's server runs
with SSRF protection off, so it may call a loopback URL), on both databases."""
from __future__ import annotations

import logging
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from annotation.labelstudio.sync import AnnotationSync
from annotation.labelstudio.webhooks import SECRET_HEADER, WebhookReceiver, register_webhook
from storage.schema import AppliedAnnotation, AnnotationTask, TaskStatus
from tests.annotation.sync_helpers import dump, make_setup

pytestmark = pytest.mark.labelstudio

SECRET = "s3cret-" + uuid.uuid4().hex


class RecordingReceiver(WebhookReceiver):
    """The real receiver, keeping the bodies it accepted (to replay them)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.bodies = []

    def handle(self, payload):
        self.bodies.append(payload)
        return super().handle(payload)


def _wait(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def _applied(engine) -> int:
    with engine.connect() as c:
        return c.scalar(select(func.count()).select_from(AppliedAnnotation))


def test_label_studio_calls_the_receiver_and_replays_are_no_ops(ls_client, engine, caplog):
    setup = make_setup(engine, ls_client, f"wh{uuid.uuid4().hex[:8]}", frames=8, chunk_frames=4,
                       height=32, width=48)
    (k0, t0), (k1, t1) = sorted(setup.task_ids.items())
    with RecordingReceiver(AnnotationSync(engine), SECRET) as rx:
        hook_id = register_webhook(ls_client, setup.project_id, rx.url, SECRET)
        assert register_webhook(ls_client, setup.project_id, rx.url, SECRET) == hook_id  # idempotent
        ann = ls_client.create_annotation(t0, ls_client.get_task(t0)["predictions"][0]["result"],
                                          lead_time=3.0)
        assert _wait(lambda: _applied(engine) == 1), rx.stats
        ls_client.update_annotation(ann["id"], ann["result"][1:], lead_time=4.0)  # ANNOTATION_UPDATED
        assert _wait(lambda: _applied(engine) == 2), rx.stats
        assert [b["action"] for b in rx.bodies] == ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
        assert rx.stats["rejected"] == 0 and rx.stats["errors"] == 0
        after_hooks = dump(engine)
        # replayed webhooks (same bodies, any order): no-ops, through HTTP like Label Studio sends them
        for body in reversed(rx.bodies * 2):
            r = httpx.post(rx.url, json=body, headers={SECRET_HEADER: SECRET})
            assert r.status_code == 200 and r.json()["applied"] == 0
        # and the poll finds nothing new
        rep = AnnotationSync(engine).sync_project(ls_client, setup.project_id)
        assert rep.applied == 0 and rep.duplicates == 1
        assert dump(engine) == after_hooks

        # Label Studio configured with a wrong secret: rejected (401), logged without the secret;
        # the annotation still arrives through the poll
        wrong = "not-the-" + SECRET
        register_webhook(ls_client, setup.project_id, rx.url, wrong)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="annotation.labelstudio.webhooks"):
            ls_client.create_annotation(t1, ls_client.get_task(t1)["predictions"][0]["result"])
            assert _wait(lambda: rx.stats["rejected"] == 1), rx.stats
        assert "rejected" in caplog.text and wrong not in caplog.text and SECRET not in caplog.text
        assert _applied(engine) == 2
        rep = AnnotationSync(engine).sync_project(ls_client, setup.project_id)
        assert rep.applied == 1
    with engine.connect() as c:
        assert set(c.execute(select(AnnotationTask.status)).scalars()) == {TaskStatus.SYNCED}


def test_receiver_rejects_bad_secrets_and_bad_bodies(engine):
    with WebhookReceiver(AnnotationSync(engine), SECRET) as rx:
        body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "task": {"id": 1}}
        assert httpx.post(rx.url, json=body).status_code == 401  # no header
        assert httpx.post(rx.url, json=body, headers={SECRET_HEADER: SECRET[:-1]}).status_code == 401
        assert httpx.post(rx.url, json=body, headers={SECRET_HEADER: SECRET + "x"}).status_code == 401
        ok = {SECRET_HEADER: SECRET}
        assert httpx.post(rx.url, content=b"{not json", headers=ok).status_code == 400
        r = httpx.post(rx.url, json={"action": "ANNOTATION_CREATED"}, headers=ok)
        assert r.status_code == 400 and "payload" in r.json()["error"]
        r = httpx.post(rx.url, json={"action": "PROJECT_UPDATED", "project": {"id": 1}}, headers=ok)
        assert r.status_code == 200 and r.json()["ignored"] is True
        # an annotation of a task this database does not know: reported, nothing applied
        r = httpx.post(rx.url, json={**body, "annotation": {"id": 5, "task": 777, "result": []},
                                     "task": {"id": 777, "data": {}}}, headers=ok)
        assert r.status_code == 200 and r.json()["unknown_tasks"] == [777]
        assert httpx.post(rx.url.replace("/webhook", "/other"), json=body, headers=ok).status_code == 404
        assert httpx.get(rx.url + "/health").json() == {"status": "ok"}
        assert rx.stats["rejected"] == 3 and rx.stats["bad_request"] == 2
    assert _applied(engine) == 0
