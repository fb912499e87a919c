"""Exactly-once sync of Label Studio annotations into the database.

What arrives: annotation versions, each with its task (``Delivery``), from a bulk pull (Label
Studio's export in pages of tasks, fetched while the previous page is applied; or one snapshot
export; or one ``GET task`` per task) or from a webhook. The same version may arrive
many times, versions may arrive out of order, and the process may die at any point.

The rules that make the database end the same whatever the deliveries:

- **Version key**: ``(annotation id, version)`` with version = the annotation's ``updated_at``
  normalised to fixed-width UTC (``2026-01-02T03:04:05.123456Z``, so versions sort as strings), or
  ``sha256:<content hash>`` when a payload has no timestamp. ``applied_annotations`` has a unique
  key on ``(tool, external_annotation_id, version)``: a version is applied at most once.
- **One transaction per annotation version**: the applied row, the corrected masklets and their
  frame masks (``copy_insert``), the effort events, the task status and the masklet statuses are
  written together or not at all. Validation (``validate.validate_annotation``) and mask encoding
  run BEFORE the transaction: an invalid annotation is reported per task and leaves nothing.
- **Ordering**: the transaction first locks the task's round row (``UPDATE ... SET status =
  status``: a row lock on PostgreSQL, the write lock on SQLite), so appliers of one round are
  serialised; then a version older than one already applied for the same annotation is a no-op
  (``stale``), and masks are written only when no newer version of another annotation of the same
  task and actor kind is applied (the newest annotation of a task wins, in any arrival order).
- **Convergent state**: effort events of an annotator on a task are replaced by the newest
  version's; masklet statuses are recomputed from the newest applied annotation of every task of
  the video and round. So the end state depends only on the set of newest versions, not on the
  arrival order; only ``applied_annotations`` also keeps the older versions that were applied on
  the way (the ledger).
- **Crash safety**: nothing is acknowledged to Label Studio; a version that was fetched but not
  committed is simply fetched again by the next sync (Label Studio keeps it).

Who made it: an annotation carrying the scripted annotator's marker (see ``effort``), or completed
by one of ``scripted_user_ids``, is stored as ``source_kind = scripted_annotator`` /
``actor_kind = scripted_annotator``; everything else is human work.

Masklets: a correction annotation writes, per object of its task, the frames of its chunk into the
masklet of (video, object id, round, source kind) (created on first use; status ``corrected``,
``rejected`` after a "reject" verdict, ``in_review`` after "unsure"). A verification annotation
sets the masklets it names (``data.objects[].masklet_id``) to ``verified`` (every chunk
satisfactory) or back to ``in_review`` (unsatisfactory anywhere: back to correction).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, bindparam, delete, insert, select, update
from sqlalchemy import exc as sa_exc

from annotation.labelstudio.client import LabelStudioApiError, LabelStudioClient
from annotation.labelstudio.effort import (
    SCRIPTED_ANNOTATOR,
    ActorMarker,
    edited_regions,
    split_marker,
    split_seconds,
)
from annotation.labelstudio.label_config import CORRECTION, VERIFICATION, slot_of_label
from annotation.labelstudio.validate import (
    AnnotationInvalid,
    Issue,
    ValidatedAnnotation,
    frames_changed,
    validate_annotation,
)
from storage.db import copy_insert
from storage.masklets import FRAME_MASK_COLUMNS
from storage.masks import decode_rle, encode_rle
from storage.schema import (
    ActorKind,
    AnnotationRound,
    AnnotationTask,
    AppliedAnnotation,
    EffortEvent,
    EffortMode,
    FrameMask,
    Masklet,
    MaskletStatus,
    SourceKind,
    TaskStatus,
)

__all__ = [
    "AnnotationSync",
    "Delivery",
    "SyncReport",
    "TOOL",
    "content_hash",
    "deliveries_from_tasks",
    "normalize_timestamp",
    "version_key",
]

log = logging.getLogger(__name__)

TOOL = "labelstudio"

# Correction verdicts -> status of the corrected masklet; worst wins over a masklet's chunks.
_CORRECTION_STATUS = {None: MaskletStatus.CORRECTED, "fixed": MaskletStatus.CORRECTED,
                      "unsure": MaskletStatus.IN_REVIEW, "reject": MaskletStatus.REJECTED}
_CORRECTION_RANK = {MaskletStatus.CORRECTED: 0, MaskletStatus.IN_REVIEW: 1, MaskletStatus.REJECTED: 2}
# Verification verdicts: unsatisfactory anywhere sends the masklet back to correction.
_VERIFICATION_STATUS = {"satisfactory": MaskletStatus.VERIFIED,
                        "unsatisfactory": MaskletStatus.IN_REVIEW}
_VERIFICATION_RANK = {MaskletStatus.VERIFIED: 0, MaskletStatus.IN_REVIEW: 1}

# Statements built once (the per-annotation transaction is the hot path of a bulk sync).
_LOCK_ROUND = (update(AnnotationRound).where(AnnotationRound.id == bindparam("b_round"))
               .values(status=AnnotationRound.status))
_PRIOR = select(AppliedAnnotation.external_annotation_id, AppliedAnnotation.version,
                AppliedAnnotation.summary, AppliedAnnotation.tool).where(
                    AppliedAnnotation.task_id == bindparam("b_task"))
_FIND_MASKLET = (select(Masklet.id).where(Masklet.video_id == bindparam("b_video"),
                                          Masklet.object_id == bindparam("b_object"),
                                          Masklet.round_id == bindparam("b_round"),
                                          Masklet.source_kind == bindparam("b_source"))
                 .order_by(Masklet.id).limit(1))
_DELETE_FRAMES = delete(FrameMask).where(FrameMask.masklet_id == bindparam("b_masklet"),
                                         FrameMask.frame_index >= bindparam("b_start"),
                                         FrameMask.frame_index < bindparam("b_stop"))
_DELETE_EFFORT = delete(EffortEvent).where(EffortEvent.task_id == bindparam("b_task"),
                                           EffortEvent.actor_id == bindparam("b_actor"))
_TASK_SYNCED = (update(AnnotationTask).where(AnnotationTask.id == bindparam("b_task"))
                .values(status=TaskStatus.SYNCED))
# An IN over the video's tasks (not a join): SQLite's planner would otherwise scan all of
# applied_annotations for every annotation applied (quadratic in a bulk sync).
# The tool is checked in Python: with it in the WHERE clause SQLite prefers the unique index
# that starts with the tool, which covers every applied annotation.
_KIND_SUMMARIES = (select(AppliedAnnotation.task_id, AppliedAnnotation.version,
                          AppliedAnnotation.summary, AppliedAnnotation.tool)
                   .where(AppliedAnnotation.task_id.in_(
                       select(AnnotationTask.id).where(
                           AnnotationTask.video_id == bindparam("b_video"),
                           AnnotationTask.round_id == bindparam("b_round"),
                           AnnotationTask.kind == bindparam("b_kind")))))
_SET_STATUS_BY_OBJECT = (update(Masklet).where(Masklet.video_id == bindparam("b_video"),
                                               Masklet.object_id == bindparam("b_object"),
                                               Masklet.round_id == bindparam("b_round"),
                                               Masklet.source_kind == bindparam("b_source"),
                                               Masklet.status != bindparam("b_status"))
                         .values(status=bindparam("b_status")))
_SET_STATUS_BY_ID = (update(Masklet).where(Masklet.id == bindparam("b_masklet"),
                                           Masklet.status != bindparam("b_status"))
                     .values(status=bindparam("b_status")))


# --- versions --------------------------------------------------------------------------------------
def normalize_timestamp(value: Any) -> str | None:
    """An ISO timestamp (``...Z``, ``+00:00`` or naive UTC) -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content_hash(annotation: Mapping) -> str:
    """sha256 of what an annotation says (result, lead time, cancelled), canonical JSON."""
    doc = {"result": annotation.get("result"), "lead_time": annotation.get("lead_time"),
           "was_cancelled": bool(annotation.get("was_cancelled"))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def version_key(annotation: Mapping) -> str:
    """The version of an annotation: its normalised ``updated_at`` (sortable), else a content
    hash (``sha256:...``)."""
    ts = normalize_timestamp(annotation.get("updated_at")) or normalize_timestamp(
        annotation.get("created_at"))
    return ts if ts else "sha256:" + content_hash(annotation)


@dataclass(frozen=True)
class Delivery:
    """One annotation version as it arrived, with its task (``id`` and ``data`` at least)."""

    task: Mapping
    annotation: Mapping
    project_id: int | None = None
    source: str = "poll"  # poll | export | webhook | task (never stored: the state must not depend on it)

    @property
    def task_id(self) -> int:
        return int(self.task["id"])

    @property
    def annotation_id(self) -> str:
        return str(self.annotation["id"])

    @property
    def version(self) -> str:
        return version_key(self.annotation)


def deliveries_from_tasks(tasks: Iterable[Mapping], project_id: int | None,
                          source: str) -> list[Delivery]:
    """Every annotation of every task (export or task JSON) as a Delivery."""
    out = []
    for t in tasks:
        for a in t.get("annotations") or []:
            if isinstance(a, Mapping) and "id" in a:
                pid = project_id if project_id is not None else _project_of(t, a)
                out.append(Delivery(task=t, annotation=a, project_id=pid, source=source))
    return out


def _project_of(task: Mapping, ann: Mapping) -> int | None:
    for v in (ann.get("project"), task.get("project")):
        if isinstance(v, Mapping):
            v = v.get("id")
        if isinstance(v, int):
            return v
    return None


# --- report ----------------------------------------------------------------------------------------
@dataclass
class SyncReport:
    fetched: int = 0
    applied: int = 0
    duplicates: int = 0  # this version was applied before: no-op
    stale: int = 0  # a newer version of the same annotation is applied: no-op
    cancelled: int = 0  # skipped annotations: recorded, nothing else changes
    invalid: dict[int, list[str]] = field(default_factory=dict)  # LS task id -> issues
    unknown_tasks: list[int] = field(default_factory=list)  # LS task ids with no row here
    deleted_tasks: list[int] = field(default_factory=list)  # our tasks that LS no longer has
    requests: int = 0
    fetch_s: float = 0.0
    apply_s: float = 0.0

    def merge(self, other: SyncReport) -> None:
        for k in ("fetched", "applied", "duplicates", "stale", "cancelled", "requests"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.invalid.update(other.invalid)
        self.unknown_tasks += other.unknown_tasks
        self.deleted_tasks += other.deleted_tasks
        self.fetch_s += other.fetch_s
        self.apply_s += other.apply_s

    def as_dict(self) -> dict:
        return {"fetched": self.fetched, "applied": self.applied, "duplicates": self.duplicates,
                "stale": self.stale, "cancelled": self.cancelled,
                "invalid": {str(k): v for k, v in self.invalid.items()},
                "unknown_tasks": self.unknown_tasks, "deleted_tasks": self.deleted_tasks,
                "requests": self.requests, "fetch_s": round(self.fetch_s, 3),
                "apply_s": round(self.apply_s, 3)}

    def __str__(self) -> str:
        return (f"fetched {self.fetched}, applied {self.applied}, duplicates {self.duplicates}, "
                f"stale {self.stale}, cancelled {self.cancelled}, invalid {len(self.invalid)}, "
                f"unknown tasks {len(self.unknown_tasks)}, deleted tasks {len(self.deleted_tasks)}")


@dataclass(frozen=True)
class _TaskRow:
    id: int
    external_task_id: int
    project_id: str
    kind: str
    video_id: int
    round_id: int
    frame_start: int
    frame_stop: int


@dataclass
class _Prepared:
    """Everything computed before the transaction (no database writes)."""

    delivery: Delivery
    task: _TaskRow
    version: str
    cancelled: bool
    actor_kind: ActorKind
    actor_id: str
    summary: dict
    validated: ValidatedAnnotation | None = None
    rles: dict[int, list[tuple]] = field(default_factory=dict)  # slot -> frame rows (no masklet id)
    effort: dict[int, dict] = field(default_factory=dict)  # slot -> counts


# --- the sync --------------------------------------------------------------------------------------
class AnnotationSync:
    """Applies annotation versions to the database exactly once (see the module doc).

    ``before_commit(delivery)`` is called inside each transaction just before its commit (tests use
    it to crash there); ``scripted_user_ids``: Label Studio user ids whose annotations are the
    scripted annotator's even without its marker."""

    def __init__(self, engine: Engine, *, tool: str = TOOL, scripted_user_ids: Iterable[int] = (),
                 alpha_threshold: int = 128,
                 before_commit: Callable[[Delivery], None] | None = None) -> None:
        self.engine = engine
        self.tool = tool
        self.scripted_user_ids = {int(u) for u in scripted_user_ids}
        self.alpha_threshold = alpha_threshold
        self.before_commit = before_commit

    # -- pulling ------------------------------------------------------------------------------------
    def sync_project(self, client: LabelStudioClient, project_id: int, *, method: str = "export",
                     after_fetch: Callable[[list[Delivery]], None] | None = None,
                     check_deleted: bool = True, page_tasks: int = 250) -> SyncReport:
        """Pull the project's annotations and apply what is new.

        ``method="export"`` (the bulk path): the tasks recorded here are read with Label Studio's
        export in pages of ``page_tasks`` tasks (only annotated ones come back, annotations in
        full), the next page being fetched while the current one is applied;
        ``"snapshot"``: one server-side snapshot export of the whole project;
        ``"per_task"``: one ``GET task`` per task recorded here (the slow path, kept for
        comparison and small catch-ups). ``after_fetch(deliveries)`` runs after each fetch,
        before anything of it is applied (a crash there loses nothing: the next sync fetches the
        same versions again). Tasks recorded here that Label Studio no longer has are reported
        (``deleted_tasks``) and, if still open, cancelled."""
        report = SyncReport()
        rows = self._task_rows(project_id)
        t0 = time.perf_counter()
        in_ls: set[int] | None = None
        if check_deleted and method != "per_task":
            in_ls = {int(t["id"]) for t in client.iter_tasks(project_id, include="id")}
            report.requests += 1
        report.fetch_s += time.perf_counter() - t0

        def fetched(deliveries: list[Delivery]) -> list[Delivery]:
            report.fetched += len(deliveries)
            if after_fetch is not None:
                after_fetch(deliveries)
            return deliveries

        if method == "export":
            ids = sorted(rows) if in_ls is None else sorted(set(rows) & in_ls)
            pages = [ids[i:i + page_tasks] for i in range(0, len(ids), max(1, page_tasks))]
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ls-export") as pool:
                nxt = pool.submit(client.export_tasks, project_id, ids=pages[0]) if pages else None
                for k in range(len(pages)):
                    t0 = time.perf_counter()
                    tasks = nxt.result()
                    report.requests += 1
                    nxt = (pool.submit(client.export_tasks, project_id, ids=pages[k + 1])
                           if k + 1 < len(pages) else None)
                    report.fetch_s += time.perf_counter() - t0
                    page = fetched(deliveries_from_tasks(tasks, project_id, "export"))
                    self.apply(page, report=report, task_rows=rows)
        elif method == "snapshot":
            t0 = time.perf_counter()
            tasks = client.export_snapshot(project_id, include_skipped=True)
            report.requests += 1
            report.fetch_s += time.perf_counter() - t0
            self.apply(fetched(deliveries_from_tasks(tasks, project_id, "export")),
                       report=report, task_rows=rows)
        elif method == "per_task":
            deliveries = []
            t0 = time.perf_counter()
            for ext_id in sorted(rows):
                report.requests += 1
                try:
                    task = client.get_task(ext_id)
                except LabelStudioApiError as exc:
                    if exc.status == 404:
                        report.deleted_tasks.append(ext_id)
                        continue
                    raise
                deliveries += deliveries_from_tasks([task], project_id, "task")
            report.fetch_s += time.perf_counter() - t0
            self.apply(fetched(deliveries), report=report, task_rows=rows)
        else:
            raise ValueError(f"unknown sync method {method!r}: use 'export', 'snapshot' or 'per_task'")
        if in_ls is not None:
            report.deleted_tasks = sorted(set(rows) - in_ls)
        if report.deleted_tasks:
            self._mark_deleted(project_id, report.deleted_tasks)
        return report

    # -- applying -----------------------------------------------------------------------------------
    def apply(self, deliveries: Iterable[Delivery], *, report: SyncReport | None = None,
              task_rows: Mapping[int, _TaskRow] | None = None,
              prefetch_batch: int = 500) -> SyncReport:
        """Apply deliveries (any order, any repeats): oldest version first, each in its own
        transaction; versions already applied are skipped without a transaction. The predicted
        masks the effort is measured against are read ``prefetch_batch`` deliveries at a time."""
        report = report if report is not None else SyncReport()
        t0 = time.perf_counter()
        items = sorted(deliveries, key=lambda d: (d.version, d.annotation_id))
        if report is not None and report.fetched == 0 and not report.requests:
            report.fetched = len(items)  # deliveries handed in directly (webhooks, tests)
        applied = self._applied_versions({d.annotation_id for d in items})
        seen: set[tuple[str, str]] = set()
        rows_cache: dict[tuple[int | None, int], _TaskRow | None] = {}
        if task_rows:
            for ext, r in task_rows.items():
                rows_cache[(int(r.project_id), ext)] = r
        todo: list[tuple[Delivery, _TaskRow | None]] = []
        for d in items:
            key = (d.annotation_id, d.version)
            done = applied.get(d.annotation_id, ())
            if key in seen or d.version in done:
                report.duplicates += 1
                continue
            if done and max(done) > d.version:
                report.stale += 1
                continue
            seen.add(key)
            ck = (d.project_id, d.task_id)
            if ck not in rows_cache:
                rows_cache[ck] = self._task_row(d.project_id, d.task_id)
            todo.append((d, rows_cache[ck]))
        for b in range(0, len(todo), max(1, prefetch_batch)):
            batch = todo[b:b + prefetch_batch]
            cache = self._prefetch_predictions(batch)
            for d, row in batch:
                self.apply_one(d, task_row=row, report=report, _predictions=cache)
        report.apply_s += time.perf_counter() - t0
        return report

    def apply_one(self, d: Delivery, *, task_row: _TaskRow | None = None,
                  report: SyncReport | None = None, _predictions: dict | None = None) -> str:
        """Apply one delivery in one transaction. Returns ``applied``, ``cancelled``,
        ``duplicate``, ``stale``, ``invalid`` or ``unknown_task`` (also counted in ``report``)."""
        report = report if report is not None else SyncReport()
        if task_row is None:
            task_row = self._task_row(d.project_id, d.task_id)
        if task_row is None:
            report.unknown_tasks.append(d.task_id)
            log.warning("annotation %s: task %s (project %s) is not recorded here; skipped",
                        d.annotation_id, d.task_id, d.project_id)
            return "unknown_task"
        try:
            prep = self._prepare(d, task_row, _predictions)
        except AnnotationInvalid as exc:
            report.invalid[d.task_id] = [str(i) for i in exc.issues]
            log.warning("%s", exc)
            return "invalid"
        outcome = self._commit(prep)
        if outcome == "applied" and prep.cancelled:
            outcome = "cancelled"
        attr = {"applied": "applied", "cancelled": "cancelled", "duplicate": "duplicates",
                "stale": "stale"}[outcome]
        setattr(report, attr, getattr(report, attr) + 1)
        return outcome

    # -- preparation (no writes) --------------------------------------------------------------------
    def _prepare(self, d: Delivery, row: _TaskRow, cache: dict | None = None) -> _Prepared:
        ann = d.annotation
        version = d.version
        result, marker = split_marker(ann.get("result"))
        actor_kind, actor_id = self._actor(ann, marker)
        cancelled = bool(ann.get("was_cancelled"))
        summary: dict[str, Any] = {
            "kind": row.kind, "actor_kind": actor_kind.value, "actor_id": actor_id,
            "cancelled": cancelled, "content_sha256": content_hash(ann),
            "lead_time": _num(ann.get("lead_time")),
        }
        prep = _Prepared(delivery=d, task=row, version=version, cancelled=cancelled,
                         actor_kind=actor_kind, actor_id=actor_id, summary=summary)
        if cancelled:
            summary["objects"] = []
            return prep
        v = validate_annotation(d.task, {**ann, "result": result},
                                alpha_threshold=self.alpha_threshold)
        spec = v.spec
        mismatch = []
        if spec.kind != row.kind:
            mismatch.append(f"task data kind {spec.kind!r}, recorded {row.kind!r}")
        if spec.frame_start != row.frame_start or spec.n_frames != row.frame_stop - row.frame_start:
            mismatch.append(f"task data frames [{spec.frame_start}, {spec.frame_start + spec.n_frames}),"
                            f" recorded [{row.frame_start}, {row.frame_stop})")
        if mismatch:
            raise AnnotationInvalid([Issue("bad_task_data", m) for m in mismatch],
                                    task_id=d.task_id, annotation_id=ann.get("id"))
        prep.validated = v
        predicted = self._predictions(row, spec, cache)
        changed = frames_changed(v, predicted)
        regions = edited_regions(result, slot_of_label)
        lead = summary["lead_time"] or 0.0
        objects = []
        for o in spec.objects:
            objects.append({"slot": o.slot, "object_id": o.object_id, "masklet_id": o.masklet_id,
                            "verdict": v.verdicts.get(o.slot), "frames_changed": changed[o.slot]})
        summary["objects"] = objects
        # effort per object
        if marker is not None and marker.objects:
            seconds = {o.slot: marker.objects.get(o.slot).seconds if o.slot in marker.objects else 0.0
                       for o in spec.objects}
            rest = lead - sum(seconds.values())
            if rest > 0:  # shared time (frame views, overhead) split evenly
                for k in seconds:
                    seconds[k] += rest / len(seconds)
        else:
            seconds = split_seconds(lead, {o.slot: changed[o.slot] + 1 for o in spec.objects})
        for o in spec.objects:
            me = marker.objects.get(o.slot) if marker is not None else None
            edited = changed[o.slot] if row.kind == CORRECTION else 0
            prep.effort[o.slot] = {
                "frames_total": spec.n_frames, "frames_edited": edited,
                "clicks": me.clicks if me else 0,
                "strokes": me.strokes if me else regions.get(o.slot, 0),
                "seconds": float(seconds.get(o.slot, 0.0)),
            }
        if row.kind == CORRECTION:
            for o in spec.objects:
                m = v.masks[o.slot]
                prep.rles[o.slot] = [_frame_values(row.frame_start + t, m[t])
                                     for t in range(spec.n_frames)]
        return prep

    def _actor(self, ann: Mapping, marker: ActorMarker | None) -> tuple[ActorKind, str]:
        user = ann.get("completed_by")
        if isinstance(user, Mapping):
            user = user.get("id")
        if marker is not None:
            return ActorKind.SCRIPTED_ANNOTATOR, f"{SCRIPTED_ANNOTATOR}:{marker.name}"
        if isinstance(user, int) and user in self.scripted_user_ids:
            return ActorKind.SCRIPTED_ANNOTATOR, f"{SCRIPTED_ANNOTATOR}:labelstudio-user-{user}"
        return ActorKind.HUMAN, f"labelstudio:user:{user}"

    def _predictions(self, row: _TaskRow, spec, cache: dict | None = None) -> dict[int, np.ndarray]:
        """Per slot, the predicted masks of the chunk from the masklet named in the task data
        (``masklet_id``); a slot without one counts as an empty prediction."""
        ids = {o.slot: int(o.masklet_id) for o in spec.objects if o.masklet_id is not None}
        if not ids:
            return {}
        if cache is None or any(mid not in cache for mid in ids.values()):
            cache = self._read_frames({mid: [(row.frame_start, row.frame_stop)] for mid in ids.values()})
        T, H, W = spec.n_frames, spec.height, spec.width
        out: dict[int, np.ndarray] = {}
        for slot, mid in ids.items():
            stack = np.zeros((T, H, W), bool)
            frames = cache.get(mid, {})
            for t in range(row.frame_start, row.frame_stop):
                got = frames.get(t)
                if got is None:
                    continue
                counts, h, w = got
                if (h, w) != (H, W):
                    raise AnnotationInvalid([Issue("bad_size", f"predicted masklet {mid} frame {t} is "
                                                   f"{w}x{h}, task frames are {W}x{H}")],
                                            task_id=row.external_task_id)
                stack[t - row.frame_start] = decode_rle({"size": [h, w], "counts": counts})
            out[slot] = stack
        return out

    def _prefetch_predictions(self, batch: Sequence[tuple[Delivery, _TaskRow | None]]) -> dict:
        ranges: dict[int, list[tuple[int, int]]] = {}
        for d, row in batch:
            if row is None or row.kind != CORRECTION:
                continue
            data = d.task.get("data") if isinstance(d.task, Mapping) else None
            for o in (data or {}).get("objects") or []:
                mid = o.get("masklet_id") if isinstance(o, Mapping) else None
                if isinstance(mid, int) and not isinstance(mid, bool):
                    ranges.setdefault(mid, []).append((row.frame_start, row.frame_stop))
        return self._read_frames(ranges) if ranges else {}

    def _read_frames(self, ranges: Mapping[int, Sequence[tuple[int, int]]]) -> dict:
        """{masklet id: {frame: (counts, h, w)}} for the frame ranges asked for."""
        out: dict[int, dict[int, tuple]] = {mid: {} for mid in ranges}
        ids = sorted(ranges)
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                lo = min(a for mid in part for a, _ in ranges[mid])
                hi = max(b for mid in part for _, b in ranges[mid])
                q = (select(FrameMask.masklet_id, FrameMask.frame_index, FrameMask.rle_counts,
                            FrameMask.height, FrameMask.width)
                     .where(FrameMask.masklet_id.in_(part), FrameMask.frame_index >= lo,
                            FrameMask.frame_index < hi))
                for mid, t, counts, h, w in conn.execute(q):
                    if any(a <= t < b for a, b in ranges[mid]):
                        out[mid][t] = (counts, h, w)
        return out

    # -- the transaction ----------------------------------------------------------------------------
    def _commit(self, p: _Prepared) -> str:
        row = p.task
        ann_id = p.delivery.annotation_id
        with self.engine.connect() as conn:
            trans = conn.begin()
            try:
                # Serialise appliers of this round (row lock / SQLite write lock), first statement.
                conn.execute(_LOCK_ROUND, {"b_round": row.round_id})
                prior = [(a, v, s) for a, v, s, tool in conn.execute(_PRIOR, {"b_task": row.id})
                         if tool == self.tool]
                mine = [v for a, v, _ in prior if a == ann_id]
                if p.version in mine:
                    trans.rollback()
                    return "duplicate"
                if mine and max(mine) > p.version:
                    trans.rollback()
                    return "stale"
                conn.execute(insert(AppliedAnnotation), {
                    "task_id": row.id, "tool": self.tool, "external_annotation_id": ann_id,
                    "version": p.version, "summary": p.summary})
                if not p.cancelled:
                    newer_other = any(
                        a != ann_id and v > p.version and isinstance(s, Mapping)
                        and s.get("actor_kind") == p.actor_kind.value and not s.get("cancelled")
                        for a, v, s in prior)
                    masklets = self._write_masklets(conn, p, write_masks=not newer_other)
                    self._write_effort(conn, p, masklets)
                    self._recompute_statuses(conn, p)
                conn.execute(_TASK_SYNCED, {"b_task": row.id})
                if self.before_commit is not None:
                    self.before_commit(p.delivery)
                trans.commit()
                return "applied"
            except sa_exc.IntegrityError:
                # Another applier committed this very version between our check and insert.
                trans.rollback()
                return "duplicate"
            except BaseException:
                trans.rollback()
                raise

    def _source_kind(self, p: _Prepared) -> SourceKind:
        return (SourceKind.SCRIPTED_ANNOTATOR if p.actor_kind == ActorKind.SCRIPTED_ANNOTATOR
                else SourceKind.HUMAN)

    def _write_masklets(self, conn, p: _Prepared, *, write_masks: bool) -> dict[int, int | None]:
        """slot -> masklet id the effort refers to (the corrected masklet for corrections, the
        judged masklet for verifications)."""
        row = p.task
        spec = p.validated.spec
        out: dict[int, int | None] = {}
        if row.kind == VERIFICATION:
            return {o.slot: (int(o.masklet_id) if o.masklet_id is not None else None)
                    for o in spec.objects}
        source = self._source_kind(p)
        rows: list[tuple] = []
        for o in spec.objects:
            mid = conn.execute(_FIND_MASKLET, {"b_video": row.video_id, "b_object": o.object_id,
                                               "b_round": row.round_id, "b_source": source}).scalar()
            if mid is None:
                if not write_masks:
                    out[o.slot] = None
                    continue
                mid = conn.execute(insert(Masklet).values(
                    video_id=row.video_id, object_id=o.object_id, label=o.label or "object",
                    source_kind=source, source_model_version_id=None,
                    status=MaskletStatus.CORRECTED, round_id=row.round_id,
                ).returning(Masklet.id)).scalar_one()
            out[o.slot] = mid
            if write_masks:
                conn.execute(_DELETE_FRAMES, {"b_masklet": mid, "b_start": row.frame_start,
                                              "b_stop": row.frame_stop})
                rows.extend((mid, *r) for r in p.rles[o.slot])
        if rows:
            copy_insert(conn, FrameMask, rows, FRAME_MASK_COLUMNS)
        return out

    def _write_effort(self, conn, p: _Prepared, masklets: Mapping[int, int | None]) -> None:
        row = p.task
        conn.execute(_DELETE_EFFORT, {"b_task": row.id, "b_actor": p.actor_id})
        if row.kind == VERIFICATION:
            mode = EffortMode.REVIEW
        else:
            clicks = sum(e["clicks"] for e in p.effort.values())
            mode = EffortMode.INTERACTIVE if clicks else EffortMode.MANUAL
        rows = [{"round_id": row.round_id, "masklet_id": masklets.get(slot), "task_id": row.id,
                 "actor_kind": p.actor_kind, "actor_id": p.actor_id, "mode": mode, **e}
                for slot, e in sorted(p.effort.items())]
        if rows:
            conn.execute(insert(EffortEvent), rows)

    def _recompute_statuses(self, conn, p: _Prepared) -> None:
        """Masklet statuses from the newest applied annotation of every task of this video and
        round (and kind): independent of the order annotations arrived in."""
        row = p.task
        newest: dict[tuple[int, str], tuple[str, dict]] = {}
        for task_id, version, summary, tool in conn.execute(_KIND_SUMMARIES, {
                "b_video": row.video_id, "b_round": row.round_id, "b_kind": row.kind}):
            if tool != self.tool or not isinstance(summary, Mapping) or summary.get("cancelled"):
                continue
            actor = summary.get("actor_kind") if row.kind == CORRECTION else "any"
            k = (task_id, actor)
            if k not in newest or version > newest[k][0]:
                newest[k] = (version, summary)
        if row.kind == CORRECTION:
            actor = p.actor_kind.value
            wanted = {o["object_id"] for o in p.summary["objects"]}
            status: dict[int, MaskletStatus] = {}
            for (_, a), (_, s) in newest.items():
                if a != actor:
                    continue
                for o in s.get("objects", []):
                    oid = o.get("object_id")
                    if oid not in wanted:
                        continue
                    st = _CORRECTION_STATUS.get(o.get("verdict"), MaskletStatus.CORRECTED)
                    if oid not in status or _CORRECTION_RANK[st] > _CORRECTION_RANK[status[oid]]:
                        status[oid] = st
            source = self._source_kind(p)
            for oid, st in status.items():
                conn.execute(_SET_STATUS_BY_OBJECT, {
                    "b_video": row.video_id, "b_object": oid, "b_round": row.round_id,
                    "b_source": source, "b_status": st})
        else:
            wanted = {o["masklet_id"] for o in p.summary["objects"] if o.get("masklet_id") is not None}
            status = {}
            for _, s in newest.values():
                for o in s.get("objects", []):
                    mid = o.get("masklet_id")
                    st = _VERIFICATION_STATUS.get(o.get("verdict"))
                    if mid not in wanted or st is None:
                        continue
                    if mid not in status or _VERIFICATION_RANK[st] > _VERIFICATION_RANK[status[mid]]:
                        status[mid] = st
            for mid, st in status.items():
                conn.execute(_SET_STATUS_BY_ID, {"b_masklet": int(mid), "b_status": st})

    # -- lookups ------------------------------------------------------------------------------------
    def _task_rows(self, project_id: int) -> dict[int, _TaskRow]:
        q = (select(AnnotationTask.id, AnnotationTask.external_task_id, AnnotationTask.project_id,
                    AnnotationTask.kind, AnnotationTask.video_id, AnnotationTask.round_id,
                    AnnotationTask.frame_start, AnnotationTask.frame_stop)
             .where(AnnotationTask.tool == self.tool, AnnotationTask.project_id == str(project_id),
                    AnnotationTask.external_task_id.is_not(None)))
        with self.engine.connect() as conn:
            return {int(r[1]): _TaskRow(r[0], int(r[1]), r[2], _val(r[3]), r[4], r[5], r[6], r[7])
                    for r in conn.execute(q)}

    def _task_row(self, project_id: int | None, ext_task_id: int) -> _TaskRow | None:
        conds = [AnnotationTask.tool == self.tool,
                 AnnotationTask.external_task_id == str(ext_task_id)]
        if project_id is not None:
            conds.append(AnnotationTask.project_id == str(project_id))
        q = select(AnnotationTask.id, AnnotationTask.external_task_id, AnnotationTask.project_id,
                   AnnotationTask.kind, AnnotationTask.video_id, AnnotationTask.round_id,
                   AnnotationTask.frame_start, AnnotationTask.frame_stop).where(and_(*conds))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        if len(rows) != 1:
            return None
        r = rows[0]
        return _TaskRow(r[0], int(r[1]), r[2], _val(r[3]), r[4], r[5], r[6], r[7])

    def _applied_versions(self, annotation_ids: Sequence[str] | set[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        ids = sorted(annotation_ids)
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = (select(AppliedAnnotation.external_annotation_id, AppliedAnnotation.version)
                     .where(AppliedAnnotation.tool == self.tool,
                            AppliedAnnotation.external_annotation_id.in_(ids[i:i + 500])))
                for a, v in conn.execute(q):
                    out.setdefault(a, set()).add(v)
        return out

    def _mark_deleted(self, project_id: int, ext_ids: Sequence[int]) -> None:
        """Tasks deleted in Label Studio: open ones are cancelled here (applied work stays)."""
        with self.engine.begin() as conn:
            conn.execute(update(AnnotationTask).where(
                AnnotationTask.tool == self.tool, AnnotationTask.project_id == str(project_id),
                AnnotationTask.external_task_id.in_([str(e) for e in ext_ids]),
                AnnotationTask.status.in_([TaskStatus.OPEN, TaskStatus.SUBMITTED]),
            ).values(status=TaskStatus.CANCELLED))
        log.warning("project %s: %d task(s) recorded here no longer exist in Label Studio: %s",
                    project_id, len(ext_ids), list(ext_ids)[:20])


def _frame_values(frame_index: int, mask: np.ndarray) -> tuple:
    """A frame_masks row without its masklet id (FRAME_MASK_COLUMNS[1:]): COCO RLE, area and the
    tight box (pycocotools' toBbox convention, [0, 0, 0, 0] when empty) from the mask itself."""
    rle = encode_rle(mask)
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(1))
    if rows.size:
        cols = np.flatnonzero(mask.any(0))
        box = (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))
    else:
        box = (0.0, 0.0, 0.0, 0.0)
    return (int(frame_index), rle["counts"], int(h), int(w), int(np.count_nonzero(mask)), *box,
            None, None)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _val(v: Any) -> str:
    return v.value if hasattr(v, "value") else str(v)
