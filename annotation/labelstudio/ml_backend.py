"""Interactive SAM 2 for the Label Studio editor: a Label Studio ML backend (its HTTP protocol).

- ``GET /health`` -> ``{"status": "UP", ...}``; ``POST /setup`` -> ``{"model_version": ...}``;
- ``POST /predict`` with ``{"tasks": [task], "params": {"context": {"result": [...]}}}``: the
  annotator's smart keypoints (``keypointlabels``, ``is_positive``) or smart rectangle
  (``rectanglelabels``), in percent of the image, each with the clicked frame's 0-based
  ``item_index`` (Label Studio sends it for multi-image tasks; checked with the real editor, see
  the platform notes). All clicks of one label on one frame are refined together (newest last)
  and the reply carries one brush region for that object on that frame, with the same
  ``item_index`` (which decides the frame the mask lands on);
- a ``/predict`` without context (Label Studio asks once when a task is opened) gets no result:
  the chunk's predictions come from the importer, not from here;
- ``POST /webhook`` -> 200 (Label Studio registers it; nothing to do).

The frame is fetched from Label Studio like the editor does (``LabelStudioClient.get_file``) and
segmented by ``annotation.scripted_annotator.Sam2ClickRefiner`` (the predicted mask of that object
and frame, when the task carries it, is the prior). One inference state per (task, frame) is kept
in a small LRU so that successive clicks reuse the image features.

Label Studio refuses loopback backends unless it runs with ``ML_BLOCK_LOCAL_IP=false`` and
``SSRF_PROTECTION_ENABLED=false`` (``infra/labelstudio/start.sh`` sets both).
"""
from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from annotation.labelstudio.client import LabelStudioClient
from annotation.labelstudio.http_json import JsonHandler, LoopbackServer
from annotation.labelstudio.label_config import BRUSH_FROM_NAME, IMAGE_TO_NAME, slot_of_label
from annotation.labelstudio.tasks import brush_result

__all__ = ["Sam2Backend", "MlBackendServer", "clicks_from_context"]

log = logging.getLogger(__name__)


def clicks_from_context(context: Any) -> dict[tuple[str, int], dict]:
    """{(label, item_index): {"points": [[x%, y%]...], "labels": [1|0...], "box": [x%, y%, w%, h%]|None,
    "size": (w, h)|None}} from a /predict context (keypoints and rectangles)."""
    out: dict[tuple[str, int], dict] = {}
    if not isinstance(context, Mapping):
        return out
    for r in context.get("result") or []:
        if not isinstance(r, Mapping):
            continue
        v = r.get("value") or {}
        typ = r.get("type")
        labels = v.get("keypointlabels") or v.get("rectanglelabels") or v.get("labels") or []
        if not labels:
            continue
        idx = r.get("item_index", 0)
        idx = idx if isinstance(idx, int) and not isinstance(idx, bool) else 0
        entry = out.setdefault((str(labels[0]), idx), {"points": [], "labels": [], "box": None,
                                                       "size": None})
        if r.get("original_width") and r.get("original_height"):
            entry["size"] = (int(r["original_width"]), int(r["original_height"]))
        if typ == "keypointlabels" and "x" in v and "y" in v:
            entry["points"].append([float(v["x"]), float(v["y"])])
            entry["labels"].append(0 if r.get("is_positive") is False else 1)
        elif typ == "rectanglelabels" and all(k in v for k in ("x", "y", "width", "height")):
            entry["box"] = [float(v["x"]), float(v["y"]), float(v["width"]), float(v["height"])]
    return out


