"""models.sam2.automatic: de-duplication of proposals, and the re-seeding loop of
AutomaticMasklets.run (proposals on key frames, each new object tracked both ways)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.sam2.automatic import AutoConfig, AutomaticMasklets, Masklet, track_prompts
from models.sam2.predict import Prompt
from storage.masks import decode_rle, encode_rle, mask_iou
from tests.models.conftest import make_segmenter, moving_square_video

pytestmark = pytest.mark.sam2

H, W = 64, 96


def box_mask(x0, y0, x1, y1, h=40, w=40):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture(scope="module")
def auto(segmenter):
    return AutomaticMasklets(segmenter, AutoConfig(dedup_iou=0.4))


# --- _is_new on hand-made RLEs --------------------------------------------------------------------
def test_nothing_known_means_new(auto):
    assert auto._is_new(encode_rle(box_mask(0, 0, 10, 10)), [])


def test_same_mask_is_not_new(auto):
    rle = encode_rle(box_mask(5, 5, 20, 20))
    assert not auto._is_new(rle, [encode_rle(box_mask(5, 5, 20, 20))])


def test_disjoint_mask_is_new(auto):
    assert auto._is_new(encode_rle(box_mask(0, 0, 10, 10)), [encode_rle(box_mask(20, 20, 30, 30))])


@pytest.mark.parametrize("shift, new", [(3, False), (4, True)])
def test_iou_threshold_is_inclusive(auto, shift, new):
    # Two 7-column bars shifted by 3 columns: intersection 4, union 10, IoU exactly 0.4 = dedup_iou
    # -> a duplicate. Shifted by 4: IoU 3/11 -> new. Coverage (4/7 and 3/7) stays below 0.6, so only
    # the IoU rule decides here.
    existing = encode_rle(box_mask(0, 0, 7, 10))
    proposal = encode_rle(box_mask(shift, 0, shift + 7, 10))
    assert auto._is_new(proposal, [existing]) is new


def test_part_of_a_known_object_is_not_new(auto):
    # A small proposal inside a large known mask: IoU 0.0625 is low, but 100% of it is covered.
    whole = encode_rle(box_mask(0, 0, 40, 40))
    part = encode_rle(box_mask(0, 0, 10, 10))
    assert not auto._is_new(part, [whole])


def test_mask_containing_a_small_known_object_is_new(auto):
    # The reverse case: a known object covers only a small part of the proposal: a new object.
    small = encode_rle(box_mask(0, 0, 5, 5))
    big = encode_rle(box_mask(0, 0, 30, 30))
    assert auto._is_new(big, [small])


def test_checked_against_every_known_mask(auto):
    known = [encode_rle(box_mask(30, 30, 40, 40)), encode_rle(box_mask(0, 0, 10, 10))]
    assert not auto._is_new(encode_rle(box_mask(0, 0, 10, 10)), known)


# --- run() with sam2's own generator --------------------------------------------------------------
def test_run_masklets_cover_every_frame(segmenter):
    frames, _ = moving_square_video(10, H, W)
    # Random weights: the IoU head and stability scores are meaningless, so no thresholds; small
    # grid and few objects keep it quick.
    cfg = AutoConfig(points_per_side=4, pred_iou_thresh=0.0, stability_thresh=0.0, min_area_frac=0.0,
                     max_area_frac=1.0, reseed_every=5, max_objects=3)
    progress = []
    masklets = AutomaticMasklets(segmenter, cfg).run(frames, where="clip.mp4", on_progress=progress.append)
    assert 1 <= len(masklets) <= 3
    assert sorted(masklets) == list(range(1, len(masklets) + 1))  # ids 1..N in order of discovery
    for oid, m in masklets.items():
        assert m.object_id == oid
        assert sorted(m.rles) == list(range(10))
        assert sorted(m.pred_iou) == sorted(m.object_score) == list(range(10))
        assert all(r["size"] == [H, W] for r in m.rles.values())
        assert m.first_frame in (0, 5)
        assert m.proposal_score is not None
    assert progress and all(p.startswith("clip.mp4: frame ") for p in progress)


# --- run() with fixed proposals -------------------------------------------------------------------
def least_covered_block(mask: np.ndarray, side: int) -> np.ndarray:
    """A side x side square placed where `mask` has the fewest pixels (a solid shape survives
    the 128 px round trip far better than the ragged complement of a random mask)."""
    h, w = mask.shape
    best = min(((int(mask[y:y + side, x:x + side].sum()), y, x)
                for y in range(h - side + 1) for x in range(w - side + 1)))
    _, y, x = best
    return box_mask(x, y, x + side, y + side, h, w)


class FixedProposals(AutomaticMasklets):
    """sam2's generator replaced by a table {frame: [mask, ...]}; everything else is real."""

    def __init__(self, segmenter, cfg, table):
        super().__init__(segmenter, cfg)
        self.table = table
        self.asked = []

    def propose(self, source, frame_idx):
        self.asked.append(frame_idx)
        return [(m, 1.0 - 0.1 * i) for i, m in enumerate(self.table.get(frame_idx, []))]


