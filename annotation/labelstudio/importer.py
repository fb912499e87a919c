"""Bulk, idempotent import of chunk tasks (with their brush predictions) into a project.

Idempotency: every task has a key (dataset/video/chunk/round/kind, see ``tasks.idempotency_key``)
stored in its data and, when a database engine is given, in ``annotation_tasks.idempotency_key``
(unique). Flow with a database:

1. one transaction: the keys that already have a row are looked up; rows with an external task id
   are done; new keys get a row in status ``pending`` (written BEFORE anything is sent);
2. keys left ``pending`` by an earlier run that crashed between import and commit are looked up in
   Label Studio by their key (one paged scan) and adopted, never imported twice;
3. the rest is sent in batches (one import request per batch, at most ``batch_size`` tasks,
   ``max_masks_per_batch`` masks and ``max_batch_bytes`` of JSON); each batch's new task ids are
   committed to their rows in one transaction. One batch is on the server while the next one is
   encoded (a single sender thread: requests still go one at a time, in order);
4. a batch whose request failed without an answer (timeout, reset, 5xx) may or may not exist on
   the server: before each retry (bounded, with back-off) its keys are looked up in Label Studio
   and only the missing ones are sent again.

Re-running with the same tasks never creates a second task. Without a database the same holds
through step 2's lookup by key (run for every call).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from annotation.labelstudio.client import (
    LabelStudioClient,
    LabelStudioError,
    LabelStudioUnavailable,
    encode_task,
)
from annotation.labelstudio.tasks import ChunkTask, build_task_payload

__all__ = ["ImportReport", "TOOL", "import_chunk_tasks"]

TOOL = "labelstudio"


@dataclass
class ImportReport:
    project_id: int
    created: dict[str, int] = field(default_factory=dict)  # key -> new task id
    existing: dict[str, int] = field(default_factory=dict)  # key -> task id made earlier
    failed: dict[str, str] = field(default_factory=dict)  # key -> why (nothing of it was applied)
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0  # building + JSON-encoding payloads (overlaps the requests)
    bytes_sent: int = 0

    @property
    def task_ids(self) -> dict[str, int]:
        return {**self.existing, **self.created}

    def __str__(self) -> str:
        return (f"project {self.project_id}: {len(self.created)} created, {len(self.existing)} "
                f"existing, {len(self.failed)} failed in {self.requests} requests, "
                f"{self.seconds:.2f} s")


def _encoded_batches(tasks: Sequence[ChunkTask], batch_size: int, max_masks: int, max_bytes: int,
                     prefill_verdicts: bool, report: ImportReport) -> Iterator[dict[str, bytes]]:
    """{key: encoded payload} per batch, encoded lazily (the caller sends one batch while the
    generator encodes the next). A single task larger than ``max_bytes`` goes alone."""
    batch: dict[str, bytes] = {}
    masks = size = 0
    for t in tasks:
        t0 = time.perf_counter()
        body = encode_task(build_task_payload(t, prefill_verdicts=prefill_verdicts))
        report.encode_seconds += time.perf_counter() - t0
        n = max(1, len(t.predicted))
        if batch and (len(batch) >= batch_size or masks + n > max_masks
                      or size + len(body) + 1 > max_bytes):
            yield batch
            batch, masks, size = {}, 0, 0
        batch[t.key] = body
        masks += n
        size += len(body) + 1
    if batch:
        yield batch


def import_chunk_tasks(
    client: LabelStudioClient,
    project_id: int,
    tasks: Iterable[ChunkTask],
    *,
    engine: Any = None,
    batch_size: int = 1000,
    max_masks_per_batch: int = 20000,
    max_batch_bytes: int = 64 * 2**20,
    attempts: int = 4,
    retry_wait_s: float = 0.5,
    prefill_verdicts: bool = False,
) -> ImportReport:
    """Import ``tasks`` into ``project_id`` in bulk, idempotently (see the module doc).
    ``engine`` (SQLAlchemy, optional): record each task in ``annotation_tasks`` (tasks then need
    ``video_id`` and ``round_id``). Batches hold at most ``batch_size`` tasks,
    ``max_masks_per_batch`` masks and ``max_batch_bytes`` of JSON (Label Studio refuses requests
    over ~250 MB). Raises ``LabelStudioUnavailable`` when the server stays down (what was created
    and committed so far stays recorded; a re-run continues)."""
    if batch_size < 1 or max_masks_per_batch < 1 or max_batch_bytes < 1:
        raise ValueError("batch_size, max_masks_per_batch and max_batch_bytes must be >= 1")
    t0 = time.perf_counter()
    tasks = list(tasks)
    report = ImportReport(project_id=project_id)
    by_key: dict[str, ChunkTask] = {}
    for t in tasks:
        if t.key in by_key:
            raise ValueError(f"two tasks with the same idempotency key {t.key!r}")
        by_key[t.key] = t
    if not by_key:
        return report

    if engine is not None:
        todo_keys, unsure = _reserve_rows(engine, project_id, tasks, report)
    else:
        todo_keys, unsure = list(by_key), list(by_key)

    if unsure:
        in_ls = client.task_keys(project_id)
        adopted = {k: in_ls[k] for k in unsure if k in in_ls}
        if adopted:
            report.existing.update(adopted)
            if engine is not None:
                _record_ids(engine, project_id, adopted)
        todo_keys = [k for k in todo_keys if k not in adopted]

    todo = [by_key[k] for k in todo_keys]
    batches = _encoded_batches(todo, batch_size, max_masks_per_batch, max_batch_bytes,
                               prefill_verdicts, report)
    # Encoding a batch (brush RLE + JSON) costs client CPU the server does not wait for: one
    # sender thread keeps a batch on the server while this thread encodes the next one. Requests
    # stay sequential and in order, so retries and recording work as with a plain loop; an error
    # (a batch that failed for good, a mask of the wrong size) stops before the next batch is sent,
    # after the batch in flight has been recorded.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ls-import") as sender:
        in_flight: Future | None = None
        for payloads in batches:
            if in_flight is not None:
                in_flight.result()
            in_flight = sender.submit(_import_batch, client, project_id, payloads, report, engine,
                                      attempts, retry_wait_s)
        if in_flight is not None:
            in_flight.result()
    report.seconds = time.perf_counter() - t0
    return report


def _import_batch(client, project_id, payloads: dict[str, bytes], report, engine, attempts,
                  retry_wait_s) -> None:
    pending = list(payloads)
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            report.retries += 1
            time.sleep(min(retry_wait_s * 2 ** (attempt - 2), 8.0))
            # The previous request may have been applied without us hearing back: adopt what exists.
            try:
                in_ls = client.task_keys(project_id)
            except LabelStudioUnavailable as exc:
                last_error = exc
                continue
            adopted = {k: in_ls[k] for k in pending if k in in_ls}
            if adopted:
                report.existing.update(adopted)
                if engine is not None:
                    _record_ids(engine, project_id, adopted)
                pending = [k for k in pending if k not in adopted]
            if not pending:
                return
        report.requests += 1
        report.bytes_sent += sum(len(payloads[k]) for k in pending)
        try:
            ids = client.import_tasks(project_id, [payloads[k] for k in pending], attempts=1)
        except LabelStudioUnavailable as exc:
            last_error = exc
            continue
        except LabelStudioError as exc:  # refused (4xx): retrying will not help
            for k in pending:
                report.failed[k] = str(exc)
            if engine is not None:
                _mark_failed(engine, pending)
            return
        created = dict(zip(pending, ids, strict=True))
        report.created.update(created)
        if engine is not None:
            _record_ids(engine, project_id, created)
        return
    raise LabelStudioUnavailable(
        f"import of {len(pending)} tasks into project {project_id} failed after {attempts} "
        f"attempts; {len(report.created)} tasks were created and recorded before that, a re-run "
        f"continues without duplicates. Last error: {last_error}"
    )


# --- database side (annotation_tasks) --------------------------------------------------------------
# Core statements with one executemany each instead of one ORM object / one UPDATE per task: the
# rows are tiny, the per-row ORM work is what cost (thousands of tasks per import).
def _reserve_rows(engine, project_id: int, tasks: Sequence[ChunkTask],
                  report: ImportReport) -> tuple[list[str], list[str]]:
    """Returns (keys to import, keys whose earlier import may have happened)."""
    from sqlalchemy import select

    from storage.db import bulk_insert, session_scope
    from storage.schema import AnnotationTask, TaskStatus

    table = AnnotationTask.__table__
    keys = [t.key for t in tasks]
    existing: dict[str, tuple[str, str | None]] = {}  # key -> (project id, external task id)
    todo: list[str] = []
    unsure: list[str] = []
    new_rows: list[dict] = []
    with session_scope(engine) as s:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for key, project, external in s.execute(
                select(table.c.idempotency_key, table.c.project_id, table.c.external_task_id)
                .where(table.c.idempotency_key.in_(chunk))
            ):
                existing[key] = (project, external)
        for t in tasks:
            row = existing.get(t.key)
            if row is None:
                if t.video_id is None or t.round_id is None:
                    raise ValueError(f"task {t.key!r} needs video_id and round_id to be recorded")
                new_rows.append(dict(
                    idempotency_key=t.key, tool=TOOL, project_id=str(project_id),
                    external_task_id=None, kind=t.kind, video_id=t.video_id,
                    round_id=t.round_id, frame_start=t.frame_start, frame_stop=t.frame_stop,
                    status=TaskStatus.PENDING,
                ))
                todo.append(t.key)
            elif row[1] is not None:
                if row[0] != str(project_id):
                    raise ValueError(f"task {t.key!r} already exists in project {row[0]}, "
                                     f"not {project_id}")
                report.existing[t.key] = int(row[1])
            else:  # pending (or failed) from an earlier run: it may exist in Label Studio
                todo.append(t.key)
                unsure.append(t.key)
        if new_rows:
            bulk_insert(s, table, new_rows)
    return todo, unsure


def _record_ids(engine, project_id: int, ids: dict[str, int]) -> None:
    from sqlalchemy import bindparam, update

    from storage.db import session_scope
    from storage.schema import AnnotationTask, TaskStatus

    if not ids:
        return
    table = AnnotationTask.__table__
    stmt = (update(table).where(table.c.idempotency_key == bindparam("key"))
            .values(external_task_id=bindparam("task_id"), project_id=str(project_id),
                    status=TaskStatus.OPEN))
    with session_scope(engine) as s:
        s.connection().execute(stmt, [{"key": k, "task_id": str(v)} for k, v in ids.items()])


def _mark_failed(engine, keys: Sequence[str]) -> None:
    from sqlalchemy import update

    from storage.db import session_scope
    from storage.schema import AnnotationTask, TaskStatus

    with session_scope(engine) as s:
        s.execute(update(AnnotationTask).where(AnnotationTask.idempotency_key.in_(list(keys)),
                                               AnnotationTask.external_task_id.is_(None))
                  .values(status=TaskStatus.FAILED))
