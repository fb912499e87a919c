"""Export masks in DAVIS layout so the official DAVIS / SA-V evaluators score them unchanged.

`OUT/<video>/<frame:05d>.png`: one indexed (palette) PNG per frame, pixel value = object id
(0 = background), DAVIS's colour palette. Where masks overlap, the higher object id is drawn on top,
as the DAVIS tools expect non-overlapping labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import Engine, select

from storage.masklets import masklet_frames
from storage.masks import decode_rle
from storage.schema import Dataset, Masklet, ModelVersion, Video


@dataclass
class ExportSummary:
    videos: int = 0
    frames: int = 0


def davis_palette() -> list[int]:
    """The DAVIS palette: the PASCAL VOC colour map (bit-interleaved label colours)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.extend([r, g, b])
    return pal


def export_davis(engine: Engine, dataset: str, out: Path, model_version: str | None = None) -> ExportSummary:
    out = Path(out)
    summary = ExportSummary()
    palette = davis_palette()
    with engine.connect() as conn:
        ds = conn.execute(select(Dataset.id).where(Dataset.name == dataset)).scalar_one_or_none()
        if ds is None:
            raise ValueError(f"dataset {dataset!r} does not exist")
        videos = conn.execute(select(Video.id, Video.uri, Video.frame_count, Video.height, Video.width)
                              .where(Video.dataset_id == ds).order_by(Video.id)).all()
        for vid, uri, n_frames, h, w in videos:
            q = select(Masklet.id, Masklet.object_id).where(Masklet.video_id == vid)
            if model_version is not None:
                q = q.join(ModelVersion, Masklet.source_model_version_id == ModelVersion.id).where(
                    ModelVersion.version == model_version)
            # The newest masklet of each object wins (a correction supersedes the prediction).
            q = q.order_by(Masklet.object_id, Masklet.updated_at.desc(), Masklet.id.desc())
            chosen: dict[int, int] = {}
            for mid, oid in conn.execute(q):
                chosen.setdefault(oid, mid)
            if not chosen:
                continue
            labels = np.zeros((n_frames, h, w), dtype=np.uint8)
            for oid in sorted(chosen):
                if not 0 < oid < 256:
                    raise ValueError(f"video {uri}: object id {oid} does not fit an 8-bit DAVIS label")
                for t, rle in masklet_frames(conn, chosen[oid]).items():
                    if t < n_frames:
                        labels[t][decode_rle(rle, expected_size=(h, w))] = oid
            name = Path(uri).stem.removesuffix(".mp4") or f"video{vid}"
            vdir = out / name
            vdir.mkdir(parents=True, exist_ok=True)
            for t in range(n_frames):
                img = Image.fromarray(labels[t], mode="P")
                img.putpalette(palette)
                img.save(vdir / f"{t:05d}.png")
            summary.videos += 1
            summary.frames += n_frames
    return summary
