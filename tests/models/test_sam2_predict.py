"""models.sam2.predict: VideoSegmenter.track on in-memory frames with a random-init model.

What is checked is the contract, not segmentation quality: one result per frame, at the video's
size, with the given object ids, in forward-then-backward order; clear PromptErrors for bad input;
memory that stays bounded on long videos without changing what the model computes.
"""
from __future__ import annotations

import numpy as np
import pytest

from models.sam2.predict import FrameSource, Prompt, PromptError, VideoSegmenter
from storage.masks import mask_iou
from tests.models.conftest import moving_square_video

pytestmark = pytest.mark.sam2

H, W = 96, 160  # non-square on purpose: frames are resized to 128x128 and masks back


@pytest.fixture(scope="module")
def video():
    return moving_square_video(10, H, W)


def run(segmenter, frames, prompts, **kw):
    return list(segmenter.track(frames, prompts, **kw))


def test_mask_box_and_point_prompts_one_result_per_frame(segmenter, video):
    frames, masks = video
    prompts = [
        Prompt(object_id=7, mask=masks[0]),
        Prompt(object_id=3, box=(100, 10, 150, 60)),
        Prompt(object_id=12, points=np.array([[30.0, 70.0], [5.0, 5.0]]), labels=np.array([1, 0])),
    ]
    results = run(segmenter, frames, prompts)

    assert [r.frame_index for r in results] == list(range(len(frames)))
    for r in results:
        assert r.object_ids == [7, 3, 12]
        assert r.masks.shape == (3, H, W) and r.masks.dtype == bool
        assert r.pred_iou.shape == r.object_score.shape == (3,)
        assert np.isfinite(r.pred_iou).all() and np.isfinite(r.object_score).all()
    # A mask prompt's own frame gives the prompt back (through the 128 px round trip), with the
    # certainty the predictor reports for given masks.
    first = results[0]
    assert mask_iou(first.masks[0], masks[0]) > 0.9
    assert first.pred_iou[0] == 1.0
    # Boxes and points go through the (random) mask decoder, whose IoU head gives a value in (0, 1).
    assert 0.0 < first.pred_iou[1] < 1.0 and 0.0 < first.pred_iou[2] < 1.0


def test_prompt_after_frame_zero_goes_forward_then_backward(segmenter, video):
    frames, masks = video
    k = 4
    results = run(segmenter, frames, [Prompt(object_id=1, frame_index=k, mask=masks[k])])
    order = [r.frame_index for r in results]
    assert order == list(range(k, len(frames))) + list(range(k - 1, -1, -1))
    assert len(set(order)) == len(frames)
    assert mask_iou(results[0].masks[0], masks[k]) > 0.9

    # Forward only when asked: frames before the prompt are not yielded.
    forward = run(segmenter, frames, [Prompt(object_id=1, frame_index=k, mask=masks[k])],
                  both_directions=False)
    assert [r.frame_index for r in forward] == list(range(k, len(frames)))


def test_prompts_on_different_frames_start_at_the_earliest(segmenter, video):
    frames, masks = video
    results = run(segmenter, frames, [Prompt(object_id=2, frame_index=6, mask=masks[6]),
                                      Prompt(object_id=5, frame_index=3, box=(10, 20, 60, 70))])
    order = [r.frame_index for r in results]
    assert order == list(range(3, len(frames))) + [2, 1, 0]
    by_frame = {r.frame_index: r for r in results}
    assert by_frame[6].object_ids == [2, 5]
    assert mask_iou(by_frame[6].masks[0], masks[6]) > 0.9


def test_one_frame_video(segmenter, video):
    frames, masks = video
    results = run(segmenter, frames[:1], [Prompt(object_id=1, mask=masks[0])])
    assert len(results) == 1
    assert results[0].frame_index == 0 and results[0].masks.shape == (1, H, W)


