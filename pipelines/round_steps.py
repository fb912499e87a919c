"""The closed loop's plain steps (issue 5). The Prefect flow (`pipelines/flows/round.py`) wraps each
one in a task; they run as well without Prefect (`run_round`, `run_rounds`).

One round of dataset D, number n:
  ingest -> preannotate -> push -> annotate (wait) -> sync -> repropagate -> train -> gate -> effort
Every step is keyed in `pipeline_runs` (run_key = f"{D}/round{n}/{step}"): a step that succeeded
returns its stored result and does nothing else, so a killed run started again picks up at the
first step that did not finish. The steps themselves are idempotent underneath too (ingest by
sha256, masklets replaced per (video, model, round), Label Studio tasks by idempotency key,
annotations by the scripted annotator's marker, sync by annotation version, the registry by bytes
and by run key).

Effort (docs/loop.md): one "frame" is one object's mask on one frame (object-frames). Modes:
- manual: every object-frame drawn as a polygon with the fewest vertices that reach the IoU
  threshold (the true contour simplified until it would drop below), one click per vertex;
- propagate: first frame drawn as in manual, SAM 2 propagates, frames below the threshold drawn;
- interactive: as propagate, but frames below the threshold are fixed with SAM 2 clicks (up to
  the cap, then a polygon) and every fix is re-propagated to the following frames before they are
  judged.
The rounds run `interactive` through Label Studio: the first-frame mask is the annotator's
(polygon), SAM 2 propagates it (pre-annotation), the scripted annotator fixes frames with clicks
in Label Studio, the sync brings the work back, and re-propagation from the corrected frames
gives the masklets that go to verification.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from pipelines.annotation_modes import effort_row, measure_modes
from storage.schema import PipelineRun, RunStatus

log = logging.getLogger(__name__)

FLOW = "data_engine_round"
STEPS = ("ingest", "preannotate", "push", "annotate", "sync", "repropagate", "verify", "train",
         "gate", "effort")


# --- the step ledger -------------------------------------------------------------------------------
def run_key(dataset: str, round_number: int, step: str) -> str:
    return f"{dataset}/round{round_number}/{step}"


def step_result(engine, key: str) -> dict | None:
    """The stored result of a step that succeeded, else None."""
    with engine.connect() as c:
        row = c.execute(select(PipelineRun.status, PipelineRun.result)
                        .where(PipelineRun.run_key == key)).first()
    if row is not None and row.status == RunStatus.SUCCEEDED:
        return row.result or {}
    return None


def run_step(engine, dataset: str, round_number: int, step: str, fn: Callable[[], dict],
             params: dict | None = None) -> dict:
    """Run ``fn`` once per key: a succeeded step returns its stored result without running."""
    key = run_key(dataset, round_number, step)
    done = step_result(engine, key)
    if done is not None:
        log.info("%s: done before, skipped", key)
        return done
    now = dt.datetime.now(dt.timezone.utc)
    try:
        with engine.begin() as c:
            c.execute(PipelineRun.__table__.insert().values(
                flow=FLOW, run_key=key, status=RunStatus.RUNNING, params=params or {},
                started_at=now))
    except IntegrityError:  # a run before us (killed, or failed) left the row: take it over
        with engine.begin() as c:
            c.execute(update(PipelineRun).where(PipelineRun.run_key == key)
                      .values(status=RunStatus.RUNNING, started_at=now, error=None))
    try:
        result = fn()
    except BaseException as exc:
        with engine.begin() as c:
            c.execute(update(PipelineRun).where(PipelineRun.run_key == key)
                      .values(status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000],
                              finished_at=dt.datetime.now(dt.timezone.utc)))
        raise
    result = json.loads(json.dumps(result, default=_plain))
    with engine.begin() as c:
        c.execute(update(PipelineRun).where(PipelineRun.run_key == key)
                  .values(status=RunStatus.SUCCEEDED, result=result,
                          finished_at=dt.datetime.now(dt.timezone.utc)))
    return result


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


# --- the round's context ---------------------------------------------------------------------------
@dataclass
class RoundContext:
    """What the steps need, built once from the settings (the composition root)."""

    settings: Any  # pipelines.settings.Settings
    dataset: str
    round_number: int
    seed: int = 0
    engine: Any = None
    blobs: Any = None
    _client: Any = None
    _models: dict = field(default_factory=dict)

    @classmethod
    def build(cls, settings, dataset: str, round_number: int, seed: int = 0) -> "RoundContext":
        return cls(settings=settings, dataset=dataset, round_number=round_number, seed=seed,
                   engine=settings.engine(), blobs=settings.blob_store())

    @property
    def registry(self):
        from models.registry import ModelRegistry

        return ModelRegistry(self.engine, self.blobs)

    @property
    def client(self):
        if self._client is None:
            from annotation.labelstudio import LabelStudioClient

            s = self.settings
            self._client = LabelStudioClient(s.label_studio_url, s.label_studio_token.get_secret_value())
        return self._client

    @property
    def work(self) -> Path:
        return self.settings.ensure_work_dir().resolve()

    def key(self, step: str) -> str:
        return run_key(self.dataset, self.round_number, step)

    def result(self, step: str) -> dict:
        r = step_result(self.engine, self.key(step))
        if r is None:
            raise RuntimeError(f"{self.key(step)} has not run yet")
        return r

    def segmenter(self, version: str | None = None):
        """The SAM 2 of a registry version (default: production), cached per version."""
        from pipelines.sam2_runtime import SAM2_FAMILY, ensure_base_model, load_sam2

        reg = self.registry
        if version is None:
            ensure_base_model(reg)
            version = reg.production(SAM2_FAMILY).version
        if version not in self._models:
            self._models[version] = load_sam2(reg, version=version,
                                              cache_dir=self.work / "cache" / "models",
                                              device=self.settings.device)
        return self._models[version]


def round_video_seed(seed: int, round_number: int) -> int:
    """Dataset seed of a round's new videos (far from the validation seed)."""
    return 10_000 + 1_000 * int(seed) + int(round_number)


