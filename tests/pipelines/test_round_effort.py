"""Effort accounting of the modes and the report (fast)."""
from __future__ import annotations

import numpy as np
import pytest


def test_min_polygon_is_the_fewest_vertices_that_keep_the_threshold():
    from annotation.scripted_annotator import min_polygon
    from storage.masks import mask_iou

    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 32) ** 2 + (xx - 30) ** 2 < 20 ** 2
    poly, n = min_polygon(disk, 0.9)
    assert mask_iou(poly, disk) >= 0.9 and 4 <= n <= 12
    _, n99 = min_polygon(disk, 0.99)
    assert n99 >= n
    assert min_polygon(np.zeros((8, 8), bool), 0.9)[1] == 0


@pytest.mark.sam2
def test_modes_on_the_same_videos_and_report(tmp_path):
    from models.sam2 import BASE_CHECKPOINT
    from pipelines.effort_report import write_report
    from pipelines.annotation_modes import measure_modes
    from pipelines.sam2_runtime import build_segmenter
    from pipelines.settings import Settings
    from storage.synthetic.videos import generate_videos

    seg, _ = build_segmenter(BASE_CHECKPOINT, device="cpu")
    # The base domain: where the shipped model tracks (on the target domain it fails almost
    # everywhere before retraining, and propagate then costs what manual does).
    vids = generate_videos(10_001, 2, domain="base", frames=8, objects=2)
    modes = measure_modes(seg, vids, threshold=0.9)
    print(modes)
    assert modes["manual"]["frames_edited_pct"] > 90
    # Mechanics only: with the shipped 1.46 M-parameter model almost no propagated frame reaches
    # IoU 0.9, so the savings the issue asks for are not asserted here (see docs/loop.md).
    for m in ("propagate", "interactive"):
        assert modes[m]["frames"] == modes["manual"]["frames"] == 32
        assert 0 < modes[m]["frames_edited_pct"] <= 100
        assert modes[m]["clicks_per_frame"] > 0 and modes[m]["seconds_per_frame"] > 0
    rounds = [{"round": 1, "frames_edited_pct": 40.0, "clicks_per_frame": 2.0, "val_jf": 0.5,
               "promoted": False, "model_version": "sam2-base"}]
    paths = write_report(Settings(work_dir=tmp_path), "t", modes, rounds)
    assert paths["png"].stat().st_size > 1000
    assert "interactive" in paths["html"].read_text()


@pytest.mark.sam2
def test_interactive_mode_erases_a_mask_where_the_object_has_left():
    # Object 2 of this target-domain video is out of the frame on frames 9-11 while the base model
    # still predicts it there: the annotator's fix is an empty mask, which must not become a
    # prompt (SAM 2 takes no empty mask prompt; this once stopped the demo).
    from models.sam2 import BASE_CHECKPOINT
    from pipelines.annotation_modes import measure_modes
    from pipelines.sam2_runtime import build_segmenter
    from storage.synthetic.videos import generate_videos

    seg, _ = build_segmenter(BASE_CHECKPOINT, device="cpu")
    (v,) = generate_videos(13_001, 1, domain="target", frames=16, objects=2)
    assert not v.masks[9:12, 1].any() and v.masks[8, 1].any()
    modes = measure_modes(seg, [v], threshold=0.9)
    assert modes["interactive"]["frames"] == 32 and modes["interactive"]["frames_edited"] > 0