class Sam2Backend:
    """The model side: refine one object on one frame from clicks."""

    def __init__(self, client: LabelStudioClient, segmenter, *, model_version: str,
                 cache_frames: int = 32) -> None:
        from annotation.scripted_annotator import Sam2ClickRefiner

        self.client = client
        self.refiner = Sam2ClickRefiner(segmenter)
        self.segmenter = segmenter
        self.model_version = model_version
        self._sessions: OrderedDict[tuple[int, int], dict] = OrderedDict()
        self._cache = cache_frames
        self._lock = threading.Lock()  # one model, one inference at a time
        self.timings: list[float] = []

    def _session(self, task: Mapping, item_index: int) -> tuple[dict, np.ndarray]:
        from PIL import Image

        key = (int(task.get("id", 0)), item_index)
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        frames = (task.get("data") or {}).get("frames")
        if isinstance(frames, list):
            url = frames[item_index]
        else:  # a single-image task
            url = (task.get("data") or {}).get("image")
        frame = np.array(Image.open(io.BytesIO(self.client.get_file(url))).convert("RGB"))
        sess = (self.refiner.open(frame), frame)
        self._sessions[key] = sess
        while len(self._sessions) > self._cache:
            self._sessions.popitem(last=False)
        return sess

    def predict(self, tasks: list[Mapping], context: Any) -> list[dict]:
        """One prediction per task: the refined brush regions of the clicked objects and frames."""
        clicks = clicks_from_context(context)
        if not clicks:
            return []
        out = []
        for task in tasks:
            regions = []
            for (label, idx), c in clicks.items():
                t0 = time.perf_counter()
                slot = slot_of_label(label) or 1
                with self._lock:
                    sess, frame = self._session(task, idx)
                    h, w = frame.shape[:2]
                    if c["points"]:
                        pts = np.array([[x * w / 100.0, y * h / 100.0] for x, y in c["points"]])
                        mask = self.refiner.click(sess, slot, None, pts, np.array(c["labels"]))
                    else:
                        x, y, bw, bh = c["box"]
                        mask = self._box(sess, slot, [x * w / 100, y * h / 100,
                                                      (x + bw) * w / 100, (y + bh) * h / 100])
                r = brush_result(mask, slot, idx, w, h)
                r["origin"] = "prediction"
                r["from_name"], r["to_name"] = BRUSH_FROM_NAME, IMAGE_TO_NAME
                r["value"]["brushlabels"] = [label]
                r["readonly"] = False
                regions.append(r)
                self.timings.append(time.perf_counter() - t0)
            out.append({"model_version": self.model_version, "score": 1.0, "result": regions})
        return out

    def _box(self, sess: dict, obj: int, box: list[float]) -> np.ndarray:
        import torch

        pred = self.segmenter.predictor
        with torch.inference_mode(), self.segmenter.runtime.autocast():
            _, ids, masks = pred.add_new_points_or_box(sess["state"], 0, obj,
                                                       box=np.asarray(box, np.float32),
                                                       clear_old_points=True)
            return (masks[list(ids).index(obj), 0] > 0.0).cpu().numpy()


class MlBackendServer(LoopbackServer):
    """The HTTP side (stdlib): serves a ``Sam2Backend`` on ``host:port`` in a thread."""

    def __init__(self, backend: Sam2Backend, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.backend = backend
        server = self

        class Handler(JsonHandler):
            server_version = "dataengine-ml-backend/1"

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length", "0") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self):
                if self.path.rstrip("/") in ("/health", ""):
                    self._reply(200, {"status": "UP", "model_class": "Sam2Backend",
                                      "model_version": server.backend.model_version})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self):
                path = self.path.split("?", 1)[0].rstrip("/")
                try:
                    body = self._body()
                except ValueError:
                    self._reply(400, {"error": "body is not JSON"})
                    return
                if path == "/setup":
                    self._reply(200, {"model_version": server.backend.model_version})
                elif path == "/webhook":
                    self._reply(200, {})
                elif path == "/predict":
                    try:
                        params = body.get("params") or {}
                        results = server.backend.predict(body.get("tasks") or [], params.get("context"))
                    except Exception as exc:  # a broken request must not kill the backend
                        log.exception("predict failed")
                        self._reply(500, {"error": f"{type(exc).__name__}: {exc}"[:500]})
                        return
                    self._reply(200, {"results": results, "model_version": server.backend.model_version})
                else:
                    self._reply(404, {"error": "not found"})

        self._bind(host, port, Handler)

    thread_name = "labelstudio-ml-backend"

    @property
    def url(self) -> str:
        return self.base_url