@pytest.mark.badinput
@pytest.mark.parametrize(
    "prompt, message",
    [
        (Prompt(object_id=4, points=np.array([[W + 5.0, 10.0]])), "outside the 160x96 frame"),
        (Prompt(object_id=4, points=np.array([[10.0, -1.0]])), "outside the 160x96 frame"),
        (Prompt(object_id=4, box=(W + 1, 0, W + 40, 30)), "outside the 160x96 frame"),
        (Prompt(object_id=4, box=(50, 50, 40, 60)), "degenerate"),
        (Prompt(object_id=4, mask=np.zeros((H, W), bool)), "empty"),
        (Prompt(object_id=4, mask=np.ones((128, 128), bool)), "is 128x128, the frame is 160x96"),
        (Prompt(object_id=4, frame_index=10, box=(0, 0, 10, 10)), "the video has 10 frames"),
        (Prompt(object_id=4, frame_index=-1, box=(0, 0, 10, 10)), "the video has 10 frames"),
        (Prompt(object_id=4), "exactly one of mask, box or points"),
        (Prompt(object_id=4, points=np.array([[1.0, 1.0], [2.0, 2.0]]), labels=np.array([1])),
         "2 points"),
    ],
    ids=["point-right", "point-above", "box-outside", "box-degenerate", "mask-empty",
         "mask-wrong-size", "frame-past-end", "frame-negative", "no-prompt-kind", "labels-count"],
)
def test_bad_prompts_raise_prompt_error(segmenter, video, prompt, message):
    frames, _ = video
    with pytest.raises(PromptError, match=message) as info:
        run(segmenter, frames, [prompt])
    assert "object 4" in str(info.value)  # every prompt error names the object it concerns


@pytest.mark.badinput
def test_bad_videos_raise_prompt_error(segmenter, video):
    frames, masks = video
    with pytest.raises(PromptError, match="no prompts"):
        run(segmenter, frames, [])
    mixed = [frames[0], frames[1], np.zeros((H + 2, W, 3), np.uint8)]
    with pytest.raises(PromptError, match=r"frame 2 is 160x98 but frame 0 is 160x96"):
        run(segmenter, mixed, [Prompt(object_id=1, mask=masks[0])])
    with pytest.raises(PromptError, match="no frames"):
        run(segmenter, frames[:0], [Prompt(object_id=1, mask=masks[0])])
    with pytest.raises(PromptError, match=r"HxWx3"):
        run(segmenter, frames[..., 0], [Prompt(object_id=1, mask=masks[0])])


def test_frame_source_resizes_once_and_normalises_on_access(video):
    frames, _ = video
    src = FrameSource(frames, 128)
    assert len(src) == len(frames)
    assert (src.video_height, src.video_width) == (H, W)
    assert src.raw(0).shape == (128, 128, 3) and src.raw(0).dtype == np.uint8
    x = src[0]
    assert tuple(x.shape) == (3, 128, 128)
    # ImageNet normalisation: a black pixel maps to -mean/std per channel.
    black = FrameSource(np.zeros((1, 8, 8, 3), np.uint8), 16)[0]
    np.testing.assert_allclose(black[:, 0, 0].numpy(), [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                               rtol=1e-5)


class RecordingSegmenter(VideoSegmenter):
    """Keeps a handle on the inference state so a test can look at it between yielded frames."""

    def init_state(self, source):
        self.state = super().init_state(source)
        return self.state


def test_memory_stays_bounded_on_a_long_video(segmenter):
    frames, masks = moving_square_video(300, 48, 64, side=12)
    seg = RecordingSegmenter(segmenter.predictor)
    k = 150  # both passes: 150 frames forward, 150 backwards
    sizes = []
    seen = []
    for r in seg.track(frames, [Prompt(object_id=1, frame_index=k, mask=masks[k])]):
        seen.append(r.frame_index)
        for od in seg.state["output_dict_per_obj"].values():
            sizes.append(len(od["non_cond_frame_outputs"]))
            assert len(od["cond_frame_outputs"]) == 1  # the prompt frame is never pruned
    assert sorted(seen) == list(range(300))
    # Inspected right after each yield (before that frame's pruning): at most the window plus the
    # frame just produced. Reaching the bound shows the window is actually used.
    assert max(sizes) == seg.memory_window + 1


def test_pruning_does_not_change_forward_tracking(segmenter):
    # Frames older than memory_window are never read again in a forward pass (memory bank of
    # num_maskmem frames, object pointers of max_obj_ptrs_in_encoder frames), so dropping them
    # must leave every score bit-identical to keeping everything.
    frames, masks = moving_square_video(40, 48, 64, side=12)
    prompts = [Prompt(object_id=1, mask=masks[0])]
    pruned = run(VideoSegmenter(segmenter.predictor), frames, prompts)
    kept = run(VideoSegmenter(segmenter.predictor, memory_window=10_000), frames, prompts)
    assert len(pruned) == len(kept) == 40
    for a, b in zip(pruned, kept):
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.object_score, b.object_score)
        np.testing.assert_array_equal(a.pred_iou, b.pred_iou)
