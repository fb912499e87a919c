"""The scripted annotator on synthetic videos with ground truth, against the REAL Label Studio
server (frames served by it, annotations submitted through its API) and the database sync."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import func, select

from annotation.labelstudio import CORRECTION, VERIFICATION, write_frames
from annotation.labelstudio.effort import TimeModel
from annotation.labelstudio.sync import AnnotationSync
from annotation.scripted_annotator import (
    Sam2ClickRefiner,
    ScriptedAnnotator,
    ScriptedAnnotatorConfig,
    min_polygon,
    next_click,
    refine_with_clicks,
)
from storage.masks import decode_rle, mask_iou
from storage.schema import ActorKind, EffortEvent, EffortMode, FrameMask, Masklet, MaskletStatus, SourceKind
from storage.synthetic.dataset import ground_truth_dict, parse_ground_truth
from storage.synthetic.videos import generate_video
from tests.annotation.sync_helpers import make_setup

SIZE, FRAMES, CHUNK = 64, 8, 4
BAD = {(1, 1), (1, 6)}  # (object id, frame) whose prediction is off


def test_clicks_go_to_the_centre_of_the_largest_error_region_and_polygons_count_vertices():
    target = np.zeros((40, 40), bool)
    target[5:35, 5:35] = True
    current = target.copy()
    current[5:20, 20:35] = False  # a missed 15 x 15 corner
    current[0:3, 0:3] = True  # a small false alarm
    x, y, positive = next_click(current, target)
    assert positive and (x, y) == (27, 12)  # the missed square's centre
    only_fp = target.copy()
    only_fp[36:40, 0:10] = True
    x, y, positive = next_click(only_fp, target)
    assert not positive and y >= 36
    assert next_click(target, target) is None
    assert min_polygon(target, 0.9)[1] == 4 and min_polygon(np.zeros((4, 4), bool), 0.9)[1] == 0
    ring = target.copy()
    ring[15:25, 15:25] = False
    assert min_polygon(ring, 0.9)[1] == 8  # the outline and the hole


class _ReplayRefiner:
    """Returns a fixed sequence of masks, one per click: the annotator's stopping rule is what is
    under test here, not a model (the SAM 2 refiner runs against the server below)."""

    def __init__(self, masks):
        self.masks = list(masks)
        self.calls = []

    def open(self, frame):
        return {}

    def click(self, session, obj, prior, points, labels):
        self.calls.append(len(points))
        return self.masks[len(self.calls) - 1]


def _square(x0: int) -> np.ndarray:
    m = np.zeros((40, 40), bool)
    m[10:30, x0:x0 + 20] = True
    return m


def test_annotator_gives_up_on_clicks_that_do_not_help_and_keeps_the_best_mask():
    target, prior = _square(10), _square(14)  # IoU 0.67
    better, worse = _square(12), _square(20)  # 0.82, 0.33
    # a click that makes it worse: one miss with patience 1, the prior is kept
    ref = _ReplayRefiner([worse, better, target])
    mask, clicks = refine_with_clicks(ref, {}, 1, prior, target, threshold=0.9, limit=5, patience=1)
    assert clicks == 1 and mask is prior and ref.calls == [1]
    # improving clicks go on until the threshold; every click so far is sent each time
    ref = _ReplayRefiner([better, target, worse])
    mask, clicks = refine_with_clicks(ref, {}, 1, prior, target, threshold=0.9, limit=5, patience=1)
    assert clicks == 2 and mask is ref.masks[1] and ref.calls == [1, 2]
    # patience 2 tolerates one miss; the best mask (not the last) is returned at the limit
    ref = _ReplayRefiner([better, worse, better, worse, worse])
    mask, clicks = refine_with_clicks(ref, {}, 1, prior, target, threshold=0.9, limit=3, patience=2)
    assert clicks == 3 and mask_iou(mask, target) == pytest.approx(mask_iou(better, target))
    # no patience: the whole limit is spent
    ref = _ReplayRefiner([worse] * 5)
    _, clicks = refine_with_clicks(ref, {}, 1, prior, target, threshold=0.9, limit=5, patience=None)
    assert clicks == 5
    ref = _ReplayRefiner([worse] * 5)  # 0 (the settings' spelling of "off") is the same
    _, clicks = refine_with_clicks(ref, {}, 1, prior, target, threshold=0.9, limit=5, patience=0)
    assert clicks == 5


def test_time_model_adds_up():
    tm = TimeModel()
    obj = tm.object_seconds(frames_checked=4, clicks=3, masks_drawn=1, vertices=10, verdicts=1)
    assert obj == pytest.approx(0.4 * 4 + 2.0 * 3 + 3.0 + 1.2 * 10 + 1.5)
    assert tm.lead_time(4, [obj, 1.0]) == pytest.approx(5.0 + 0.8 * 4 + obj + 1.0)


# --- against the server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video():
    v = generate_video(seed=11, size=SIZE, frames=FRAMES, objects=2, leave_prob=0.0)
    gt = parse_ground_truth(ground_truth_dict(v))
    assert all(gt.masks[:, k].any(axis=(1, 2)).all() for k in range(2)), "objects must stay visible"
    return v, gt


def _predicted(gt) -> dict:
    """Predictions: the ground truth, except object 1 shifted by 6 px on the BAD frames."""
    out = {}
    for k, oid in enumerate(gt.object_ids):
        m = gt.masks[:, k].copy()
        for o, t in BAD:
            if o == oid:
                m[t] = np.roll(m[t], 6, axis=1)
        out[(0, oid)] = m
    return out


def _setup(engine, ls_client, labelstudio, video, kind):
    v, gt = video
    name = f"sa{kind[0]}{uuid.uuid4().hex[:8]}"
    project = ls_client.ensure_project(name, kind, 2)
    ls_client.ensure_local_storage(project.id, labelstudio.media_root / name)
    urls = write_frames(v.frames, labelstudio.media_root, f"{name}/v0")
    return make_setup(engine, ls_client, name, frames=FRAMES, chunk_frames=CHUNK, height=SIZE,
                      width=SIZE, objects=2, kind=kind, masks=_predicted(gt), media_urls=[urls])


@pytest.fixture(scope="module")
def sam2_refiner():
    import torch

    from models.sam2.predict import VideoSegmenter
    from tests.models.conftest import build_random_predictor

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a training job shares this machine
    yield Sam2ClickRefiner(VideoSegmenter(build_random_predictor()))
    torch.set_num_threads(before)


@pytest.mark.labelstudio
@pytest.mark.sam2
def test_corrects_with_sam2_clicks_and_is_stored_as_the_scripted_annotator(
        labelstudio, ls_client, engine, video, sam2_refiner):
    _, gt = video
    setup = _setup(engine, ls_client, labelstudio, video, CORRECTION)
    cfg = ScriptedAnnotatorConfig(click_limit=2, click_patience=None)
    bot = ScriptedAnnotator(ls_client, refiner=sam2_refiner, config=cfg)
    outcomes = [bot.annotate_task(tid, gt) for _, tid in sorted(setup.task_ids.items())]
    assert all(o.annotation_id is not None for o in outcomes)
    by_frame = {}
    for c, o in enumerate(outcomes):
        assert o.matched == {1: 1, 2: 2} and o.verdicts == {1: "fixed", 2: "fixed"}
        for (slot, t), iou in o.iou_before.items():
            by_frame[(slot, c * CHUNK + t)] = iou
        assert all(v >= 0.9 for v in o.iou_after.values())  # every frame ends above the threshold
    assert {k for k, v in by_frame.items() if v < 0.9} == BAD
    # random SAM 2 weights never reach 0.9: both clicks are spent, then the mask is drawn by hand
    assert sum(o.clicks for o in outcomes) == 2 * len(BAD)
    assert sum(o.masks_drawn for o in outcomes) == len(BAD)
    for o in outcomes:
        eff = o.effort
        assert o.lead_time == pytest.approx(cfg.time_model.lead_time(
            CHUNK, [cfg.time_model.object_seconds(frames_checked=CHUNK, clicks=e.clicks,
                                                  masks_drawn=e.strokes, vertices=e.vertices,
                                                  verdicts=1) for e in eff.values()]))
        task = ls_client.get_task(o.task_id)
        assert task["annotations"][0]["lead_time"] == pytest.approx(o.lead_time)
    # a second run submits nothing
    again = bot.annotate_task(outcomes[0].task_id, gt)
    assert again.annotation_id is None
    assert len(ls_client.get_task(outcomes[0].task_id)["annotations"]) == 1

    rep = AnnotationSync(engine).sync_project(ls_client, setup.project_id)
    assert rep.applied == len(outcomes) and not rep.invalid
    with engine.connect() as c:
        kinds = dict(c.execute(select(Masklet.id, Masklet.source_kind)).all())
        assert set(kinds.values()) == {SourceKind.MODEL, SourceKind.SCRIPTED_ANNOTATOR}
        scripted = {oid: mid for mid, oid, sk, st in c.execute(
            select(Masklet.id, Masklet.object_id, Masklet.source_kind, Masklet.status))
            if sk == SourceKind.SCRIPTED_ANNOTATOR and st == MaskletStatus.CORRECTED}
        assert set(scripted) == {1, 2}
        for r in c.execute(select(FrameMask).where(FrameMask.masklet_id.in_(list(scripted.values())))):
            oid = next(o for o, m in scripted.items() if m == r.masklet_id)
            stored = decode_rle({"size": [r.height, r.width], "counts": r.rle_counts})
            assert mask_iou(stored, gt.masks[r.frame_index, oid - 1]) >= 0.9
        ev = c.execute(select(EffortEvent)).all()
        assert c.scalar(select(func.count()).select_from(EffortEvent)
                        .where(EffortEvent.actor_kind == ActorKind.HUMAN)) == 0
    assert {e.actor_kind for e in ev} == {ActorKind.SCRIPTED_ANNOTATOR}
    assert sum(e.clicks for e in ev) == 2 * len(BAD)
    assert sum(e.frames_edited for e in ev) == len(BAD)
    assert sum(e.seconds for e in ev) == pytest.approx(sum(o.lead_time for o in outcomes))
    assert {e.mode for e in ev} == {EffortMode.INTERACTIVE}


class IdealRefiner:
    """An ideal interactive model (for the click bookkeeping, not SAM 2): a positive click returns
    the ground-truth component under it."""

    def __init__(self, target_of):
        self.target_of = target_of

    def open(self, frame):
        return {}

    def click(self, session, obj, prior, points, labels):
        from scipy import ndimage

        x, y = (int(v) for v in points[-1])
        lab, _ = ndimage.label(self.target_of(obj, x, y))
        return lab == lab[y, x] if lab[y, x] else prior


@pytest.mark.labelstudio
def test_one_click_suffices_with_an_ideal_model_and_frames_come_from_the_server(
        labelstudio, ls_client, sqlite_url, video):
    from storage.db import make_engine

    _, gt = video
    engine = make_engine(sqlite_url)
    setup = _setup(engine, ls_client, labelstudio, video, CORRECTION)
    chunk0 = sorted(setup.task_ids.items())[0][1]
    seen_frames = []

    class Recording(IdealRefiner):
        def open(self, frame):
            seen_frames.append(frame)
            return {}

    # the frame of BAD (1, 1): object 1's target on frame 1
    bot = ScriptedAnnotator(ls_client, refiner=Recording(lambda obj, x, y: gt.masks[1, obj - 1]))
    o = bot.annotate_task(chunk0, gt)
    assert o.clicks == 1 and o.masks_drawn == 0 and o.frames_corrected == 1
    assert o.iou_after[(1, 1)] == pytest.approx(1.0)
    (frame,) = seen_frames  # fetched through Label Studio's local-files URL, pixel-exact PNG
    assert np.array_equal(frame, video[0].frames[1])


@pytest.mark.labelstudio
def test_verification_verdicts_follow_the_threshold(labelstudio, ls_client, engine, video):
    _, gt = video
    setup = _setup(engine, ls_client, labelstudio, video, VERIFICATION)
    bot = ScriptedAnnotator(ls_client)
    outcomes = [bot.annotate_task(tid, gt) for _, tid in sorted(setup.task_ids.items())]
    # object 1 is off on frame 1 (chunk 0) and frame 6 (chunk 1); object 2 is perfect
    assert [o.verdicts for o in outcomes] == [{1: "unsatisfactory", 2: "satisfactory"}] * 2
    rep = AnnotationSync(engine).sync_project(ls_client, setup.project_id)
    assert rep.applied == 2 and not rep.invalid
    with engine.connect() as c:
        st = dict(c.execute(select(Masklet.object_id, Masklet.status)).all())
        modes = set(c.execute(select(EffortEvent.mode, EffortEvent.actor_kind)).all())
    assert st == {1: MaskletStatus.IN_REVIEW, 2: MaskletStatus.VERIFIED}
    assert modes == {(EffortMode.REVIEW, ActorKind.SCRIPTED_ANNOTATOR)}