def _ground_truth(ctx: RoundContext, gt_uri: str):
    from storage.synthetic.dataset import parse_ground_truth

    doc = json.loads(ctx.blobs.get_bytes(ctx.blobs.key_for_uri(gt_uri)))
    return parse_ground_truth(doc, where=gt_uri)


def _round_videos(ctx: RoundContext, video_ids) -> list:
    from storage.db import session_scope
    from storage.schema import Video

    with session_scope(ctx.engine) as s:
        rows = list(s.scalars(select(Video).where(Video.id.in_(list(video_ids))).order_by(Video.id)))
        s.expunge_all()
    return rows


def _frames(ctx: RoundContext, video) -> np.ndarray:
    import tempfile

    from pipelines.preannotate import load_video_frames

    return load_video_frames(ctx.blobs, video, Path(tempfile.mkdtemp(prefix="dataengine-round-")))


# --- 1. ingest -------------------------------------------------------------------------------------
def ingest_step(ctx: RoundContext) -> dict:
    """New synthetic videos of the target domain (seeded per round), ingested; the round row."""
    from pipelines.ingest import get_or_create_dataset, ingest_videos
    from pipelines.sam2_runtime import SAM2_FAMILY, ensure_base_model
    from storage.db import session_scope
    from storage.schema import AnnotationRound, RoundStatus
    from storage.synthetic.dataset import write_video
    from storage.synthetic.videos import generate_videos

    s = ctx.settings
    vseed = round_video_seed(ctx.seed, ctx.round_number)
    src = ctx.work / "rounds" / ctx.dataset / f"round{ctx.round_number}"
    for v in generate_videos(vseed, s.round_videos, domain=s.round_domain, frames=s.round_frames,
                             objects=s.round_objects):
        write_video(v, src)
    rep = ingest_videos(ctx.engine, ctx.blobs, str(src), ctx.dataset)
    failed = [i for i in rep.items if i.status == "failed"]
    if failed:
        raise RuntimeError(f"ingest failed: {[(i.source, i.reason) for i in failed]}")
    ensure_base_model(ctx.registry)
    prod = ctx.registry.production(SAM2_FAMILY)
    ds_id = get_or_create_dataset(ctx.engine, ctx.dataset)
    with session_scope(ctx.engine) as ss:
        rnd = ss.scalar(select(AnnotationRound).where(AnnotationRound.dataset_id == ds_id,
                                                      AnnotationRound.number == ctx.round_number))
        if rnd is None:
            rnd = AnnotationRound(dataset_id=ds_id, number=ctx.round_number,
                                  model_version_id=prod.id, status=RoundStatus.RUNNING,
                                  started_at=dt.datetime.now(dt.timezone.utc),
                                  settings={"video_seed": vseed, "iou_threshold": s.iou_threshold,
                                            "domain": s.round_domain})
            ss.add(rnd)
            ss.flush()
        round_id = rnd.id
    new_ids = sorted(i.video_id for i in rep.items)
    requeued = requeued_videos(ctx, round_id, exclude=new_ids)
    return {"video_ids": sorted(new_ids + requeued), "new_video_ids": new_ids,
            "requeued_video_ids": requeued, "round_id": round_id,
            "model_version": prod.version, "model_version_id": prod.id, "video_seed": vseed}


def requeued_videos(ctx: RoundContext, round_id: int, exclude: list[int]) -> list[int]:
    """Videos of earlier rounds that go through this round again: a masklet was sent back at the
    previous round's verification, or curators tagged them ``reannotate`` / ``needs-review`` in
    FiftyOne (those tags are consumed by this round; a re-run sees the same set)."""
    from pipelines.curation import consume_tags, videos_to_requeue
    from storage.schema import AnnotationRound, Dataset, Masklet, MaskletStatus, SourceKind, Video

    tagged = videos_to_requeue(ctx.engine, ctx.dataset, consumed_by_round_id=round_id)
    with ctx.engine.connect() as c:
        sent_back = set(c.scalars(
            select(Masklet.video_id).distinct()
            .join(AnnotationRound, AnnotationRound.id == Masklet.round_id)
            .join(Video, Video.id == Masklet.video_id)
            .join(Dataset, Dataset.id == Video.dataset_id)
            .where(Dataset.name == ctx.dataset, AnnotationRound.number == ctx.round_number - 1,
                   Masklet.source_kind == SourceKind.REPROPAGATED,
                   Masklet.status == MaskletStatus.IN_REVIEW)))
    if tagged:
        consume_tags(ctx.engine, ctx.dataset, round_id, video_ids=tagged)
    return sorted((set(tagged) | sent_back) - set(exclude))