@pytest.fixture(scope="module")
def present_segmenter(random_checkpoint):
    """A segmenter whose object-score head always says "present". With plain random weights the
    head judges every tracked frame empty, so no tracked mask exists that a proposal could
    duplicate; a large bias on its output makes tracked masks non-empty (still random shapes)."""
    seg = make_segmenter(random_checkpoint)
    head = seg.predictor.sam_mask_decoder.pred_obj_score_head
    with torch.no_grad():
        head.layers[-1].bias += 20.0
    return seg


def test_late_object_is_tracked_both_ways_and_duplicates_are_skipped(present_segmenter):
    frames, square = moving_square_video(12, H, W)
    cfg = AutoConfig(reseed_every=4, max_objects=8)
    first = square[0]

    # 1. Only the frame-0 object: what does its masklet look like on the re-seed frame 4?
    alone = FixedProposals(present_segmenter, cfg, {0: [first]}).run(frames)
    assert list(alone) == [1]
    tracked_at_4 = decode_rle(alone[1].rles[4])
    assert tracked_at_4.any(), "the biased model must track a non-empty mask (see fixture)"

    # 2. Same video; on frame 4 the generator also proposes (a) an exact copy of that tracked mask,
    # a duplicate, listed first, and (b) a block where that mask covers the fewest pixels.
    newcomer = least_covered_block(tracked_at_4, side=10)
    assert (newcomer & tracked_at_4).sum() / newcomer.sum() < 0.5  # new by the coverage rule too
    gen = FixedProposals(present_segmenter, cfg, {0: [first], 4: [tracked_at_4.copy(), newcomer]})
    masklets = gen.run(frames)

    assert gen.asked == [0, 4, 8]  # proposals on every re-seed frame
    assert sorted(masklets) == [1, 2], "the duplicate must not become a masklet"
    # The frame-0 masklet is untouched by what happened later.
    assert masklets[1].rles == alone[1].rles
    late = masklets[2]
    assert late.first_frame == 4
    assert late.proposal_score == pytest.approx(0.9)  # second in the list: it was the newcomer
    # Tracked forwards to the end AND backwards to frame 0.
    assert sorted(late.rles) == list(range(12))
    # On its own frame it is the proposal (the mask prompt is its output, through 128 px).
    assert mask_iou(decode_rle(late.rles[4]), newcomer) > 0.9


def test_max_objects_caps_new_masklets(segmenter):
    frames, _ = moving_square_video(4, H, W)
    blocks = [box_mask(10 * i, 0, 10 * i + 8, 8, H, W) for i in range(5)]  # 5 disjoint objects
    gen = FixedProposals(segmenter, AutoConfig(reseed_every=100, max_objects=3), {0: blocks})
    masklets = gen.run(frames)
    assert sorted(masklets) == [1, 2, 3]
    # The best-scored proposals are kept (they come first).
    for oid in (1, 2, 3):
        assert masklets[oid].proposal_score == pytest.approx(1.0 - 0.1 * (oid - 1))


def test_track_prompts_collects_one_rle_per_frame(segmenter):
    frames, square = moving_square_video(6, H, W)
    masklets = track_prompts(segmenter, segmenter.frame_source(frames),
                             [Prompt(object_id=9, frame_index=2, mask=square[2])])
    assert list(masklets) == [9]
    m = masklets[9]
    assert isinstance(m, Masklet) and m.first_frame == 2
    assert sorted(m.rles) == list(range(6))
    assert m.pred_iou[2] == 1.0
    assert np.isfinite(m.mean_pred_iou())


def test_a_mask_prompt_comes_back_exactly_on_its_frame(segmenter):
    """sam2 echoes a mask prompt through quarter-resolution logits, which rounds off thin parts;
    a person's mask must come back as drawn (re-propagation kept it, verification judged it)."""
    frames, _ = moving_square_video(4, H, W)
    cross = np.zeros((H, W), bool)
    cross[H // 2 - 1:H // 2 + 1, 10:W - 10] = True  # 2 px thin bars
    cross[10:H - 10, W // 2 - 1:W // 2 + 1] = True
    prompt = [Prompt(object_id=1, frame_index=1, mask=cross)]
    source = segmenter.frame_source(frames)
    echoed = decode_rle(track_prompts(segmenter, source, prompt, keep_mask_prompts=False)[1].rles[1])
    assert mask_iou(echoed, cross) < 0.9  # the echo loses the thin bars (what the default fixes)
    kept = track_prompts(segmenter, source, prompt)[1]
    assert np.array_equal(decode_rle(kept.rles[1]), cross)
    assert sorted(kept.rles) == [0, 1, 2, 3]
