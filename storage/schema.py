"""The metadata schema: one SQLAlchemy 2 typed ORM that behaves the same on SQLite and PostgreSQL.

Design rules (why the schema looks the way it does):
- Enums are stored as short strings (``native_enum=False``) guarded by named CHECK constraints, so
  SQLite and PostgreSQL accept and reject exactly the same values and adding a value is a plain
  migration (no ``ALTER TYPE``).
- Every constraint and index is named through ``NAMING_CONVENTION``; Alembic batch migrations on
  SQLite need names to find constraints again, and names keep migrations reviewable.
- Timestamps are timezone-aware UTC everywhere (``UtcDateTime``): SQLite has no time zones, so the
  type normalises values on the way in and out; ``CURRENT_TIMESTAMP`` server defaults are UTC on
  both backends.
- Scale (SA-V: 642.6K masklets over 50.9K videos, tens of millions of frame masks): the big tables
  (frame_masks, embeddings, ocr_tokens, effort_events) use 64-bit ids on PostgreSQL, and every
  foreign key used for reads is the leading column of an index, a unique constraint or the primary
  key (``tests/storage/test_db_schema.py`` checks this on the migrated database).
- Deleting a dataset, a video or a round removes what was derived from it (ON DELETE CASCADE).
  Foreign keys that record *provenance* are NO ACTION, so history cannot be lost by accident: a
  model version that made masklets, pre-annotated a round or produced captions/OCR/embeddings
  cannot be deleted, nor can a round (or its dataset) whose data trained a registered model.
  (No cascade path may cross a NO ACTION key: PostgreSQL checks it before the cascade finishes.)

JSON columns: assign a new dict/list to change them; in-place mutation is not tracked by the ORM.
"""
from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "UtcDateTime",
    "BigId",
    # enums
    "Split",
    "ModelStage",
    "RoundStatus",
    "SourceKind",
    "MaskletStatus",
    "TaskKind",
    "TaskStatus",
    "ActorKind",
    "EffortMode",
    "SubjectKind",
    "CurationTagKind",
    "RunStatus",
    # tables
    "Dataset",
    "Video",
    "ModelVersion",
    "ModelVersionRound",
    "AnnotationRound",
    "Masklet",
    "FrameMask",
    "AnnotationTask",
    "AppliedAnnotation",
    "EffortEvent",
    "Caption",
    "OcrToken",
    "Embedding",
    "CurationTag",
    "PipelineRun",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores text without an offset. Values are converted
    to UTC before they are written and come back as aware UTC datetimes from both backends.
    Naive datetimes are refused: their meaning depends on the writer's clock settings.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"UtcDateTime expects a datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given to a UTC timestamp column; "
                "use an aware value such as datetime.now(timezone.utc)"
            )
        value = value.astimezone(dt.timezone.utc)
        # SQLite's DATETIME storage drops the offset anyway: store the UTC wall time explicitly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# 64-bit ids on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is the auto-incrementing rowid
# (which is 64-bit there anyway), so the variant keeps autoincrement working on both.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NOW = text("CURRENT_TIMESTAMP")  # UTC on SQLite and on PostgreSQL (as timestamptz)