# --- 2. pre-annotate -------------------------------------------------------------------------------
def first_frame_prompts(gt, threshold: float):
    """The annotator's first-frame masks (one per object visible on frame 0) and their cost in
    polygon vertices (fewest that reach the threshold)."""
    from annotation.scripted_annotator import min_polygon
    from models.sam2.predict import Prompt

    prompts, vertices = [], 0
    for k, oid in enumerate(gt.object_ids):
        m = gt.masks[0, k]
        if m.sum() < 16:
            continue
        prompts.append(Prompt(object_id=int(oid), frame_index=0, mask=m))
        vertices += min_polygon(m, threshold)[1]
    return prompts, vertices


def preannotate_step(ctx: RoundContext) -> dict:
    """SAM 2 (the round's production version) propagates the annotator's first-frame masks on new
    videos; a requeued video starts from its latest corrected or verified masklets instead (no
    first-frame drawing)."""
    from pipelines.preannotate import preannotate_video, prompts_from_previous_round

    ing = ctx.result("ingest")
    requeued = set(ing.get("requeued_video_ids") or [])
    loaded = ctx.segmenter(ing["model_version"])
    out = {"videos": {}, "first_frame_vertices": 0, "first_frame_masks": 0, "requeued_prompts": 0}
    for v in _round_videos(ctx, ing["video_ids"]):
        prompts = []
        if v.id in requeued:
            with ctx.engine.connect() as c:
                prompts = prompts_from_previous_round(c, v.id)
            out["requeued_prompts"] += len(prompts)
        drawn = not prompts  # the annotator draws the first frame of a new video
        vertices = 0
        if drawn:
            prompts, vertices = first_frame_prompts(_ground_truth(ctx, v.ground_truth_uri),
                                                    ctx.settings.iou_threshold)
        o = preannotate_video(ctx.engine, ctx.blobs, loaded.segmenter, v,
                              model_version_id=ing["model_version_id"], round_id=ing["round_id"],
                              prompts=prompts)
        if o.error:
            raise RuntimeError(f"pre-annotation of {v.uri} failed: {o.error}")
        out["videos"][str(v.id)] = {"masklets": o.masklets, "frames": o.frames}
        out["first_frame_vertices"] += vertices
        out["first_frame_masks"] += len(prompts) if drawn else 0
    return out


# --- 3. push ---------------------------------------------------------------------------------------
def _round_model_masklets(ing: dict, source_kind: str) -> tuple:
    """WHERE terms selecting the round model's masklets of one kind: its first predictions
    (``model``) or its re-propagation of the corrected frames (``repropagated``)."""
    from storage.schema import Masklet

    return (Masklet.round_id == ing["round_id"],
            Masklet.source_model_version_id == ing["model_version_id"],
            Masklet.source_kind == source_kind)


def _chunk_tasks(ctx: RoundContext, kind: str, source_kind: str) -> list:
    """One chunk task of ``kind`` per video chunk of the round, predicting the round model's
    masklets of ``source_kind`` (its first predictions for correction, its re-propagation of the
    corrected frames for verification); frames written once under the media root."""
    from annotation.labelstudio import ChunkObject, ChunkTask, chunk_ranges, write_frames
    from storage.masklets import masklet_frames
    from storage.masks import decode_rle
    from storage.schema import Masklet

    s = ctx.settings
    ing = ctx.result("ingest")
    media = s.resolved_media_root
    chunks = []
    for v in _round_videos(ctx, ing["video_ids"]):
        name = Path(v.uri).stem.replace("/", "_")
        with ctx.engine.connect() as c:
            rows = c.execute(select(Masklet.id, Masklet.object_id, Masklet.label)
                             .where(Masklet.video_id == v.id, *_round_model_masklets(ing, source_kind))
                             .order_by(Masklet.object_id)).all()
            masks = {r.id: {t: decode_rle(rle) for t, rle in masklet_frames(c, r.id).items()}
                     for r in rows}
        objs = [ChunkObject(slot=i + 1, object_id=r.object_id, label=r.label, masklet_id=r.id)
                for i, r in enumerate(rows)]
        if not objs:
            continue
        urls = write_frames(_frames(ctx, v), media, f"{ctx.dataset}/{name}")
        for ci, (a, b) in enumerate(chunk_ranges(v.frame_count, s.chunk_frames)):
            pred = {(o.slot, t - a): masks[o.masklet_id][t] for o in objs for t in range(a, b)
                    if t in masks[o.masklet_id] and masks[o.masklet_id][t].any()}
            chunks.append(ChunkTask(dataset=ctx.dataset, video=name, chunk_index=ci, frame_start=a,
                                    frame_stop=b, round_number=ctx.round_number, kind=kind,
                                    width=v.width, height=v.height, frame_urls=urls[a:b], objects=objs,
                                    predicted=pred, model_version=f"sam2/{ing['model_version']}",
                                    video_id=v.id, round_id=ing["round_id"]))
    return chunks


