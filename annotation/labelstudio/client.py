"""The one module that talks to Label Studio, through ``label-studio-sdk`` (2.1.2).

``LabelStudioClient(url, token)`` wraps the SDK with what the engine needs: projects found or
created by title (one per dataset and round kind), local-files storages, bulk task import, task
and annotation reads, snapshot exports. Every call has bounded retries (tenacity) on transient
failures (connection refused or reset, timeouts, HTTP 5xx/429); when they run out the caller gets
``LabelStudioUnavailable`` naming the server and the last error. Other HTTP errors surface as
``LabelStudioApiError`` with the status and body. The token is never put in a message.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from annotation.labelstudio.label_config import KINDS, build_label_config, config_slots

__all__ = [
    "LabelStudioApiError",
    "LabelStudioClient",
    "LabelStudioError",
    "LabelStudioUnavailable",
    "ProjectRef",
    "encode_task",
    "is_transient",
    "project_title",
]

T = TypeVar("T")


class LabelStudioError(RuntimeError):
    """Base class of the adapter's errors."""


class LabelStudioUnavailable(LabelStudioError):
    """The server did not answer (or kept failing with 5xx) within the bounded retries."""


class LabelStudioApiError(LabelStudioError):
    """The server answered with an error that retrying will not fix (4xx)."""

    def __init__(self, what: str, status: int | None, body: Any):
        self.status = status
        self.body = body
        super().__init__(f"Label Studio refused {what}: HTTP {status}: {_short(body)}")


def _short(body: Any, limit: int = 500) -> str:
    s = body if isinstance(body, str) else json.dumps(body, default=str)
    return s if len(s) <= limit else s[:limit] + "..."


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):  # numpy ints/floats that slipped into a payload
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_task(payload: dict) -> bytes:
    """One import payload as compact UTF-8 JSON (what ``import_tasks`` sends), encoded like httpx
    encodes a ``json=`` body (so NaN is refused, as it was through the SDK)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=_json_default).encode("utf-8")


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the request never got an answer, or the server said 'later' (5xx/429)."""
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, ApiError):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429
    return False