# --- enums (stored as their string values) ---------------------------------------------------------


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class ModelStage(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    RETIRED = "retired"


class RoundStatus(StrEnum):
    PLANNED = "planned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SourceKind(StrEnum):
    """Who produced a masklet or caption. Scripted annotators are never counted as human work."""

    MODEL = "model"
    HUMAN = "human"
    SCRIPTED_ANNOTATOR = "scripted_annotator"
    GROUND_TRUTH = "ground_truth"
    # SAM 2 re-propagating the frames a person (or the scripted annotator) corrected: the round's
    # model made the masks, but from corrected prompts; kept apart from its first predictions.
    REPROPAGATED = "repropagated"


class MaskletStatus(StrEnum):
    PREDICTED = "predicted"
    IN_REVIEW = "in_review"
    CORRECTED = "corrected"
    VERIFIED = "verified"
    REJECTED = "rejected"


class TaskKind(StrEnum):
    CORRECTION = "correction"
    VERIFICATION = "verification"


class TaskStatus(StrEnum):
    PENDING = "pending"  # row written, not yet created in the tool
    OPEN = "open"  # exists in the tool, waiting for people
    SUBMITTED = "submitted"  # annotated in the tool, not yet applied here
    SYNCED = "synced"  # its annotations are applied (see applied_annotations)
    FAILED = "failed"
    CANCELLED = "cancelled"


class ActorKind(StrEnum):
    HUMAN = "human"
    SCRIPTED_ANNOTATOR = "scripted_annotator"
    MODEL = "model"


class EffortMode(StrEnum):
    MANUAL = "manual"
    PROPAGATE = "propagate"
    INTERACTIVE = "interactive"
    REVIEW = "review"


class SubjectKind(StrEnum):
    VIDEO = "video"
    FRAME = "frame"
    MASKLET = "masklet"


class CurationTagKind(StrEnum):
    REANNOTATE = "reannotate"
    EXCLUDE = "exclude"
    NEEDS_REVIEW = "needs-review"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _enum(cls: type[StrEnum], name: str) -> Enum:
    """A string enum column type with a CHECK constraint named ``ck_<table>_<name>``."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,  # headroom: a longer new value needs no column change
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def _fk(target: str, ondelete: str | None = None) -> ForeignKey:
    return ForeignKey(target, ondelete=ondelete)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created_at() -> Mapped[dt.datetime]:
    return mapped_column(UtcDateTime(), nullable=False, server_default=NOW)


# --- tables ----------------------------------------------------------------------------------------


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created_at()

    videos: Mapped[list[Video]] = relationship(back_populates="dataset", passive_deletes=True)


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = (
        # Leading column dataset_id also serves "videos of a dataset" reads.
        UniqueConstraint("dataset_id", "sha256"),
        CheckConstraint("length(sha256) = 64", name="sha256_hex"),
        CheckConstraint("fps > 0", name="fps_positive"),
        CheckConstraint("frame_count >= 0", name="frame_count_nonneg"),
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
        CheckConstraint("size_bytes >= 0", name="size_bytes_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(_fk("datasets.id", "CASCADE"), nullable=False)
    uri: Mapped[str] = mapped_column(String(1024), nullable=False)
    blob_key: Mapped[str | None] = mapped_column(String(512))
    source_path: Mapped[str | None] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    fps: Mapped[float] = mapped_column(Float, nullable=False)
    frame_count: Mapped[int] = mapped_column(Integer, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    split: Mapped[Split] = mapped_column(
        _enum(Split, "split"), nullable=False, default=Split.TRAIN, server_default=Split.TRAIN.value
    )
    ground_truth_uri: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[dt.datetime] = _created_at()

    dataset: Mapped[Dataset] = relationship(back_populates="videos")
    masklets: Mapped[list[Masklet]] = relationship(back_populates="video", passive_deletes=True)


class ModelVersion(Base):
    """The model registry: one row per trained artifact of a model family."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("family", "version"),
        CheckConstraint("length(artifact_sha256) = 64", name="artifact_sha256_hex"),
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        Index(None, "parent_id"),
        Index(None, "family", "stage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[str] = mapped_column(String(128), nullable=False)
    artifact_uri: Mapped[str] = mapped_column(String(1024), nullable=False)
    artifact_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # Lineage: fine-tuned from parent (kept if the parent row is removed, as NULL) ...
    parent_id: Mapped[int | None] = mapped_column(_fk("model_versions.id", "SET NULL"))
    stage: Mapped[ModelStage] = mapped_column(
        _enum(ModelStage, "stage"),
        nullable=False,
        default=ModelStage.CANDIDATE,
        server_default=ModelStage.CANDIDATE.value,
    )
    stage_changed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[dt.datetime] = _created_at()

    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])
    # ... and trained on the data of these annotation rounds (see ModelVersionRound).
    data_rounds: Mapped[list[AnnotationRound]] = relationship(
        secondary="model_version_rounds", order_by="AnnotationRound.id", passive_deletes=True
    )


