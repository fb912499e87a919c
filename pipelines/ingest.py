"""Ingest: register videos (from a folder, a file or an S3 prefix) in a dataset.

For each video: probe it (a corrupt, truncated or empty file is reported and skipped), copy it into
the blob store (content-addressed, so a copy that is already there costs nothing), copy its
optional ground truth `<name>.gt.json` (checked against the video's size and length) and record one
`videos` row. Rows are unique per (dataset, sha256), so ingesting the same source twice changes
nothing, and one transaction per video means a failure never undoes what was already stored.

Order matters for "lose nothing": blobs first, then the row. A crash in between leaves at most an
unreferenced blob (reused by the next run), never a row pointing at a missing blob.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from storage.blobs import BlobStore, BlobStoreError, key_sha256, parse_s3_uri
from storage.db import session_scope
from storage.schema import Dataset, Split, Video
from storage.video import VideoError, VideoInfo, probe_video

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
GT_SUFFIX = ".gt.json"

NEW, PRESENT, UPDATED, FAILED = "new", "present", "updated", "failed"


class IngestError(Exception):
    """The source as a whole cannot be read (missing folder, bad S3 URI, unreachable bucket)."""


@dataclass(frozen=True)
class IngestItem:
    """What happened to one source video."""

    source: str
    status: str  # new | present | updated (ground truth linked to a known video) | failed
    video_id: int | None = None
    sha256: str | None = None
    reason: str | None = None  # why it failed, or a note (e.g. "same content as <other source>")


@dataclass
class IngestReport:
    dataset: str
    source: str
    items: list[IngestItem] = field(default_factory=list)

    def _with(self, status: str) -> list[IngestItem]:
        return [i for i in self.items if i.status == status]

    @property
    def new(self) -> list[IngestItem]:
        return self._with(NEW)

    @property
    def present(self) -> list[IngestItem]:
        return self._with(PRESENT)

    @property
    def updated(self) -> list[IngestItem]:
        return self._with(UPDATED)

    @property
    def failed(self) -> list[IngestItem]:
        return self._with(FAILED)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        text = (f"{len(self.new)} new, {len(self.present)} already present, "
                f"{len(self.updated)} updated, {len(self.failed)} failed")
        return text + "".join(f"\n  failed: {i.source}: {i.reason}" for i in self.failed)


@dataclass(frozen=True)
class SourceVideo:
    """A video to ingest: where it came from, and how to get it (and its ground truth) locally."""

    name: str  # the source as reported (a path or an s3:// URI)
    local_path: Path | None = None  # local sources
    s3_key: str | None = None  # S3 sources
    gt_local_path: Path | None = None
    gt_s3_key: str | None = None


# --- discovering sources ---------------------------------------------------------------------------
def discover(source: str | Path, s3_client=None) -> tuple[list[SourceVideo], str | None]:
    """The videos under `source` (a folder, searched recursively; one video file; or
    `s3://bucket/prefix`), sorted by name, each with its ground truth if one sits beside it.
    Returns (videos, bucket or None)."""
    text = str(source)
    if text.startswith("s3://"):
        return _discover_s3(text, s3_client)
    return _discover_local(Path(source)), None


def _is_video(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS and not Path(name).name.startswith(".")


def _gt_name(video_name: str) -> str:
    # "a/clip.mp4" -> "a/clip.gt.json"
    p = Path(video_name)
    return str(p.with_name(p.stem + GT_SUFFIX))


def _discover_local(root: Path) -> list[SourceVideo]:
    if not root.exists():
        raise IngestError(f"source {root} does not exist")
    if root.is_file():
        files = [root]
    else:
        # Hidden files (editor and temp files, `.x.mp4.part` from an unfinished write) are skipped.
        files = sorted(p for p in root.rglob("*") if p.is_file() and _is_video(p.name)
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
    out = []
    for p in files:
        gt = Path(_gt_name(str(p)))
        out.append(SourceVideo(str(p), local_path=p, gt_local_path=gt if gt.is_file() else None))
    return out


def _discover_s3(uri: str, s3_client) -> tuple[list[SourceVideo], str]:
    from botocore.exceptions import BotoCoreError, ClientError

    if s3_client is None:
        raise IngestError(f"an S3 client is needed to ingest from {uri}")
    try:
        bucket, prefix = parse_s3_uri(uri)
    except BlobStoreError as e:
        raise IngestError(str(e)) from None
    keys: set[str] = set()
    try:
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.update(obj["Key"] for obj in page.get("Contents", []))
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise IngestError(f"S3 bucket {bucket!r} does not exist (source {uri})") from None
        raise IngestError(f"cannot list {uri}: {code}: {e}") from None
    except BotoCoreError as e:
        raise IngestError(f"cannot list {uri}: {type(e).__name__}: {e}") from None
    out = []
    for key in sorted(k for k in keys if _is_video(k)):
        gt = _gt_name(key)
        out.append(SourceVideo(f"s3://{bucket}/{key}", s3_key=key,
                               gt_s3_key=gt if gt in keys else None))
    return out, bucket


@contextmanager
def _local_copy(item: SourceVideo, bucket: str | None, s3_client) -> Iterator[tuple[Path, Path | None]]:
    """(video path, ground-truth path or None) on local disk; S3 objects are downloaded to a
    temporary folder (PyAV must seek in an mp4) that is removed afterwards."""
    if item.local_path is not None:
        yield item.local_path, item.gt_local_path
        return
    with tempfile.TemporaryDirectory(prefix="dataengine-ingest-") as tmp:
        video = Path(tmp) / Path(item.s3_key).name
        try:
            s3_client.download_file(bucket, item.s3_key, str(video))
            gt = None
            if item.gt_s3_key:
                gt = Path(tmp) / Path(item.gt_s3_key).name
                s3_client.download_file(bucket, item.gt_s3_key, str(gt))
        except Exception as e:  # noqa: BLE001 - any download failure is this item's failure
            raise _ItemFailed(f"download failed: {type(e).__name__}: {e}") from None
        yield video, gt


class _ItemFailed(Exception):
    """One video cannot be ingested; the message is the reason shown to the user."""


# --- checking ground truth -------------------------------------------------------------------------
def check_ground_truth(gt_path: Path, info: VideoInfo) -> None:
    """The ground truth must be a dataengine ground-truth document that fits the video: same frame
    size, one well-formed RLE of that size per frame and object. Checked without decoding the
    masks (a long HD video's masks would not fit in memory decoded)."""
    from storage.masks import RleError, rle_area
    from storage.synthetic.dataset import GT_FORMAT

    name = gt_path.name
    try:
        doc = json.loads(gt_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _ItemFailed(f"ground truth {name} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != GT_FORMAT:
        raise _ItemFailed(f"ground truth {name} is not a {GT_FORMAT} document")
    try:
        h, w, frames = int(doc["height"]), int(doc["width"]), int(doc["frames"])
        objects = list(doc["objects"])
    except (KeyError, TypeError, ValueError) as e:
        raise _ItemFailed(f"ground truth {name} lacks height/width/frames/objects: {e}") from None
    if (h, w) != (info.height, info.width):
        raise _ItemFailed(f"ground truth {name} is {h}x{w} (HxW) but the video is "
                          f"{info.height}x{info.width}")
    if frames != info.frame_count:
        raise _ItemFailed(f"ground truth {name} has {frames} frames but the video has {info.frame_count}")
    for obj in objects:
        oid = obj.get("object_id") if isinstance(obj, dict) else None
        masks = obj.get("masks") if isinstance(obj, dict) else None
        if oid is None or not isinstance(masks, list) or len(masks) != frames:
            raise _ItemFailed(f"ground truth {name}: object {oid} needs one mask per frame ({frames})")
        for t, rle in enumerate(masks):
            size = rle.get("size") if isinstance(rle, dict) else None
            if size != [h, w]:
                raise _ItemFailed(f"ground truth {name}: object {oid} frame {t} mask is {size}, "
                                  f"the video is {h}x{w}")
            try:
                rle_area(rle)  # parses the counts and checks they cover exactly h*w pixels
            except RleError as e:
                raise _ItemFailed(f"ground truth {name}: object {oid} frame {t}: {e}") from None


# --- ingesting -------------------------------------------------------------------------------------
def get_or_create_dataset(engine: Engine, name: str) -> int:
    """The dataset's id, creating it on first use (safe against a concurrent creator)."""
    if not name or not name.strip():
        raise IngestError("dataset name must not be empty")
    for _ in range(2):
        with session_scope(engine) as s:
            found = s.scalar(select(Dataset.id).where(Dataset.name == name))
            if found is not None:
                return found
        try:
            with session_scope(engine) as s:
                ds = Dataset(name=name)
                s.add(ds)
                s.flush()
                return ds.id
        except IntegrityError:
            continue  # someone created it between our read and our insert: read it
    raise IngestError(f"could not create or find dataset {name!r}")


ProgressFn = Callable[[IngestItem, int, int], None]


def ingest_videos(
    engine: Engine,
    blob_store: BlobStore,
    source: str | Path,
    dataset: str,
    *,
    split: str | Split = Split.TRAIN,
    s3_client=None,
    deep_check: bool = True,
    progress: ProgressFn | None = None,
    on_discovered: Callable[[int], None] | None = None,
) -> IngestReport:
    """Register every video under `source` in `dataset`. Never stops on a bad file: each outcome
    is an item of the report. `deep_check` decodes every frame (catches corrupt bitstreams, not
    only cut files). `progress(item, done, total)` is called after each video; `on_discovered(n)`
    once the list of videos is known. Raises IngestError only when the source itself is unusable."""
    split = Split(split)
    videos, bucket = discover(source, s3_client)
    if on_discovered is not None:
        on_discovered(len(videos))
    dataset_id = get_or_create_dataset(engine, dataset)
    report = IngestReport(dataset=dataset, source=str(source))
    for n, item in enumerate(videos, 1):
        try:
            result = _ingest_one(engine, blob_store, dataset_id, item, bucket, s3_client, split,
                                 deep_check)
        except _ItemFailed as e:
            result = IngestItem(item.name, FAILED, reason=str(e))
        except (VideoError, BlobStoreError) as e:
            result = IngestItem(item.name, FAILED, reason=str(e))
        except Exception as e:  # noqa: BLE001 - one bad file must never stop the batch
            result = IngestItem(item.name, FAILED, reason=f"{type(e).__name__}: {e}")
        report.items.append(result)
        if progress is not None:
            progress(result, n, len(videos))
    return report


def _ingest_one(engine, blob_store, dataset_id, item, bucket, s3_client, split,
                deep_check) -> IngestItem:
    with _local_copy(item, bucket, s3_client) as (video_path, gt_path):
        try:
            info = probe_video(video_path, decode=deep_check)
        except VideoError as e:
            raise _ItemFailed(e.reason) from None  # the source name is the item's, not the temp copy's
        if gt_path is not None:
            check_ground_truth(gt_path, info)
        # put_file is a no-op for bytes already stored; it re-uploads a blob that went missing.
        key = blob_store.put_file(video_path, suffix=Path(video_path).suffix.lower())
        sha = key_sha256(key)
        gt_uri = blob_store.uri(blob_store.put_file(gt_path, suffix=GT_SUFFIX)) if gt_path else None
        size = video_path.stat().st_size

    with session_scope(engine) as s:
        existing = s.scalar(select(Video).where(Video.dataset_id == dataset_id, Video.sha256 == sha))
        if existing is not None:
            if existing.ground_truth_uri is None and gt_uri is not None:
                existing.ground_truth_uri = gt_uri  # ground truth added since the first ingest
                return IngestItem(item.name, UPDATED, existing.id, sha, "ground truth linked")
            note = None
            if existing.source_path != item.name:
                note = f"same content as {existing.source_path}"
            return IngestItem(item.name, PRESENT, existing.id, sha, note)
    try:
        with session_scope(engine) as s:
            row = Video(
                dataset_id=dataset_id,
                uri=blob_store.uri(key),
                blob_key=key,
                source_path=item.name,
                sha256=sha,
                fps=info.fps,
                frame_count=info.frame_count,
                width=info.width,
                height=info.height,
                size_bytes=size,
                split=split,
                ground_truth_uri=gt_uri,
            )
            s.add(row)
            s.flush()
            return IngestItem(item.name, NEW, row.id, sha)
    except IntegrityError:
        # A concurrent ingest registered the same bytes between our check and our insert.
        with session_scope(engine) as s:
            vid = s.scalar(select(Video.id).where(Video.dataset_id == dataset_id, Video.sha256 == sha))
        if vid is None:
            raise
        return IngestItem(item.name, PRESENT, vid, sha, "registered concurrently")
