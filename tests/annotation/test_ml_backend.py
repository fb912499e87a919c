"""The interactive SAM 2 ML backend, connected to the REAL Label Studio (which calls its /health
and /setup on connecting and forwards smart clicks to its /predict), with a random-init SAM 2 of
the production config. Response time per click is measured at 128 and 256 px."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from annotation.labelstudio import CORRECTION, import_chunk_tasks, write_frames
from annotation.labelstudio.ml_backend import MlBackendServer, Sam2Backend, clicks_from_context
from annotation.labelstudio.validate import task_spec_from_data, validate_result
from tests.annotation.ls_helpers import make_chunk

pytestmark = [pytest.mark.labelstudio, pytest.mark.sam2]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _keypoint(x, y, w, h, frame, positive=True, label="object_1"):
    return {"original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"x": 100.0 * x / w, "y": 100.0 * y / h, "width": 0.5,
                      "keypointlabels": [label]},
            "is_positive": positive, "id": uuid.uuid4().hex[:10], "from_name": "kp",
            "to_name": "frames", "type": "keypointlabels", "origin": "manual", "item_index": frame}


def test_context_parsing_groups_clicks_by_label_and_frame():
    ctx = {"result": [_keypoint(10, 20, 100, 50, 3), _keypoint(30, 20, 100, 50, 3, positive=False),
                      _keypoint(5, 5, 100, 50, 0, label="object_2")]}
    got = clicks_from_context(ctx)
    assert set(got) == {("object_1", 3), ("object_2", 0)}
    assert got[("object_1", 3)]["labels"] == [1, 0]
    assert got[("object_1", 3)]["points"][0] == pytest.approx([10.0, 40.0])
    assert clicks_from_context(None) == {} and clicks_from_context({"result": []}) == {}


@pytest.fixture(scope="module")
def segmenter():
    import torch

    from models.sam2.predict import VideoSegmenter
    from tests.models.conftest import build_random_predictor

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield VideoSegmenter(build_random_predictor())
    torch.set_num_threads(before)


def test_label_studio_forwards_clicks_and_the_mask_lands_on_the_clicked_frame(
        labelstudio, ls_client, segmenter):
    timings = {}
    for size in (128, 256):
        name = f"mlb{size}{uuid.uuid4().hex[:6]}"
        project = ls_client.ensure_project(name, CORRECTION, 2)
        ls_client.ensure_local_storage(project.id, labelstudio.media_root / name)
        rng = np.random.default_rng(size)
        frames = rng.integers(0, 255, (4, size, size, 3), dtype=np.uint8)
        urls = write_frames(frames, labelstudio.media_root, f"{name}/v")
        chunk = make_chunk(dataset=name, n_frames=4, height=size, width=size, urls=urls)
        task_id = import_chunk_tasks(ls_client, project.id, [chunk]).created[chunk.key]
        backend = Sam2Backend(ls_client, segmenter, model_version="sam2-random-test")
        with MlBackendServer(backend) as srv:
            assert httpx.get(srv.url + "/health").json()["status"] == "UP"
            ml_id = ls_client.ensure_ml_backend(project.id, srv.url)  # LS checks /health, /setup
            assert ls_client.ensure_ml_backend(project.id, srv.url) == ml_id
            spec = task_spec_from_data(ls_client.get_task(task_id)["data"])
            per_click = []
            for n, frame in enumerate((2, 2, 0, 3)):
                ctx = {"result": [_keypoint(size // 2 + n, size // 3, size, size, frame)]}
                t0 = time.perf_counter()
                reply = ls_client.predict_interactive(ml_id, task_id, ctx)
                per_click.append(time.perf_counter() - t0)
                assert "errors" not in reply, reply
                (region,) = reply["data"]["result"]
                assert region["item_index"] == frame and region["value"]["brushlabels"] == ["object_1"]
                v = validate_result([region], spec)  # a region the sync would accept
                assert v.masks[1].shape == (4, size, size)
            # no context (a task being opened): no prediction from us
            r = httpx.post(srv.url + "/predict", json={"tasks": [{"id": task_id}], "params": {"context": None}})
            assert r.json()["results"] == []
            # the first click on a frame pays for the image encoder, the next ones reuse it
            timings[size] = {"first_click_s": round(per_click[0], 3),
                             "same_frame_click_s": round(per_click[1], 3),
                             "median_click_s": round(float(np.median(per_click)), 3),
                             "backend_median_s": round(float(np.median(backend.timings)), 3)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "ml_backend_click_timing.json").write_text(json.dumps(timings, indent=1))
    print("ml backend response per click:", timings)
    assert all(t["median_click_s"] < 30 for t in timings.values())