class AnnotationRound(Base):
    __tablename__ = "annotation_rounds"
    __table_args__ = (
        UniqueConstraint("dataset_id", "number"),
        CheckConstraint("number >= 0", name="number_nonneg"),
        Index(None, "model_version_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(_fk("datasets.id", "CASCADE"), nullable=False)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[RoundStatus] = mapped_column(
        _enum(RoundStatus, "status"),
        nullable=False,
        default=RoundStatus.PLANNED,
        server_default=RoundStatus.PLANNED.value,
    )
    # The model that pre-annotated this round (NO ACTION: the registry keeps what was used).
    model_version_id: Mapped[int | None] = mapped_column(_fk("model_versions.id"))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[dt.datetime] = _created_at()

    model_version: Mapped[ModelVersion | None] = relationship()


class ModelVersionRound(Base):
    """Lineage: which annotation rounds' data a model version was trained on."""

    __tablename__ = "model_version_rounds"
    __table_args__ = (Index(None, "round_id"),)

    model_version_id: Mapped[int] = mapped_column(
        _fk("model_versions.id", "CASCADE"), primary_key=True
    )
    round_id: Mapped[int] = mapped_column(_fk("annotation_rounds.id"), primary_key=True)


class Masklet(Base):
    """One object tracked through one video (a spatio-temporal mask)."""

    __tablename__ = "masklets"
    __table_args__ = (
        CheckConstraint("object_id >= 0", name="object_id_nonneg"),
        CheckConstraint(
            "source_kind <> 'model' OR source_model_version_id IS NOT NULL",
            name="model_source_has_version",
        ),
        Index(None, "video_id", "object_id"),
        Index(None, "round_id", "status"),
        Index(None, "source_model_version_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(_fk("videos.id", "CASCADE"), nullable=False)
    object_id: Mapped[int] = mapped_column(Integer, nullable=False)
    label: Mapped[str] = mapped_column(String(128), nullable=False)
    # No default on purpose: every writer must say whether a model, a person, a script or the
    # ground truth made this masklet.
    source_kind: Mapped[SourceKind] = mapped_column(
        _enum(SourceKind, "source_kind"), nullable=False
    )
    source_model_version_id: Mapped[int | None] = mapped_column(_fk("model_versions.id"))
    status: Mapped[MaskletStatus] = mapped_column(
        _enum(MaskletStatus, "status"),
        nullable=False,
        default=MaskletStatus.PREDICTED,
        server_default=MaskletStatus.PREDICTED.value,
    )
    # The round that produced or last changed it; NULL for ground truth imported outside rounds.
    round_id: Mapped[int | None] = mapped_column(_fk("annotation_rounds.id", "CASCADE"))
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), nullable=False, server_default=NOW, onupdate=NOW
    )

    video: Mapped[Video] = relationship(back_populates="masklets")
    frames: Mapped[list[FrameMask]] = relationship(
        back_populates="masklet", order_by="FrameMask.frame_index", passive_deletes=True
    )


class FrameMask(Base):
    """One masklet's mask on one frame: COCO RLE plus the numbers curation sorts by.

    The largest table (tens of millions of rows): no per-row timestamp, bulk writes go through
    ``storage.db.copy_insert``/``bulk_insert``.
    """

    __tablename__ = "frame_masks"
    __table_args__ = (
        # Also the read path: "all frames of a masklet, in order".
        UniqueConstraint("masklet_id", "frame_index"),
        CheckConstraint("frame_index >= 0", name="frame_index_nonneg"),
        CheckConstraint("height > 0 AND width > 0", name="size_positive"),
        CheckConstraint("area >= 0", name="area_nonneg"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    masklet_id: Mapped[int] = mapped_column(_fk("masklets.id", "CASCADE"), nullable=False)
    frame_index: Mapped[int] = mapped_column(Integer, nullable=False)
    rle_counts: Mapped[str] = mapped_column(Text, nullable=False)  # COCO compressed RLE string
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    area: Mapped[int] = mapped_column(Integer, nullable=False)
    bbox_x: Mapped[float] = mapped_column(Float, nullable=False)
    bbox_y: Mapped[float] = mapped_column(Float, nullable=False)
    bbox_w: Mapped[float] = mapped_column(Float, nullable=False)
    bbox_h: Mapped[float] = mapped_column(Float, nullable=False)
    predicted_iou: Mapped[float | None] = mapped_column(Float)
    object_score: Mapped[float | None] = mapped_column(Float)

    masklet: Mapped[Masklet] = relationship(back_populates="frames")

    @property
    def rle(self) -> dict[str, Any]:
        """The mask as a COCO RLE dict (``{"size": [H, W], "counts": str}``)."""
        return {"size": [self.height, self.width], "counts": self.rle_counts}


class AnnotationTask(Base):
    """A task in an annotation tool (Label Studio) covering a frame range of one video."""

    __tablename__ = "annotation_tasks"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        # External ids are unique per tool project (NULL until the tool has created the task).
        UniqueConstraint("tool", "project_id", "external_task_id"),
        CheckConstraint("frame_start >= 0 AND frame_stop > frame_start", name="frame_range"),
        Index(None, "video_id"),
        Index(None, "round_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), nullable=False)
    tool: Mapped[str] = mapped_column(String(64), nullable=False)
    project_id: Mapped[str] = mapped_column(String(64), nullable=False)
    external_task_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[TaskKind] = mapped_column(_enum(TaskKind, "kind"), nullable=False)
    video_id: Mapped[int] = mapped_column(_fk("videos.id", "CASCADE"), nullable=False)
    round_id: Mapped[int] = mapped_column(_fk("annotation_rounds.id", "CASCADE"), nullable=False)
    frame_start: Mapped[int] = mapped_column(Integer, nullable=False)  # inclusive
    frame_stop: Mapped[int] = mapped_column(Integer, nullable=False)  # exclusive
    status: Mapped[TaskStatus] = mapped_column(
        _enum(TaskStatus, "status"),
        nullable=False,
        default=TaskStatus.PENDING,
        server_default=TaskStatus.PENDING.value,
    )
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), nullable=False, server_default=NOW, onupdate=NOW
    )


class AppliedAnnotation(Base):
    """Exactly-once sync: one row per (external annotation, version) already applied here."""

    __tablename__ = "applied_annotations"
    __table_args__ = (
        UniqueConstraint("tool", "external_annotation_id", "version"),
        Index(None, "task_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(_fk("annotation_tasks.id", "CASCADE"), nullable=False)
    tool: Mapped[str] = mapped_column(String(64), nullable=False)
    external_annotation_id: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[str] = mapped_column(String(128), nullable=False)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    applied_at: Mapped[dt.datetime] = _created_at()


class EffortEvent(Base):
    """Annotation effort, per masklet or task, for measuring what each round cost."""

    __tablename__ = "effort_events"
    __table_args__ = (
        CheckConstraint(
            "frames_total >= 0 AND frames_edited >= 0 AND clicks >= 0 AND strokes >= 0"
            " AND seconds >= 0",
            name="counts_nonneg",
        ),
        CheckConstraint("frames_edited <= frames_total", name="edited_within_total"),
        Index(None, "round_id", "actor_kind"),
        Index(None, "masklet_id"),
        Index(None, "task_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    round_id: Mapped[int] = mapped_column(_fk("annotation_rounds.id", "CASCADE"), nullable=False)
    masklet_id: Mapped[int | None] = mapped_column(_fk("masklets.id", "SET NULL"))
    task_id: Mapped[int | None] = mapped_column(_fk("annotation_tasks.id", "SET NULL"))
    actor_kind: Mapped[ActorKind] = mapped_column(_enum(ActorKind, "actor_kind"), nullable=False)
    actor_id: Mapped[str] = mapped_column(String(128), nullable=False)
    mode: Mapped[EffortMode] = mapped_column(_enum(EffortMode, "mode"), nullable=False)
    frames_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    frames_edited: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    clicks: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    strokes: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    occurred_at: Mapped[dt.datetime] = _created_at()


class Caption(Base):
    __tablename__ = "captions"
    __table_args__ = (
        CheckConstraint("frame_index IS NULL OR frame_index >= 0", name="frame_index_nonneg"),
        Index(None, "video_id", "frame_index"),
        Index(None, "model_version_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(_fk("videos.id", "CASCADE"), nullable=False)
    frame_index: Mapped[int | None] = mapped_column(Integer)  # NULL: the whole video
    text: Mapped[str] = mapped_column(Text, nullable=False)
    source_kind: Mapped[SourceKind] = mapped_column(
        _enum(SourceKind, "source_kind"), nullable=False
    )
    model_version_id: Mapped[int | None] = mapped_column(_fk("model_versions.id"))
    created_at: Mapped[dt.datetime] = _created_at()


class OcrToken(Base):
    __tablename__ = "ocr_tokens"
    __table_args__ = (
        CheckConstraint("frame_index >= 0", name="frame_index_nonneg"),
        CheckConstraint(
            "confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name="confidence_range"
        ),
        Index(None, "video_id", "frame_index"),
        Index(None, "model_version_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    video_id: Mapped[int] = mapped_column(_fk("videos.id", "CASCADE"), nullable=False)
    frame_index: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    bbox_x: Mapped[float] = mapped_column(Float, nullable=False)
    bbox_y: Mapped[float] = mapped_column(Float, nullable=False)
    bbox_w: Mapped[float] = mapped_column(Float, nullable=False)
    bbox_h: Mapped[float] = mapped_column(Float, nullable=False)
    confidence: Mapped[float | None] = mapped_column(Float)
    engine: Mapped[str | None] = mapped_column(String(64))  # e.g. "easyocr", "rapidocr"
    model_version_id: Mapped[int | None] = mapped_column(_fk("model_versions.id"))
    created_at: Mapped[dt.datetime] = _created_at()


class Embedding(Base):
    """A float32 vector for a video, a frame (video + frame_index) or a masklet.

    The vector is inline (``vector``: little-endian float32 bytes, ``dim * 4`` long) or in the blob
    store (``blob_key``); at least one is set. ``subject_id`` is the video id or the masklet id.
    """

    __tablename__ = "embeddings"
    __table_args__ = (
        CheckConstraint("dim > 0", name="dim_positive"),
        CheckConstraint("vector IS NOT NULL OR blob_key IS NOT NULL", name="has_vector"),
        CheckConstraint("vector IS NULL OR length(vector) = dim * 4", name="vector_float32"),
        # One implication per kind (unknown kinds are ck_embeddings_subject_kind's business).
        CheckConstraint(
            "(subject_kind <> 'video' OR (masklet_id IS NULL AND frame_index IS NULL))"
            " AND (subject_kind <> 'frame' OR (masklet_id IS NULL AND frame_index IS NOT NULL))"
            " AND (subject_kind <> 'masklet' OR masklet_id IS NOT NULL)",
            name="subject_consistent",
        ),
        Index(None, "video_id", "frame_index"),
        Index(None, "masklet_id"),
        Index(None, "family", "subject_kind"),
        Index(None, "model_version_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    family: Mapped[str] = mapped_column(String(128), nullable=False)
    model_version_id: Mapped[int | None] = mapped_column(_fk("model_versions.id"))
    subject_kind: Mapped[SubjectKind] = mapped_column(
        _enum(SubjectKind, "subject_kind"), nullable=False
    )
    video_id: Mapped[int] = mapped_column(_fk("videos.id", "CASCADE"), nullable=False)
    masklet_id: Mapped[int | None] = mapped_column(_fk("masklets.id", "CASCADE"))
    frame_index: Mapped[int | None] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    blob_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = _created_at()

    @property
    def subject_id(self) -> int:
        return self.masklet_id if self.subject_kind == SubjectKind.MASKLET else self.video_id


class CurationTag(Base):
    """A curation verdict (FiftyOne): re-annotate, exclude or review a video/frame/masklet."""

    __tablename__ = "curation_tags"
    __table_args__ = (
        CheckConstraint("frame_index IS NULL OR frame_index >= 0", name="frame_index_nonneg"),
        Index(None, "video_id", "tag"),
        Index(None, "masklet_id"),
        Index(None, "consumed_by_round_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(_fk("videos.id", "CASCADE"), nullable=False)
    frame_index: Mapped[int | None] = mapped_column(Integer)
    masklet_id: Mapped[int | None] = mapped_column(_fk("masklets.id", "CASCADE"))
    tag: Mapped[CurationTagKind] = mapped_column(_enum(CurationTagKind, "tag"), nullable=False)
    source: Mapped[str] = mapped_column(String(128), nullable=False)  # e.g. "fiftyone:uniqueness"
    note: Mapped[str | None] = mapped_column(Text)
    # SET NULL: deleting a round makes its tags pending again rather than losing them.
    consumed_by_round_id: Mapped[int | None] = mapped_column(
        _fk("annotation_rounds.id", "SET NULL")
    )
    created_at: Mapped[dt.datetime] = _created_at()


class PipelineRun(Base):
    """One run of a pipeline flow; ``run_key`` makes re-submitting the same work idempotent."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (UniqueConstraint("run_key"), Index(None, "flow", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flow: Mapped[str] = mapped_column(String(128), nullable=False)
    run_key: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "status"),
        nullable=False,
        default=RunStatus.PENDING,
        server_default=RunStatus.PENDING.value,
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created_at()
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime(), nullable=False, server_default=NOW, onupdate=NOW
    )