def project_title(dataset: str, kind: str) -> str:
    """The title that identifies the project of a dataset and round kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown round kind {kind!r}; expected one of {KINDS}")
    return f"{dataset} / {kind}"


@dataclass(frozen=True)
class ProjectRef:
    id: int
    title: str
    kind: str
    n_slots: int


class LabelStudioClient:
    """A Label Studio server at ``url`` authenticated by a legacy API token (or a personal access
    token, which the SDK exchanges itself)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 300.0,
        attempts: int = 4,
        retry_wait_s: float = 0.5,
        retry_wait_max_s: float = 8.0,
    ) -> None:
        if not url or not token:
            raise ValueError("LabelStudioClient needs a url and a token")
        self.url = url.rstrip("/")
        self.attempts = max(1, int(attempts))
        self._retry_wait_s = retry_wait_s
        self._retry_wait_max_s = retry_wait_max_s
        # The SDK's own retries are off: ours are bounded, logged in the error, and know which
        # calls are safe to repeat.
        self._sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout_s, max_retries=0)

    def __repr__(self) -> str:  # never show the token
        return f"LabelStudioClient({self.url!r})"

    @property
    def sdk(self) -> LabelStudio:
        """The underlying SDK client (for this package's modules only)."""
        return self._sdk

    # --- retries ---------------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args: Any, attempts: int | None = None,
             **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with bounded retries on transient errors; errors translated."""
        n = self.attempts if attempts is None else max(1, attempts)
        retrying = Retrying(
            stop=stop_after_attempt(n),
            wait=wait_exponential(multiplier=self._retry_wait_s, max=self._retry_wait_max_s),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except RetryError as exc:  # pragma: no cover - reraise=True makes this unreachable
            raise LabelStudioUnavailable(f"{what}: {exc}") from exc
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} did not answer {what} after {n} attempt(s): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except ApiError as exc:
            if is_transient(exc):
                raise LabelStudioUnavailable(
                    f"Label Studio at {self.url} kept failing {what} after {n} attempt(s): "
                    f"HTTP {exc.status_code}: {_short(exc.body)}"
                ) from exc
            raise LabelStudioApiError(what, exc.status_code, exc.body) from exc

    def _raw(self, method: str, path: str, what: str, *, attempts: int | None = None,
             **kwargs: Any) -> httpx.Response:
        """A request through the SDK's own httpx client (auth, base URL, timeout), for the few
        endpoints the SDK has no call for (or whose SDK call is too slow, see ``import_tasks``).
        Raises like ``call``."""
        http = self._sdk._client_wrapper.httpx_client

        def go() -> httpx.Response:
            r = http.request(path, method=method, **kwargs)
            if r.status_code >= 400:
                try:
                    body = r.json()
                except ValueError:
                    body = r.text
                raise ApiError(status_code=r.status_code, body=body)
            return r

        return self.call(what, go, attempts=attempts)

    # --- server ----------------------------------------------------------------------------------
    def version(self) -> dict:
        r = self.call("GET /api/version", self._sdk.versions.with_raw_response.get)
        return r.response.json()

    def whoami(self) -> dict:
        return self._raw("GET", "api/current-user/whoami", "GET whoami").json()

    # --- projects --------------------------------------------------------------------------------
    def find_project(self, title: str) -> dict | None:
        """The project with exactly this title (the lowest id if several), or None."""
        found = [p for p in self._list_projects(title) if p.get("title") == title]
        return min(found, key=lambda p: p["id"]) if found else None

    def _list_projects(self, title: str) -> list[dict]:
        out: list[dict] = []
        page = 1
        while True:
            r = self._raw("GET", "api/projects", "GET projects",
                          params={"title": title, "page": page, "page_size": 100})
            body = r.json()
            results = body.get("results", body) if isinstance(body, dict) else body
            out.extend(results)
            if not isinstance(body, dict) or not body.get("next"):
                return out
            page += 1

    def get_project(self, project_id: int) -> dict:
        return self.call(f"GET project {project_id}",
                         self._sdk.projects.with_raw_response.get, project_id).response.json()

    def ensure_project(self, dataset: str, kind: str, n_slots: int, *,
                       description: str | None = None) -> ProjectRef:
        """Find (by title) or create the project of ``dataset`` and round ``kind`` with a labeling
        config of at least ``n_slots`` object slots; a config with fewer slots is widened (never
        narrowed: existing tasks may use the slots). Idempotent."""
        title = project_title(dataset, kind)
        p = self.find_project(title)
        if p is None:
            cfg = build_label_config(kind, n_slots)
            created = self.call(
                f"create project {title!r}", self._sdk.projects.with_raw_response.create,
                title=title, label_config=cfg,
                description=description or f"dataengine {kind} tasks of dataset {dataset}",
                show_collab_predictions=True,
            ).response.json()
            # Two writers may race on the title: the lowest id wins, the other is removed.
            winner = self.find_project(title) or created
            if winner["id"] != created["id"]:
                self.call(f"delete duplicate project {created['id']}",
                          self._sdk.projects.delete, created["id"])
            return ProjectRef(winner["id"], title, kind, config_slots(winner.get("label_config", cfg)))
        have = config_slots(p.get("label_config") or self.get_project(p["id"]).get("label_config", ""))
        if have < n_slots:
            self.call(f"widen project {p['id']} config", self._sdk.projects.update, p["id"],
                      label_config=build_label_config(kind, n_slots))
            have = n_slots
        return ProjectRef(p["id"], title, kind, have)

    def delete_project(self, project_id: int) -> None:
        self.call(f"delete project {project_id}", self._sdk.projects.delete, project_id)

    # --- local files -----------------------------------------------------------------------------
    def ensure_local_storage(self, project_id: int, path: str | Path, *, title: str | None = None,
                             create_dir: bool = True) -> int:
        """Find or create the project's local-files import storage for ``path`` (an absolute path
        that must be a SUBFOLDER of the server's LOCAL_FILES_DOCUMENT_ROOT; the root itself is
        refused by Label Studio). It serves ``/data/local-files/?d=<path under the root>``; no
        tasks are synced from it (tasks are imported with their frame URLs). ``create_dir``: make
        the folder first (when the server shares this machine's disk; it must exist)."""
        path = str(Path(path).resolve())
        if create_dir:
            Path(path).mkdir(parents=True, exist_ok=True)
        existing = self.call(f"list storages of project {project_id}",
                             self._sdk.import_storage.local.with_raw_response.list,
                             project=project_id).response.json()
        for s in existing:
            if s.get("path") == path:
                return s["id"]
        created = self.call(
            f"create local storage {path}", self._sdk.import_storage.local.with_raw_response.create,
            project=project_id, path=path, title=title or f"frames {Path(path).name}",
            use_blob_urls=True, regex_filter=r"^$",
        ).response.json()
        return created["id"]

    # --- tasks -----------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: Sequence[dict | bytes], *,
                     attempts: int | None = None) -> list[int]:
        """One bulk import request (``POST /api/projects/{id}/import?return_task_ids=true``) for
        tasks with their predictions; returns the new task ids in the order of ``tasks``. Each
        task is a payload dict or the same payload already encoded (``encode_task``: the importer
        encodes the next batch while this one is on the server). NOT idempotent on its own: a
        retry after a lost answer could duplicate, so by default it is tried once; the importer
        (``annotation.labelstudio.importer``) checks idempotency keys before any retry.

        The body is posted as JSON we encoded ourselves instead of through
        ``sdk.projects.import_tasks``: the SDK first walks every value of the request with its
        pure-Python ``jsonable_encoder`` (every int of every brush RLE), which cost ~0.75 ms per
        single-frame task, more than the rest of the client's work together."""
        parts = [t if isinstance(t, bytes) else encode_task(t) for t in tasks]
        r = self._raw(
            "POST", f"api/projects/{int(project_id)}/import",
            f"import {len(parts)} tasks into project {project_id}",
            params={"return_task_ids": "true"}, content=b"[" + b",".join(parts) + b"]",
            headers={"content-type": "application/json"},
            attempts=1 if attempts is None else attempts,
        )
        try:
            body = r.json()
        except ValueError:
            body = None
        ids = body.get("task_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) != len(parts):
            got = len(ids) if isinstance(ids, list) else "no"
            raise LabelStudioError(
                f"Label Studio created {got} task ids for {len(parts)} imported tasks "
                f"in project {project_id}"
            )
        return [int(i) for i in ids]

    def iter_tasks(self, project_id: int, *, include: str | None = "id,data",
                   page_size: int = 1000, fields: str | None = None) -> Iterator[dict]:
        """Every task of a project as plain dicts, page by page (``GET /api/tasks``)."""
        page = 1
        while True:
            params: dict[str, Any] = {"project": project_id, "page": page, "page_size": page_size}
            if include:
                params["include"] = include
            if fields:
                params["fields"] = fields
            try:
                r = self._raw("GET", "api/tasks", f"GET tasks page {page}", params=params)
            except LabelStudioApiError as exc:
                if exc.status == 404 and page > 1:  # past the last page
                    return
                raise
            body = r.json()
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            total = body.get("total") if isinstance(body, dict) else None
            if len(tasks) < page_size or (total is not None and page * page_size >= total):
                return
            page += 1

    def task_keys(self, project_id: int, key_field: str = "idempotency_key") -> dict[str, int]:
        """{data[key_field]: task id} over the project's tasks (the lowest id wins)."""
        out: dict[str, int] = {}
        for t in self.iter_tasks(project_id, include="id,data"):
            k = (t.get("data") or {}).get(key_field)
            if k is not None and (k not in out or t["id"] < out[k]):
                out[k] = t["id"]
        return out

    def get_task(self, task_id: int) -> dict:
        """The task with its annotations and predictions, exactly as the server sends it."""
        return self.call(f"GET task {task_id}", self._sdk.tasks.with_raw_response.get,
                         str(task_id)).response.json()

    def delete_task(self, task_id: int) -> None:
        self.call(f"delete task {task_id}", self._sdk.tasks.delete, str(task_id))

    # --- annotations -----------------------------------------------------------------------------
    def create_annotation(self, task_id: int, result: list[dict], *, lead_time: float | None = None,
                          was_cancelled: bool = False) -> dict:
        """Submit an annotation (what the UI does on Submit). Not retried: a lost answer could
        leave two annotations; callers that need exactly-once read the task back first."""
        kwargs: dict[str, Any] = {"result": result, "was_cancelled": was_cancelled}
        if lead_time is not None:
            kwargs["lead_time"] = float(lead_time)
        return self.call(f"create annotation on task {task_id}",
                         self._sdk.annotations.with_raw_response.create, task_id,
                         attempts=1, **kwargs).response.json()

    def update_annotation(self, annotation_id: int, result: list[dict], *,
                          lead_time: float | None = None) -> dict:
        kwargs: dict[str, Any] = {"result": result}
        if lead_time is not None:
            kwargs["lead_time"] = float(lead_time)
        return self.call(f"update annotation {annotation_id}",
                         self._sdk.annotations.with_raw_response.update, annotation_id,
                         **kwargs).response.json()

    def list_annotations(self, task_id: int) -> list[dict]:
        return self.call(f"list annotations of task {task_id}",
                         self._sdk.annotations.with_raw_response.list, task_id).response.json()

    # --- exports ---------------------------------------------------------------------------------
    def export_snapshot(self, project_id: int, *, with_predictions: bool = False,
                        only_annotated: bool = True, include_skipped: bool = False,
                        poll_s: float = 0.25, timeout_s: float = 600.0) -> list[dict]:
        """All tasks of a project with their annotations, through a snapshot export (one server-
        side job, one download: the bulk read path). Predictions are listed in full only when
        asked (the plain export lists them by id only). ``include_skipped``: also the skipped
        (cancelled) annotations, which Label Studio leaves out by default; the task filter is then
        off (a task whose only annotation is skipped counts as not annotated there)."""
        body: dict[str, Any] = {
            "title": f"dataengine sync {time.time():.3f}",
            "serialization_options": {
                "predictions": {"only_id": not with_predictions},
                "annotations__completed_by": {"only_id": True},
                "drafts": {"only_id": True},
            },
            "task_filter_options": {"annotated": "only" if only_annotated and not include_skipped
                                    else None},
        }
        if include_skipped:
            body["annotation_filter_options"] = {"usual": True, "ground_truth": True, "skipped": True}
        created = self._raw("POST", f"api/projects/{project_id}/exports",
                            f"create export of project {project_id}", json=body).json()
        export_id = created["id"]
        deadline = time.monotonic() + timeout_s
        status = created.get("status")
        while status not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise LabelStudioError(f"export {export_id} of project {project_id} did not finish "
                                       f"within {timeout_s:.0f} s (status {status!r})")
            time.sleep(poll_s)
            status = self._raw("GET", f"api/projects/{project_id}/exports/{export_id}",
                               f"GET export {export_id}").json().get("status")
        if status == "failed":
            raise LabelStudioError(f"export {export_id} of project {project_id} failed on the server")
        r = self._raw("GET", f"api/projects/{project_id}/exports/{export_id}/download",
                      f"download export {export_id}", params={"exportType": "JSON"})
        tasks = r.json()
        try:
            self._raw("DELETE", f"api/projects/{project_id}/exports/{export_id}",
                      f"delete export {export_id}")
        except LabelStudioError:
            pass  # a left-over export file is harmless
        return tasks

    def export_tasks(self, project_id: int, *, ids: Sequence[int] | None = None) -> list[dict]:
        """The plain export (one synchronous ``GET /api/projects/{id}/export``): every task that
        has at least one annotation (skipped ones included), annotations in full, predictions by
        id only. ``ids``: only these tasks (a page of a larger project; keep pages to a few
        hundred ids, they travel in the query string)."""
        params: dict[str, Any] = {"exportType": "JSON"}
        if ids:
            params["ids[]"] = [int(i) for i in ids]
        return self._raw("GET", f"api/projects/{project_id}/export",
                         f"export of project {project_id}", params=params).json()

    # --- files -----------------------------------------------------------------------------------
    def get_file(self, url: str) -> bytes:
        """The bytes behind a URL the server serves to the editor (e.g. a task's frame,
        ``/data/local-files/?d=...``), fetched with this client's credentials like a browser."""
        path = url[len(self.url):] if url.startswith(self.url) else url
        return self._raw("GET", path.lstrip("/"), f"GET {path[:120]}").content

    # --- ML backends -------------------------------------------------------------------------------
    def ensure_ml_backend(self, project_id: int, url: str, *, title: str = "dataengine SAM 2",
                          interactive: bool = True, timeout_s: float = 30.0) -> int:
        """Find (by url) or connect the project's ML backend (Label Studio calls its /health and
        /setup on connecting: a backend that does not answer is refused here)."""
        found = self.call(f"list ML backends of project {project_id}",
                          self._sdk.ml.with_raw_response.list, project=project_id).response.json()
        for b in found:
            if b.get("url") == url:
                return b["id"]
        created = self.call(f"connect ML backend {url}", self._sdk.ml.with_raw_response.create,
                            project=project_id, url=url, title=title, is_interactive=interactive,
                            timeout=timeout_s, attempts=1).response.json()
        return created["id"]

    def predict_interactive(self, ml_backend_id: int, task_id: int, context: dict) -> dict:
        """What the editor does on a smart click: Label Studio forwards the task and the click
        context to the ML backend's /predict and returns its answer (``{"data": ...}`` or
        ``{"errors": [...]}``)."""
        return self._raw("POST", f"api/ml/{ml_backend_id}/interactive-annotating",
                         f"interactive prediction on task {task_id}",
                         json={"task": task_id, "context": context}).json()

    # --- webhooks --------------------------------------------------------------------------------
    def ensure_webhook(self, project_id: int, url: str, headers: dict[str, str],
                       actions: Sequence[str] = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED",
                                                 "ANNOTATION_UPDATED")) -> int:
        """Find (by url) or create the project's webhook; headers (the shared secret) are set
        on every call so a rotated secret takes effect."""
        hooks = self.call("list webhooks", self._sdk.webhooks.with_raw_response.list,
                          project=str(project_id)).response.json()
        for h in hooks:
            if h.get("url") == url and h.get("project") == project_id:
                self.call(f"update webhook {h['id']}", self._sdk.webhooks.update, h["id"],
                          url=url, headers=headers, actions=list(actions), send_payload=True,
                          send_for_all_actions=False, is_active=True)
                return h["id"]
        created = self.call("create webhook", self._sdk.webhooks.with_raw_response.create,
                            url=url, project=project_id, headers=headers, actions=list(actions),
                            send_payload=True, send_for_all_actions=False,
                            is_active=True).response.json()
        return created["id"]