def _import(ctx: RoundContext, kind: str, chunks: list) -> dict:
    """Import ``chunks`` into the dataset's project of ``kind`` (idempotent through the database's
    keys: a re-run creates no second task)."""
    from annotation.labelstudio import import_chunk_tasks

    s = ctx.settings
    store_dir = s.resolved_media_root / ctx.dataset
    store_dir.mkdir(parents=True, exist_ok=True)
    project = ctx.client.ensure_project(ctx.dataset, kind, max(1, s.round_objects))
    ctx.client.ensure_local_storage(project.id, store_dir)
    rep = import_chunk_tasks(ctx.client, project.id, chunks, engine=ctx.engine,
                             batch_size=s.label_studio_import_batch_size)
    if rep.failed:
        raise RuntimeError(f"Label Studio import into the {kind} project failed for "
                           f"{len(rep.failed)} tasks")
    return {"project_id": project.id, "tasks": rep.task_ids}


def push_step(ctx: RoundContext) -> dict:
    """One correction chunk task per video chunk, frames served by Label Studio; idempotent."""
    from annotation.labelstudio.label_config import CORRECTION

    return _import(ctx, CORRECTION, _chunk_tasks(ctx, CORRECTION, "model"))


# --- 4. annotate (and wait) ------------------------------------------------------------------------
def _annotate_and_wait(ctx: RoundContext, task_ids: list[int]) -> dict:
    """The scripted annotator works the tasks (correction: `interactive` mode, SAM 2 clicks with the
    round's model; verification: a verdict per masklet); then wait until every task has an
    annotation (poll, timeout). With ``annotator="human"`` it only waits: a later run picks up
    where this one stopped."""
    from annotation.scripted_annotator import Sam2ClickRefiner, ScriptedAnnotator, ScriptedAnnotatorConfig

    s = ctx.settings
    ing = ctx.result("ingest")
    summary = {"tasks": len(task_ids), "submitted": 0, "clicks": 0, "masks_drawn": 0}
    if s.annotator == "scripted":
        loaded = ctx.segmenter(ing["model_version"])
        bot = ScriptedAnnotator(ctx.client, refiner=Sam2ClickRefiner(loaded.segmenter),
                                config=ScriptedAnnotatorConfig(iou_threshold=s.iou_threshold,
                                                               click_limit=s.click_limit,
                                                               click_patience=s.click_patience))
        gts = {}
        for v in _round_videos(ctx, ing["video_ids"]):
            gts[Path(v.uri).stem] = _ground_truth(ctx, v.ground_truth_uri)
        for tid in task_ids:
            task = ctx.client.get_task(tid)
            gt = gts.get(task["data"].get("video"))
            if gt is None:
                continue
            o = bot.annotate_task(tid, gt)
            if o.annotation_id is not None:
                summary["submitted"] += 1
                summary["clicks"] += o.clicks
                summary["masks_drawn"] += o.masks_drawn
    deadline = time.monotonic() + s.annotation_timeout_s
    while True:
        pending = [t for t in task_ids
                   if not any(not a.get("was_cancelled") for a in ctx.client.list_annotations(t))]
        if not pending:
            return summary
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(task_ids)} tasks still without annotation "
                               f"after {s.annotation_timeout_s:.0f} s; run the round again later")
        time.sleep(s.annotation_poll_s)


def annotate_step(ctx: RoundContext) -> dict:
    """Correction of the pushed chunk tasks (scripted annotator or people), then wait."""
    return _annotate_and_wait(ctx, sorted(int(t) for t in ctx.result("push")["tasks"].values()))


# --- 5. sync ---------------------------------------------------------------------------------------
def sync_step(ctx: RoundContext) -> dict:
    from annotation.labelstudio.sync import AnnotationSync

    push = ctx.result("push")
    return AnnotationSync(ctx.engine).sync_project(ctx.client, int(push["project_id"])).as_dict()


# --- 6. re-propagate -------------------------------------------------------------------------------
def _corrected(ctx: RoundContext, video_id: int, round_id: int) -> dict[int, np.ndarray]:
    """object_id -> corrected masks bool[T,H,W] of this round (the annotators' work)."""
    from storage.masklets import masklet_frames
    from storage.masks import decode_rle
    from storage.schema import Masklet, SourceKind, Video

    out = {}
    with ctx.engine.connect() as c:
        v = c.execute(select(Video.frame_count, Video.height, Video.width).where(Video.id == video_id)).one()
        rows = c.execute(select(Masklet.id, Masklet.object_id)
                         .where(Masklet.video_id == video_id, Masklet.round_id == round_id,
                                Masklet.source_kind.in_([SourceKind.HUMAN, SourceKind.SCRIPTED_ANNOTATOR]))
                         .order_by(Masklet.object_id, Masklet.id)).all()
        for r in rows:
            arr = out.setdefault(r.object_id, np.zeros((v.frame_count, v.height, v.width), bool))
            for t, rle in masklet_frames(c, r.id).items():
                arr[t] = decode_rle(rle)
    return out


