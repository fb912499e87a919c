"""Small synthetic chunks for the Label Studio tests (no model, exact masks)."""
from __future__ import annotations

import numpy as np

from annotation.labelstudio import CORRECTION, ChunkObject, ChunkTask


def moving_masks(n_objects: int, n_frames: int, height: int, width: int, seed: int = 0):
    """{(slot, t): bool[H, W]}: rectangles that move a little from frame to frame."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in range(1, n_objects + 1):
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        h, w = rng.integers(4, height // 2), rng.integers(4, width // 2)
        for t in range(n_frames):
            m = np.zeros((height, width), bool)
            m[min(y + t, height - 1):min(y + t + h, height), x:x + w] = True
            out[(s, t)] = m
    return out


def make_chunk(dataset="ds", video="vid", chunk_index=0, n_frames=4, n_objects=2, height=48,
               width=64, kind=CORRECTION, round_number=1, seed=0, urls=None, **kw) -> ChunkTask:
    start = chunk_index * n_frames
    urls = urls or [f"/data/local-files/?d={dataset}/{video}/f{start + t:06d}.png" for t in range(n_frames)]
    return ChunkTask(
        dataset=dataset, video=video, chunk_index=chunk_index, frame_start=start,
        frame_stop=start + n_frames, round_number=round_number, kind=kind, width=width,
        height=height, frame_urls=urls,
        objects=[ChunkObject(slot=s, object_id=10 + s, label=f"class{s}") for s in range(1, n_objects + 1)],
        predicted=moving_masks(n_objects, n_frames, height, width, seed),
        model_version=kw.pop("model_version", "sam2-test-1"), score=kw.pop("score", 0.75), **kw,
    )


def stack(masks, slot, n_frames):
    return np.stack([masks[(slot, t)] for t in range(n_frames)])
