"""A small webhook receiver for Label Studio (stdlib ``http.server``, no extra dependency).

Label Studio POSTs ``{"action": ..., "annotation": {...}, "task": {...}, "project": {...}}`` to the
receiver when an annotation is created or updated (``ANNOTATIONS_CREATED`` carries lists). Every
request must carry the shared secret in the ``X-Dataengine-Webhook-Secret`` header (compared in
constant time); a wrong or missing secret gets 401 and a log line that names the client and the
header, never the secret. Annotation payloads go through ``AnnotationSync.apply``: the same
exactly-once path as the bulk pull, so a replayed or late webhook is a no-op and a webhook that
overtakes the poll (or the other way round) changes nothing.

Webhooks are a latency optimisation, never the only path: without Redis, Label Studio sends them
inside the annotator's request with a 1 s timeout and does not retry, so the periodic bulk sync
(``AnnotationSync.sync_project``) remains the source of truth. Deleted annotations
(``ANNOTATIONS_DELETED``) are acknowledged and ignored: applied work is kept.

Label Studio must be allowed to call a loopback URL (``SSRF_PROTECTION_ENABLED=false``; the
project's ``infra/labelstudio/start.sh`` sets it for its local server).
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from annotation.labelstudio.client import LabelStudioClient
from annotation.labelstudio.http_json import JsonHandler, LoopbackServer
from annotation.labelstudio.sync import AnnotationSync, Delivery, SyncReport

__all__ = [
    "ANNOTATION_ACTIONS",
    "SECRET_HEADER",
    "WebhookReceiver",
    "deliveries_from_payload",
    "register_webhook",
]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Dataengine-Webhook-Secret"
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
MAX_BODY_BYTES = 300 * 2**20  # Label Studio's own request cap is 250 MB


class PayloadError(ValueError):
    """A webhook body that is not a Label Studio annotation payload."""


def _project_id(payload: Mapping) -> int | None:
    p = payload.get("project")
    if isinstance(p, Mapping):
        p = p.get("id")
    return p if isinstance(p, int) and not isinstance(p, bool) else None


def deliveries_from_payload(payload: Any) -> list[Delivery]:
    """The annotation versions in a webhook body (empty for actions that carry none)."""
    if not isinstance(payload, Mapping):
        raise PayloadError("webhook body is not a JSON object")
    action = payload.get("action")
    if action not in ANNOTATION_ACTIONS:
        return []
    anns, tasks = payload.get("annotation"), payload.get("task")
    if isinstance(anns, Mapping):
        anns = [anns]
    if isinstance(tasks, Mapping):
        tasks = [tasks]
    if not isinstance(anns, list) or not isinstance(tasks, list):
        raise PayloadError(f"{action} payload without annotation and task objects "
                           "(is 'send payload' off?)")
    by_id = {t.get("id"): t for t in tasks if isinstance(t, Mapping)}
    project = _project_id(payload)
    out = []
    for a in anns:
        if not isinstance(a, Mapping) or "id" not in a:
            raise PayloadError(f"{action} payload has an annotation without an id")
        tid = a.get("task")
        tid = tid.get("id") if isinstance(tid, Mapping) else tid
        task = by_id.get(tid) or (tasks[0] if len(tasks) == 1 else None)
        if task is None or "id" not in task:
            raise PayloadError(f"{action} payload: no task for annotation {a.get('id')}")
        pid = project if project is not None else _project_id({"project": a.get("project")})
        out.append(Delivery(task=task, annotation=a, project_id=pid, source="webhook"))
    return out


class WebhookReceiver(LoopbackServer):
    """Serves ``POST <path>`` on ``host:port`` (port 0: a free one) in a background thread.

    ``handle(payload)`` is the same logic without HTTP. ``stats`` counts requests by outcome."""

    def __init__(self, sync: AnnotationSync, secret: str, *, host: str = "127.0.0.1",
                 port: int = 0, path: str = "/webhook") -> None:
        if not secret:
            raise ValueError("a webhook receiver needs a non-empty shared secret")
        self.sync = sync
        self._secret = secret.encode()
        self.path = path
        self.stats = {"accepted": 0, "rejected": 0, "bad_request": 0, "errors": 0, "ignored": 0}
        self.report = SyncReport()
        self._lock = threading.Lock()
        receiver = self

        class Handler(JsonHandler):
            server_version = "dataengine-webhooks/1"

            def do_GET(self):
                if self.path.rstrip("/") in ("/health", receiver.path.rstrip("/") + "/health"):
                    self._reply(200, {"status": "ok"})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self):
                if self.path.split("?", 1)[0].rstrip("/") != receiver.path.rstrip("/"):
                    self._reply(404, {"error": "not found"})
                    return
                given = self.headers.get(SECRET_HEADER, "").encode()
                if not hmac.compare_digest(given, receiver._secret):
                    receiver._count("rejected")
                    log.warning("webhook from %s rejected: %s header %s", self.client_address[0],
                                SECRET_HEADER, "wrong" if given else "missing")
                    self._reply(401, {"error": "unauthorized"})
                    return
                try:
                    n = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    n = -1
                if not 0 <= n <= MAX_BODY_BYTES:
                    receiver._count("bad_request")
                    self._reply(413 if n > MAX_BODY_BYTES else 400, {"error": "bad content length"})
                    return
                try:
                    payload = json.loads(self.rfile.read(n) or b"null")
                    body = receiver.handle(payload)
                except (ValueError, PayloadError) as exc:
                    receiver._count("bad_request")
                    log.warning("webhook from %s: bad payload: %s", self.client_address[0], exc)
                    self._reply(400, {"error": str(exc)[:500]})
                    return
                except Exception as exc:  # the database is down, ...: the poll will catch up
                    receiver._count("errors")
                    log.exception("webhook from %s could not be applied", self.client_address[0])
                    self._reply(500, {"error": type(exc).__name__})
                    return
                self._reply(200, body)

        self._bind(host, port, Handler)

    thread_name = "labelstudio-webhooks"

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def handle(self, payload: Any) -> dict:
        """Apply one webhook body; returns what was done (JSON-ready)."""
        deliveries = deliveries_from_payload(payload)
        if not deliveries:
            self._count("ignored")
            return {"action": payload.get("action"), "ignored": True}
        rep = self.sync.apply(deliveries)
        with self._lock:
            self.stats["accepted"] += 1
            self.report.merge(rep)
        return {"action": payload.get("action"), **rep.as_dict()}



def register_webhook(client: LabelStudioClient, project_id: int, url: str, secret: str) -> int:
    """Create (or update) the project's webhook to ``url`` carrying the shared secret header."""
    return client.ensure_webhook(project_id, url, {SECRET_HEADER: secret},
                                 actions=ANNOTATION_ACTIONS)