def _predicted(ctx: RoundContext, video_id: int, round_id: int, mv_id: int) -> dict[int, np.ndarray]:
    from storage.masklets import masklet_frames
    from storage.masks import decode_rle
    from storage.schema import Masklet, Video

    out = {}
    with ctx.engine.connect() as c:
        v = c.execute(select(Video.frame_count, Video.height, Video.width).where(Video.id == video_id)).one()
        for r in c.execute(select(Masklet.id, Masklet.object_id)
                           .where(Masklet.video_id == video_id, Masklet.round_id == round_id,
                                  Masklet.source_kind == "model",
                                  Masklet.source_model_version_id == mv_id)):
            arr = np.zeros((v.frame_count, v.height, v.width), bool)
            for t, rle in masklet_frames(c, r.id).items():
                arr[t] = decode_rle(rle)
            out[r.object_id] = arr
    return out


def repropagate_step(ctx: RoundContext) -> dict:
    """Frames a person corrected become mask prompts (kept exactly as drawn); SAM 2 propagates the
    rest of each masklet again (as in the SAM 2 engine, where edits are propagated, not drawn
    frame by frame). The result is stored as the round model's ``repropagated`` masklets,
    awaiting verification (one transaction per video). A video that already has them is skipped:
    after a kill they may be in verification tasks already, which refer to them by id."""
    from models.sam2.automatic import track_prompts
    from models.sam2.predict import Prompt
    from pipelines.preannotate import to_records
    from storage.db import session_scope
    from storage.masklets import replace_model_masklets
    from storage.schema import Masklet, MaskletStatus, SourceKind

    ing = ctx.result("ingest")
    loaded = ctx.segmenter(ing["model_version"])
    masklets = prompts_used = 0
    for v in _round_videos(ctx, ing["video_ids"]):
        with ctx.engine.connect() as c:
            done = c.scalar(select(func.count()).select_from(Masklet).where(
                Masklet.video_id == v.id, *_round_model_masklets(ing, SourceKind.REPROPAGATED)))
        if done:
            masklets += done
            continue
        corrected = _corrected(ctx, v.id, ing["round_id"])
        predicted = _predicted(ctx, v.id, ing["round_id"], ing["model_version_id"])
        prompts = []
        for oid, cm in corrected.items():
            pm = predicted.get(oid)
            ts = [0] + [t for t in range(1, cm.shape[0])
                        if pm is None or not np.array_equal(cm[t], pm[t])]
            prompts += [Prompt(object_id=oid, frame_index=t, mask=cm[t]) for t in ts if cm[t].any()]
        if not prompts:
            continue
        prompts_used += len(prompts)
        source = loaded.segmenter.frame_source(_frames(ctx, v), where=v.uri)
        result = track_prompts(loaded.segmenter, source, prompts, where=v.uri)
        labels = _labels(ctx, v.id, ing["round_id"])
        with session_scope(ctx.engine) as ss:
            ids = replace_model_masklets(ss.connection(), video_id=v.id,
                                         model_version_id=ing["model_version_id"],
                                         round_id=ing["round_id"], records=to_records(result, labels),
                                         status=MaskletStatus.IN_REVIEW,
                                         source_kind=SourceKind.REPROPAGATED)
        masklets += len(ids)
    return {"masklets": masklets, "prompts": prompts_used}


def _labels(ctx: RoundContext, video_id: int, round_id: int) -> dict[int, str]:
    from storage.schema import Masklet

    with ctx.engine.connect() as c:
        return dict(c.execute(select(Masklet.object_id, Masklet.label)
                              .where(Masklet.video_id == video_id, Masklet.round_id == round_id)).all())


# --- 6b. verification --------------------------------------------------------------------------------
def verify_step(ctx: RoundContext) -> dict:
    """The re-propagated masklets go to verification in Label Studio (a verdict per masklet and
    chunk: satisfactory / unsatisfactory); the verdicts are synced exactly once. Unsatisfactory
    anywhere sends the masklet back to correction (status ``in_review``: the next round queues its
    video again). Every part is idempotent, so a re-run after a kill resumes."""
    from annotation.labelstudio.label_config import VERIFICATION
    from annotation.labelstudio.sync import AnnotationSync
    from storage.schema import Masklet, MaskletStatus, SourceKind

    ing = ctx.result("ingest")
    pushed = _import(ctx, VERIFICATION, _chunk_tasks(ctx, VERIFICATION, SourceKind.REPROPAGATED))
    task_ids = sorted(int(t) for t in pushed["tasks"].values())
    _annotate_and_wait(ctx, task_ids)
    sync = AnnotationSync(ctx.engine).sync_project(ctx.client, int(pushed["project_id"]))
    if sync.invalid:
        raise RuntimeError(f"verification annotations rejected by validation: {sync.invalid}")
    with ctx.engine.connect() as c:
        rows = c.execute(select(Masklet.id, Masklet.video_id, Masklet.object_id, Masklet.status)
                         .where(*_round_model_masklets(ing, SourceKind.REPROPAGATED))).all()
    accepted = [r for r in rows if r.status == MaskletStatus.VERIFIED]
    sent_back = [{"masklet_id": r.id, "video_id": r.video_id, "object_id": r.object_id}
                 for r in rows if r.status != MaskletStatus.VERIFIED]
    return {"project_id": pushed["project_id"], "tasks": pushed["tasks"], "masklets": len(rows),
            "accepted_first_pass": len(accepted), "sent_back": sent_back,
            "accepted_first_pass_pct": round(100.0 * len(accepted) / len(rows), 1) if rows else None}


