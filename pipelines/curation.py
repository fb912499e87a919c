"""Curation, as plain functions the CLI and the round flow call.

- ``publish_to_fiftyone`` / ``sync_curation_tags``: the FiftyOne side (``annotation.fiftyone``),
  with FiftyOne pointed at our database first (the composition root's job).
- ``videos_to_requeue``: the videos the next round must pre-annotate and queue again (pending
  ``reannotate`` / ``needs-review`` tags); ``consume_tags`` marks them done by a round.
- ``excluded_from_training``: what ``exclude`` tags keep out of training.
- ``compute_sam2_embeddings``: pooled features of the production SAM 2 image encoder (family
  ``sam2-encoder``) per keyframe, per masklet crop and per video, into the ``embeddings`` table.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, delete, select, update

from storage.blobs import BlobStore
from storage.db import bulk_insert, session_scope
from storage.schema import (
    CurationTag,
    CurationTagKind,
    Dataset,
    Embedding,
    FrameMask,
    Masklet,
    SubjectKind,
    Video,
)

__all__ = [
    "REQUEUE_TAGS",
    "SAM2_EMBEDDING_FAMILY",
    "Exclusions",
    "compute_sam2_embeddings",
    "consume_tags",
    "excluded_from_training",
    "publish_to_fiftyone",
    "sync_curation_tags",
    "videos_to_requeue",
]

SAM2_EMBEDDING_FAMILY = "sam2-encoder"
REQUEUE_TAGS = (CurationTagKind.REANNOTATE, CurationTagKind.NEEDS_REVIEW)


def _dataset_id(conn, dataset: str) -> int:
    ds = conn.execute(select(Dataset.id).where(Dataset.name == dataset)).scalar()
    if ds is None:
        raise ValueError(f"dataset {dataset!r} does not exist")
    return ds


# --- tags -> the next round -----------------------------------------------------------------------
def videos_to_requeue(engine: Engine, dataset: str,
                      tags: Sequence[CurationTagKind | str] = REQUEUE_TAGS,
                      consumed_by_round_id: int | None = None) -> list[int]:
    """Ids of the videos of ``dataset`` with a pending (not yet consumed) ``reannotate`` or
    ``needs-review`` tag, on the video, a frame or a masklet (plus those whose tags round
    ``consumed_by_round_id`` already consumed: a re-run of that round's ingest sees the same set);
    videos excluded as a whole are left out. Sorted."""
    kinds = [CurationTagKind(t) for t in tags]
    open_tag = CurationTag.consumed_by_round_id.is_(None)
    if consumed_by_round_id is not None:
        open_tag = open_tag | (CurationTag.consumed_by_round_id == consumed_by_round_id)
    with engine.connect() as conn:
        ds = _dataset_id(conn, dataset)
        in_ds = select(Video.id).where(Video.dataset_id == ds).scalar_subquery()
        tagged = {v for (v,) in conn.execute(
            select(CurationTag.video_id).where(CurationTag.video_id.in_(in_ds),
                                               CurationTag.tag.in_(kinds), open_tag).distinct())}
        excluded = excluded_from_training(engine, dataset, conn=conn).videos
    return sorted(tagged - excluded)


def consume_tags(engine: Engine, dataset: str, round_id: int,
                 video_ids: Sequence[int] | None = None,
                 tags: Sequence[CurationTagKind | str] = REQUEUE_TAGS) -> int:
    """Mark the pending requeue tags of ``video_ids`` (default: all of the dataset) as consumed by
    ``round_id``; returns how many rows. ``exclude`` tags are never consumed."""
    kinds = [CurationTagKind(t) for t in tags if CurationTagKind(t) != CurationTagKind.EXCLUDE]
    with engine.begin() as conn:
        ds = _dataset_id(conn, dataset)
        in_ds = select(Video.id).where(Video.dataset_id == ds).scalar_subquery()
        q = (update(CurationTag)
             .where(CurationTag.video_id.in_(in_ds), CurationTag.tag.in_(kinds),
                    CurationTag.consumed_by_round_id.is_(None))
             .values(consumed_by_round_id=round_id))
        if video_ids is not None:
            q = q.where(CurationTag.video_id.in_(list(video_ids)))
        return conn.execute(q).rowcount or 0


@dataclass
class Exclusions:
    """What ``exclude`` tags keep out of training: whole videos, single frames, masklets."""

    videos: set[int] = field(default_factory=set)
    frames: set[tuple[int, int]] = field(default_factory=set)  # (video id, frame index)
    masklets: set[int] = field(default_factory=set)

    def excludes(self, video_id: int, frame_index: int | None = None,
                 masklet_id: int | None = None) -> bool:
        return (video_id in self.videos or (video_id, frame_index) in self.frames
                or (masklet_id is not None and masklet_id in self.masklets))


def excluded_from_training(engine: Engine, dataset: str | None = None, *, conn=None) -> Exclusions:
    """Every ``exclude`` tag (of ``dataset``, or of all datasets): a tag on a masklet excludes that
    masklet, on a frame that frame, otherwise the whole video."""
    q = select(CurationTag.video_id, CurationTag.frame_index, CurationTag.masklet_id).where(
        CurationTag.tag == CurationTagKind.EXCLUDE)
    out = Exclusions()

    def run(c):
        qq = q
        if dataset is not None:
            ds = _dataset_id(c, dataset)
            qq = q.where(CurationTag.video_id.in_(select(Video.id).where(Video.dataset_id == ds)))
        for vid, fi, mid in c.execute(qq):
            if mid is not None:
                out.masklets.add(mid)
            elif fi is not None:
                out.frames.add((vid, fi))
            else:
                out.videos.add(vid)

    if conn is not None:
        run(conn)
    else:
        with engine.connect() as c:
            run(c)
    return out


# --- FiftyOne (composition: settings first, then fiftyone) ------------------------------------------
def publish_to_fiftyone(settings, dataset: str, *, full: bool = False, sync_first: bool = True,
                        progress: Callable[[int, int], None] | None = None):
    """Sync curators' tags (so none is lost), then publish ``dataset`` incrementally.
    Returns (tag sync report or None, publish report)."""
    settings.configure_fiftyone()
    from annotation.fiftyone.publish import publish

    engine = settings.engine()
    try:
        tags = sync_curation_tags(settings, dataset, engine=engine) if sync_first else None
        report = publish(engine, settings.blob_store(), dataset,
                         fo_dataset=settings.fiftyone_dataset_name(dataset),
                         media_dir=settings.fiftyone_dir / "media", full=full,
                         duplicate_thresh=settings.fiftyone_duplicate_thresh, progress=progress)
        return tags, report
    finally:
        engine.dispose()


def sync_curation_tags(settings, dataset: str, *, engine: Engine | None = None):
    """Read the App's reannotate / exclude / needs-review tags into ``curation_tags``; None when
    the dataset was never published."""
    settings.configure_fiftyone()
    import fiftyone as fo

    from annotation.fiftyone.tags import sync_tags

    name = settings.fiftyone_dataset_name(dataset)
    if not fo.dataset_exists(name):
        return None
    own = engine is None
    engine = engine or settings.engine()
    try:
        return sync_tags(engine, fo.load_dataset(name))
    finally:
        if own:
            engine.dispose()


# --- SAM 2 encoder embeddings ---------------------------------------------------------------------
def _pool(features, weights=None) -> np.ndarray:
    """Mean over the feature grid (weighted by a mask when given), L2-normalised."""
    f = features[0].float()  # C, h, w
    if weights is not None and float(weights.sum()) > 0:
        vec = (f * weights).sum(dim=(1, 2)) / weights.sum()
    else:
        vec = f.mean(dim=(1, 2))
    vec = vec / vec.norm().clamp_min(1e-12)
    return vec.detach().cpu().numpy().astype("<f4")


def compute_sam2_embeddings(engine: Engine, blob_store: BlobStore, segmenter, dataset: str, *,
                            model_version_id: int | None, keyframe_every: int = 8,
                            video_ids: Sequence[int] | None = None, replace: bool = False,
                            cache_dir: Path | None = None) -> int:
    """Embeddings of family ``sam2-encoder`` from the image encoder of ``segmenter`` (the
    production SAM 2): the pooled ``vision_features`` of every ``keyframe_every``-th frame, of
    each masklet's crop on its largest frame (mask-weighted), and per video the normalised mean of
    its keyframes. Videos that already have the family are skipped unless ``replace``. Returns
    the number of videos embedded."""
    import tempfile

    import torch
    import torch.nn.functional as F

    from pipelines.preannotate import load_video_frames
    from storage.masks import decode_rle

    predictor = segmenter.predictor
    device = predictor.device
    with session_scope(engine) as s:
        ds = _dataset_id(s, dataset)
        q = select(Video).where(Video.dataset_id == ds).order_by(Video.id)
        if video_ids is not None:
            q = q.where(Video.id.in_(list(video_ids)))
        videos = list(s.scalars(q))
        done = {v for (v,) in s.execute(select(Embedding.video_id).where(
            Embedding.family == SAM2_EMBEDDING_FAMILY,
            Embedding.video_id.in_([v.id for v in videos])).distinct())}
    todo = [v for v in videos if replace or v.id not in done]
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="dataengine-embed-"))

    def encode(img: torch.Tensor):
        with torch.inference_mode():
            return predictor.forward_image(img[None].to(device))["vision_features"]

    for v in todo:
        frames = load_video_frames(blob_store, v, cache)
        source = segmenter.frame_source(frames, where=v.uri)
        rows = []
        keys = []
        for t in range(0, len(source), max(1, keyframe_every)):
            vec = _pool(encode(source[t]))
            keys.append(vec)
            rows.append({"subject_kind": SubjectKind.FRAME, "frame_index": t, "masklet_id": None,
                         "vec": vec})
        video_vec = np.mean(keys, axis=0)
        video_vec = (video_vec / max(np.linalg.norm(video_vec), 1e-12)).astype("<f4")
        rows.append({"subject_kind": SubjectKind.VIDEO, "frame_index": None, "masklet_id": None,
                     "vec": video_vec})
        with engine.connect() as conn:
            mids = [m for (m,) in conn.execute(select(Masklet.id).where(Masklet.video_id == v.id))]
            best = {}
            for mid, t, area, counts, h, w, bx, by, bw, bh in conn.execute(
                    select(FrameMask.masklet_id, FrameMask.frame_index, FrameMask.area,
                           FrameMask.rle_counts, FrameMask.height, FrameMask.width,
                           FrameMask.bbox_x, FrameMask.bbox_y, FrameMask.bbox_w, FrameMask.bbox_h)
                    .where(FrameMask.masklet_id.in_(mids))):
                if area > 0 and (mid not in best or area > best[mid][0]):
                    best[mid] = (area, t, {"size": [h, w], "counts": counts}, (bx, by, bw, bh))
        for mid, (_, t, rle, (bx, by, bw, bh)) in sorted(best.items()):
            mx, my = 0.1 * bw + 2, 0.1 * bh + 2  # a margin of context around the object
            x0, y0 = int(max(0, bx - mx)), int(max(0, by - my))
            x1 = int(min(frames.shape[2], bx + bw + mx))
            y1 = int(min(frames.shape[1], by + bh + my))
            crop = frames[t, y0:y1, x0:x1]
            feats = encode(segmenter.frame_source([crop], where=v.uri)[0])
            mask = torch.from_numpy(decode_rle(rle)[y0:y1, x0:x1].astype(np.float32))
            weights = F.interpolate(mask[None, None], size=feats.shape[-2:], mode="area")[0, 0]
            rows.append({"subject_kind": SubjectKind.MASKLET, "frame_index": None,
                         "masklet_id": mid, "vec": _pool(feats, weights)})
        with engine.begin() as conn:
            conn.execute(delete(Embedding).where(Embedding.video_id == v.id,
                                                 Embedding.family == SAM2_EMBEDDING_FAMILY))
            bulk_insert(conn, Embedding, [
                {"family": SAM2_EMBEDDING_FAMILY, "model_version_id": model_version_id,
                 "subject_kind": r["subject_kind"], "video_id": v.id,
                 "masklet_id": r["masklet_id"], "frame_index": r["frame_index"],
                 "dim": int(r["vec"].size), "vector": r["vec"].tobytes(), "blob_key": None}
                for r in rows])
    if cache_dir is None:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
    return len(todo)
