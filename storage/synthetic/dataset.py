"""Write synthetic videos to disk as mp4 + ground truth, and read the ground truth back.

Ground truth sits beside each video as `<name>.gt.json` (COCO RLE per frame and object). It is for
evaluation and for the scripted annotator only: nothing that feeds a model reads it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.masks import decode_rle, encode_rle
from storage.synthetic.videos import SyntheticVideo, generate_videos
from storage.video import write_mp4

GT_SUFFIX = ".gt.json"
GT_FORMAT = "dataengine-gt/1"


@dataclass
class GroundTruth:
    """Exact masks of every object on every frame: masks[t, k] is object object_ids[k] on frame t."""

    video: str
    height: int
    width: int
    object_ids: list[int]
    labels: list[str]
    masks: np.ndarray  # bool [T, O, H, W]
    domain: str | None = None
    seed: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.masks.shape[0])


def ground_truth_dict(video: SyntheticVideo) -> dict:
    t, o, h, w = video.masks.shape
    objects = []
    for k in range(o):
        objects.append(
            {
                "object_id": video.object_ids[k],
                "label": video.labels[k],
                "masks": [encode_rle(video.masks[i, k]) for i in range(t)],
            }
        )
    return {
        "format": GT_FORMAT,
        "video": video.name,
        "domain": video.domain,
        "seed": video.seed,
        "height": h,
        "width": w,
        "frames": t,
        "objects": objects,
    }


def write_video(video: SyntheticVideo, out_dir: Path) -> Path:
    """Write `<name>.mp4` and `<name>.gt.json` into out_dir; returns the mp4 path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mp4 = out_dir / f"{video.name}.mp4"
    write_mp4(mp4, video.frames, fps=video.fps)
    gt_path = out_dir / f"{video.name}{GT_SUFFIX}"
    tmp = gt_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ground_truth_dict(video)))
    tmp.replace(gt_path)
    return mp4


def write_dataset(out_dir: Path, seed: int, videos: int, **kwargs) -> list[Path]:
    """Generate `videos` videos from one dataset seed and write them; returns the mp4 paths."""
    return [write_video(v, Path(out_dir)) for v in generate_videos(seed, videos, **kwargs)]


def parse_ground_truth(doc: dict, where: str = "<ground truth>") -> GroundTruth:
    """Validate and decode a ground-truth document; errors name the file and the object/frame."""
    if doc.get("format") != GT_FORMAT:
        raise ValueError(f"{where}: not a dataengine ground-truth file (format={doc.get('format')!r})")
    h, w, t = int(doc["height"]), int(doc["width"]), int(doc["frames"])
    objs = doc["objects"]
    masks = np.zeros((t, len(objs), h, w), dtype=bool)
    for k, obj in enumerate(objs):
        if len(obj["masks"]) != t:
            raise ValueError(
                f"{where}: object {obj['object_id']} has {len(obj['masks'])} masks for {t} frames"
            )
        for i, rle in enumerate(obj["masks"]):
            try:
                masks[i, k] = decode_rle(rle, expected_size=(h, w))
            except ValueError as exc:
                raise ValueError(f"{where}: object {obj['object_id']} frame {i}: {exc}") from exc
    return GroundTruth(
        video=doc["video"],
        height=h,
        width=w,
        object_ids=[int(o["object_id"]) for o in objs],
        labels=[str(o.get("label", "object")) for o in objs],
        masks=masks,
        domain=doc.get("domain"),
        seed=doc.get("seed"),
    )


def load_ground_truth(path: Path) -> GroundTruth:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ground truth ({exc})") from exc
    return parse_ground_truth(doc, where=str(path))


def ground_truth_path(video_path: Path) -> Path:
    video_path = Path(video_path)
    return video_path.with_name(video_path.stem + GT_SUFFIX)