# --- 7. train on Ray -------------------------------------------------------------------------------
def training_videos(ctx: RoundContext) -> tuple[list, list[int]]:
    """Every corrected / verified masklet of the dataset so far, as training videos; round ids."""
    from models.training import TrainVideo
    from storage.schema import AnnotationRound, Dataset, Masklet, SourceKind, Video

    with ctx.engine.connect() as c:
        rows = c.execute(select(Masklet.video_id, Masklet.round_id).distinct()
                         .join(Video, Video.id == Masklet.video_id)
                         .join(Dataset, Dataset.id == Video.dataset_id)
                         .join(AnnotationRound, AnnotationRound.id == Masklet.round_id)
                         .where(Dataset.name == ctx.dataset,
                                AnnotationRound.number <= ctx.round_number,
                                Masklet.source_kind.in_([SourceKind.HUMAN, SourceKind.SCRIPTED_ANNOTATOR]),
                                Masklet.status.in_(["corrected", "verified"]))).all()
    vids, rounds = [], set()
    by_video: dict[int, list[int]] = {}
    for vid, rid in rows:
        by_video.setdefault(vid, []).append(rid)
        rounds.add(rid)
    for v in _round_videos(ctx, sorted(by_video)):
        masks = {}
        for rid in by_video[v.id]:
            masks.update(_corrected(ctx, v.id, rid))
        if not masks:
            continue
        arr = np.stack([masks[k] for k in sorted(masks)], axis=1)  # [T,O,H,W]
        vids.append(TrainVideo(Path(v.uri).stem, _frames(ctx, v), arr))
    return vids, sorted(rounds)


def training_budget(s) -> dict:
    """What one round's fine-tuning may spend (settings), stored with the candidate and reported."""
    return {"image_steps": s.train_image_steps, "video_steps": s.train_video_steps,
            "clip_frames": s.train_clip_frames or s.round_frames,
            "clips_per_step": s.train_clips_per_step, "workers": s.ray_num_workers}


def train_step(ctx: RoundContext) -> dict:
    """Fine-tune the round's production model on Ray; register ONE candidate version per training
    (a re-run after a kill finds the version by its run key and does not train again)."""
    from models.sam2.train import TrainConfig
    from models.training import RayClusterSpec, train_on_ray
    from pipelines.sam2_runtime import SAM2_FAMILY

    s = ctx.settings
    ing = ctx.result("ingest")
    key = ctx.key("train")
    reg = ctx.registry
    for info in reg.list(SAM2_FAMILY):
        if (info.config or {}).get("run_key") == key:
            return {"candidate": info.version, "reused": True, "metrics": info.metrics,
                    "budget": (info.metrics or {}).get("budget")}
    videos, rounds = training_videos(ctx)
    if not videos:
        return {"candidate": None, "reason": "no corrected masklets yet"}
    parent = ctx.segmenter(ing["model_version"])
    budget = training_budget(s)
    cfg = TrainConfig(init_checkpoint=str(parent.checkpoint), config=parent.config,
                      seed=round_video_seed(ctx.seed, ctx.round_number) + 5,
                      domain="base", pool_size=16, video_frames=s.round_frames,
                      image_steps=budget["image_steps"], image_batch=8, image_lr=5e-4,
                      video_steps=budget["video_steps"], clips_per_step=budget["clips_per_step"],
                      clip_frames=budget["clip_frames"],
                      video_lr=3e-4, warmup_steps=5, replay_fraction=s.train_replay_fraction,
                      val_videos=2, val_every=10**9, checkpoint_every=10**9, log_every=10,
                      balance_memory=False, threads=1)
    cluster = RayClusterSpec(address=s.ray_address, num_cpus=s.ray_num_cpus,
                             object_store_mb=s.ray_object_store_mb, num_workers=budget["workers"],
                             gpu_per_worker=s.gpu_per_worker, env=s.ray_env())
    res = train_on_ray(cfg, videos, ctx.blobs, cluster=cluster,
                       storage_dir=ctx.work / "ray" / ctx.dataset,
                       name=f"{ctx.dataset}-round{ctx.round_number}")
    metrics = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str))}
    metrics["budget"] = budget
    info = reg.register(SAM2_FAMILY, res.checkpoint_path,
                        config={"config": parent.config, "run_key": key},
                        metrics=metrics, parent_version=ing["model_version"], rounds=rounds,
                        notes=f"fine-tuned on rounds {rounds} of {ctx.dataset} (Ray Train)")
    return {"candidate": info.version, "reused": False, "rounds": rounds,
            "train_videos": len(videos), "seconds": res.seconds, "budget": budget}


