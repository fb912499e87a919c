"""Curation tags from FiftyOne back into the database (``curation_tags``).

Curators tag in the App: a whole video (sample tag), or a frame / masklet by tagging its mask
(label tag on ``frames.masks``; a tag on a ``frames.ground_truth`` label names the frame only).
Tags that count: ``reannotate``, ``exclude``, ``needs-review``; others are ignored.

``sync_tags`` mirrors the App's pending tags into rows with ``source="fiftyone:<dataset>"``:

- a tag in the App with no pending row -> a new row (so running it twice adds nothing);
- a pending row whose tag was removed in the App -> the row is deleted (the curator withdrew it);
- a tag whose row was already consumed by a round (``consumed_by_round_id``) and has no pending
  twin -> the tag is removed from the App: the work it asked for is done, the row stays as
  history (its ``note`` records ``CLEARED_NOTE``), and tagging again later asks for another pass.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, select, update

from annotation.fiftyone import CURATION_TAGS
from storage.db import bulk_insert
from storage.schema import CurationTag, CurationTagKind

CLEARED_NOTE = "[consumed; tag cleared in FiftyOne]"

__all__ = ["CLEARED_NOTE", "TagKey", "TagSyncReport", "read_tags", "sync_tags", "tag_source"]


@dataclass(frozen=True, order=True)
class TagKey:
    video_id: int
    frame_index: int | None
    masklet_id: int | None
    tag: str


@dataclass
class TagSyncReport:
    fo_dataset: str
    in_app: int = 0
    added: list[TagKey] = field(default_factory=list)
    withdrawn: list[TagKey] = field(default_factory=list)
    cleared_consumed: list[TagKey] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.fo_dataset}: {self.in_app} curation tags in the App; "
                f"{len(self.added)} new, {len(self.withdrawn)} withdrawn, "
                f"{len(self.cleared_consumed)} consumed tags cleared")


def tag_source(fo_dataset: str) -> str:
    return f"fiftyone:{fo_dataset}"


def read_tags(ds) -> dict[TagKey, list[tuple[str, str | None]]]:
    """{TagKey: [(sample id, label id or None), ...]} of the curation tags in a dataset."""
    out: dict[TagKey, list[tuple[str, str | None]]] = {}
    tags = list(CURATION_TAGS)
    for sid, vid, stags in zip(*ds.match_tags(tags).values(["id", "video_id", "tags"])):
        for t in stags or ():
            if t in CURATION_TAGS and vid is not None:
                out.setdefault(TagKey(int(vid), None, None, t), []).append((sid, None))
    for label_field, has_masklet in (("masks", True), ("ground_truth", False)):
        if not ds.has_frame_field(label_field):
            continue
        view = ds.select_labels(tags=tags, fields=f"frames.{label_field}")
        paths = ["id", "video_id", "frames.frame_number",
                 f"frames.{label_field}.detections.id", f"frames.{label_field}.detections.tags"]
        if has_masklet:
            paths.append(f"frames.{label_field}.detections.masklet_id")
        rows = view.values(paths)
        for i, (sid, vid) in enumerate(zip(rows[0], rows[1])):
            if vid is None:
                continue
            for j, fn in enumerate(rows[2][i]):
                ids = rows[3][i][j] or []
                for k, lid in enumerate(ids):
                    mid = rows[5][i][j][k] if has_masklet else None
                    for t in rows[4][i][j][k] or ():
                        if t in CURATION_TAGS:
                            key = TagKey(int(vid), int(fn) - 1, int(mid) if mid is not None else None, t)
                            out.setdefault(key, []).append((sid, lid))
    return out


def _untag(ds, key: TagKey, where: Iterable[tuple[str, str | None]]) -> None:
    where = list(where)
    samples = [sid for sid, lid in where if lid is None]
    labels = [lid for _, lid in where if lid is not None]
    if samples:
        ds.select(samples).untag_samples(key.tag)
    if labels:
        ds.select_labels(ids=labels).untag_labels(key.tag)


def sync_tags(engine: Engine, ds) -> TagSyncReport:
    """Mirror the curation tags of FiftyOne dataset ``ds`` into ``curation_tags`` (see module doc).
    Idempotent. Only rows with this dataset's source are touched."""
    source = tag_source(ds.name)
    report = TagSyncReport(ds.name)
    in_app = read_tags(ds)
    report.in_app = len(in_app)
    known_videos = None
    with engine.begin() as conn:
        rows = conn.execute(select(CurationTag.id, CurationTag.video_id, CurationTag.frame_index,
                                   CurationTag.masklet_id, CurationTag.tag,
                                   CurationTag.consumed_by_round_id, CurationTag.note)
                            .where(CurationTag.source == source)).all()
        pending: dict[TagKey, list[int]] = {}
        consumed: dict[TagKey, list[int]] = {}  # consumed, tag not yet cleared in the App
        for rid, vid, fi, mid, tag, used, note in rows:
            key = TagKey(vid, fi, mid, str(CurationTagKind(tag)))
            if used is None:
                pending.setdefault(key, []).append(rid)
            elif CLEARED_NOTE not in (note or ""):
                consumed.setdefault(key, []).append(rid)
        # Tags on videos or masklets that no longer exist here are skipped, not errors.
        from storage.schema import Masklet, Video

        vids = {k.video_id for k in in_app}
        mids = {k.masklet_id for k in in_app if k.masklet_id is not None}
        known_videos = {v for (v,) in conn.execute(select(Video.id).where(Video.id.in_(vids)))} if vids else set()
        known_masklets = ({m for (m,) in conn.execute(select(Masklet.id).where(Masklet.id.in_(mids)))}
                          if mids else set())
        new_rows = []
        for key in sorted(in_app):
            if key in pending:
                continue
            if key in consumed:
                report.cleared_consumed.append(key)
                continue
            if key.video_id not in known_videos or (key.masklet_id is not None
                                                    and key.masklet_id not in known_masklets):
                continue
            new_rows.append({"video_id": key.video_id, "frame_index": key.frame_index,
                             "masklet_id": key.masklet_id, "tag": CurationTagKind(key.tag),
                             "source": source, "note": None})
            report.added.append(key)
        if new_rows:
            bulk_insert(conn, CurationTag, new_rows)
        gone = [rid for key, ids in pending.items() if key not in in_app for rid in ids]
        report.withdrawn = sorted(k for k in pending if k not in in_app)
        if gone:
            conn.execute(delete(CurationTag).where(CurationTag.id.in_(gone)))
        cleared = [rid for key in report.cleared_consumed for rid in consumed[key]]
        # Consumed rows whose tag is gone from the App need no clearing either.
        cleared += [rid for key, ids in consumed.items() if key not in in_app for rid in ids]
        if cleared:
            conn.execute(update(CurationTag).where(CurationTag.id.in_(cleared))
                         .values(note=CLEARED_NOTE))
    for key in report.cleared_consumed:
        _untag(ds, key, in_app[key])
    return report