# --- 8. the gate -----------------------------------------------------------------------------------
def validation_spec(settings):
    from models.sam2.evaluate import EvalSpec

    return EvalSpec(seed=settings.val_seed, videos=settings.val_videos, domain=settings.round_domain,
                    frames=settings.round_frames, objects=settings.round_objects, auto=False)


def evaluate_version(ctx: RoundContext, version: str) -> dict:
    """Validation metrics of a registry version (stored in its metrics under the split's name)."""
    from models.sam2.evaluate import evaluate
    from pipelines.sam2_runtime import SAM2_FAMILY

    spec = validation_spec(ctx.settings)
    name = f"val_seed{spec.seed}_n{spec.videos}_{spec.domain}"
    info = ctx.registry.get(SAM2_FAMILY, version)
    cached = (info.metrics or {}).get(name)
    if cached:
        return cached
    res = evaluate(ctx.segmenter(version).segmenter, spec, model_version=version)
    ctx.registry.update_metrics(SAM2_FAMILY, version, {name: res})
    return res


def gate(candidate: dict, production: dict, metric: str, margin: float) -> bool:
    c, p = candidate.get(metric), production.get(metric)
    return c is not None and p is not None and c > p + margin


def gate_step(ctx: RoundContext, candidate: str | None = None) -> dict:
    """Evaluate candidate vs production on the fixed validation split; promote only if better by
    the margin (``gate_metric``, ``gate_margin``)."""
    from pipelines.sam2_runtime import SAM2_FAMILY

    s = ctx.settings
    if candidate is None:
        candidate = ctx.result("train").get("candidate")
    prod = ctx.registry.production(SAM2_FAMILY).version
    prod_m = evaluate_version(ctx, prod)
    if candidate is None:
        return {"promoted": False, "production": prod, "val": prod_m, "candidate": None}
    cand_m = evaluate_version(ctx, candidate)
    ok = candidate != prod and gate(cand_m, prod_m, s.gate_metric, s.gate_margin)
    if ok:
        ctx.registry.promote(SAM2_FAMILY, candidate)
    return {"promoted": ok, "candidate": candidate, "production_before": prod,
            "production": candidate if ok else prod, "metric": s.gate_metric,
            "margin": s.gate_margin, "candidate_val": cand_m, "production_val": prod_m,
            "val": cand_m if ok else prod_m}


# --- 9. effort -------------------------------------------------------------------------------------
def round_effort(ctx: RoundContext) -> dict:
    """The round's effort in `interactive` mode: the annotator's first-frame polygons plus the
    scripted annotator's work in Label Studio (read back from its annotations' markers)."""
    from annotation.labelstudio.effort import TimeModel, split_marker

    s = ctx.settings
    push, pre = ctx.result("push"), ctx.result("preannotate")
    tm = TimeModel()
    frames = edited = clicks = 0
    seconds = 0.0
    for t, a in _latest_annotations(ctx, push):
        _, marker = split_marker(a.get("result"))
        n_obj = len((t.get("data") or {}).get("objects") or [])
        n_frames = len((t.get("data") or {}).get("frames") or [])
        frames += n_obj * n_frames
        seconds += float(a.get("lead_time") or 0.0)
        if marker is not None:
            for e in marker.objects.values():
                edited += e.frames_corrected
                clicks += e.clicks + e.vertices
    # The first frame of every masklet was drawn by the annotator (polygon) before propagation.
    ff_frames = int(pre.get("first_frame_masks", 0))
    ff_vertices = int(pre.get("first_frame_vertices", 0))
    # Frame 0 can be counted twice (drawn, then corrected in Label Studio when SAM 2's output on
    # the prompted frame falls below the threshold): edited frames are capped at the total.
    edited = min(frames, edited + ff_frames)
    clicks += ff_vertices
    seconds += tm.mask_setup_s * ff_frames + tm.vertex_s * ff_vertices
    return effort_row(frames, edited, clicks, seconds)


def _latest_annotations(ctx: RoundContext, pushed: dict):
    """(task, its newest live annotation) for the tasks a push step created, from one export."""
    ours = {str(v) for v in pushed["tasks"].values()}
    for t in ctx.client.export_snapshot(int(pushed["project_id"])):
        if str(t.get("id")) not in ours:
            continue
        anns = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        if anns:
            yield t, max(anns, key=lambda a: a.get("id", 0))


def verification_seconds(ctx: RoundContext) -> float:
    """Label Studio's lead_time of the round's verification annotations (simulated by the scripted
    annotator's time model on synthetic data)."""
    return float(sum(float(a.get("lead_time") or 0.0)
                     for _, a in _latest_annotations(ctx, ctx.result("verify"))))


def effort_step(ctx: RoundContext) -> dict:
    from storage.db import session_scope
    from storage.schema import AnnotationRound, RoundStatus

    eff = round_effort(ctx)
    ing, gate_r, rep = ctx.result("ingest"), ctx.result("gate"), ctx.result("verify")
    train = ctx.result("train")
    row = {"round": ctx.round_number, "mode": "interactive", **eff,
           "accepted_first_pass_pct": rep.get("accepted_first_pass_pct"),
           "verification_seconds_per_frame": (round(verification_seconds(ctx) / eff["frames"], 3)
                                              if eff["frames"] else None),
           "val_jf": (gate_r.get("val") or {}).get("jf_mask"),
           "round_model_val_jf": (gate_r.get("production_val") or {}).get("jf_mask"),
           "candidate_val_jf": (gate_r.get("candidate_val") or {}).get("jf_mask"),
           "promoted": bool(gate_r.get("promoted")),
           "model_version": gate_r.get("production"),
           "annotated_with": ing["model_version"],
           "videos": len(ing["video_ids"]),
           "requeued_videos": len(ing.get("requeued_video_ids") or []),
           # a re-run that found the round's candidate already trained has no seconds of its own
           "train_seconds": (round(train["seconds"], 1) if train.get("seconds") is not None
                             else None),
           # what the candidate was trained with (stored with it), not today's settings; None
           # when the round trained nothing
           "train_budget": train.get("budget")}
    with session_scope(ctx.engine) as s:
        rnd = s.get(AnnotationRound, ing["round_id"])
        rnd.status = RoundStatus.COMPLETED
        rnd.finished_at = dt.datetime.now(dt.timezone.utc)
        rnd.settings = {**(rnd.settings or {}), "effort": row}
    return row


STEP_FUNCTIONS: dict[str, Callable[[RoundContext], dict]] = {
    "ingest": ingest_step, "preannotate": preannotate_step, "push": push_step,
    "annotate": annotate_step, "sync": sync_step, "repropagate": repropagate_step,
    "verify": verify_step,
    "train": train_step, "gate": gate_step, "effort": effort_step,
}


def run_round_step(ctx: RoundContext, step: str) -> dict:
    return run_step(ctx.engine, ctx.dataset, ctx.round_number, step,
                    lambda: STEP_FUNCTIONS[step](ctx), params={"seed": ctx.seed})


def run_round(settings, dataset: str, round_number: int, seed: int = 0,
              steps: tuple[str, ...] = STEPS) -> dict:
    """One round without Prefect (the flow calls the same steps)."""
    ctx = RoundContext.build(settings, dataset, round_number, seed)
    out = {}
    for step in steps:
        out[step] = run_round_step(ctx, step)
    return out


# --- the modes (Table 1 style) ---------------------------------------------------------------------
def modes_step(ctx: RoundContext) -> dict:
    """The three modes measured on this round's videos with the round's model (not through LS)."""
    from storage.synthetic.videos import generate_videos

    s = ctx.settings
    ing = ctx.result("ingest")
    vids = generate_videos(ing["video_seed"], s.round_videos, domain=s.round_domain,
                           frames=s.round_frames, objects=s.round_objects)
    return measure_modes(ctx.segmenter(ing["model_version"]).segmenter, vids,
                         threshold=s.iou_threshold, click_limit=s.click_limit,
                         click_patience=s.click_patience)


STEP_FUNCTIONS["modes"] = modes_step


# --- N rounds (the demo's measurement) -------------------------------------------------------------
def run_rounds(settings, rounds: int, seed: int, *, dataset: str | None = None,
               use_prefect: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """``rounds`` rounds, then the report. Returns the JSON shape of ``dataengine demo --json``:
    {"modes": {manual|propagate|interactive: row}, "rounds": [row...], "report": PATH}."""
    dataset = dataset or f"loop-seed{seed}"
    rows = []
    modes = None
    for n in range(1, rounds + 1):
        round_started = time.time()
        if progress:
            progress(f"round {n}/{rounds} of {dataset}: ingest -> pre-annotate -> Label Studio -> "
                     "scripted annotator -> sync -> re-propagate -> verify -> train (Ray) -> gate -> effort")
        if use_prefect:
            from pipelines.flows.round import data_engine_round

            data_engine_round(dataset=dataset, round_number=n, seed=seed)
        else:
            run_round(settings, dataset, n, seed)
        ctx = RoundContext.build(settings, dataset, n, seed)
        if n == 1:
            if progress:
                progress("measuring the three annotation modes on round 1's videos")
            modes = run_round_step(ctx, "modes")
        rows.append(ctx.result("effort"))
        if progress:
            r = rows[-1]
            progress(f"round {n} done in {time.time() - round_started:.0f} s: "
                     f"{r.get('frames_edited_pct')}% frames edited, "
                     f"{r.get('clicks_per_frame')} clicks/frame, promoted: {r.get('promoted')}")
    from pipelines.effort_report import write_report

    report = write_report(settings, dataset, modes or {}, rows)
    keys = ("round", "frames_edited_pct", "clicks_per_frame", "clicks_per_edited_frame",
            "seconds_per_frame", "val_jf", "promoted", "model_version", "accepted_first_pass_pct",
            "verification_seconds_per_frame", "videos", "requeued_videos", "train_seconds",
            "train_budget")
    mode_keys = ("frames_edited_pct", "clicks_per_frame", "clicks_per_edited_frame",
                 "seconds_per_frame")
    return {"modes": {m: {k: r.get(k) for k in mode_keys} | {"val_jf": rows[0].get("round_model_val_jf") if rows else None}
                      for m, r in (modes or {}).items()},
            "rounds": [{k: r.get(k) for k in keys} for r in rows],
            "report": str(report["html"])}
