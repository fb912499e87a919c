"""storage.schema + storage.db against real SQLite and PostgreSQL databases (no mocks).

Each test gets a database migrated to head (tests/fixtures_db.py), so these also prove that the
migrations create what the ORM expects.
"""
from __future__ import annotations

import datetime as dt
import struct

import pytest
from sqlalchemy import Enum, event, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from storage.db import (
    DatabaseError,
    bulk_insert,
    copy_insert,
    iter_rows,
    make_engine,
    session_scope,
)
from storage.schema import (
    ActorKind,
    AnnotationRound,
    AnnotationTask,
    AppliedAnnotation,
    Base,
    Caption,
    CurationTag,
    CurationTagKind,
    Dataset,
    EffortEvent,
    EffortMode,
    Embedding,
    FrameMask,
    Masklet,
    MaskletStatus,
    ModelStage,
    ModelVersion,
    ModelVersionRound,
    OcrToken,
    PipelineRun,
    RoundStatus,
    RunStatus,
    SourceKind,
    Split,
    SubjectKind,
    TaskKind,
    TaskStatus,
    Video,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
SHA_A = "a" * 64
SHA_B = "b" * 64
# Characters that break naive COPY/CSV encodings.
AWKWARD = "tab\there\nnew line \\ back\\slash 'quote' \"dq\" é 漢字 ,;|"


def _vector(dim: int, seed: float = 0.5) -> bytes:
    return struct.pack(f"<{dim}f", *[seed * (i + 1) for i in range(dim)])


def build_graph(s: Session) -> dict[str, Base]:
    """One fully populated row in every table; returns them by table name."""
    ds = Dataset(name="sav-mini", description="a dataset")
    parent = ModelVersion(
        family="sam2", version="v0", artifact_uri="s3://b/sam2/v0.pt", artifact_sha256=SHA_A,
        config={"image_size": 128}, metrics={"J": 0.5},
    )
    s.add_all([ds, parent])
    s.flush()
    mv = ModelVersion(
        family="sam2", version="v1", artifact_uri="s3://b/sam2/v1.pt", artifact_sha256=SHA_B,
        config={"image_size": 128, "layers": [1, 2, 2, 1]}, metrics={"J": 0.68, "F": 0.79},
        parent_id=parent.id, stage=ModelStage.PRODUCTION, stage_changed_at=T0,
    )
    video = Video(
        dataset=ds, uri="file:///data/v1.mp4", blob_key="sha256/ab/abc.mp4",
        source_path="/data/v1.mp4", sha256=SHA_A, fps=24.0, frame_count=240, width=128,
        height=96, size_bytes=5_000_000_000, split=Split.VAL, ground_truth_uri="file:///gt/v1.json",
    )
    s.add_all([mv, video])
    s.flush()
    rnd = AnnotationRound(
        dataset_id=ds.id, number=1, status=RoundStatus.RUNNING, model_version_id=mv.id,
        settings={"chunk_frames": 32, "iou_threshold": 0.85}, started_at=T0,
        finished_at=T0 + dt.timedelta(hours=2),
    )
    s.add(rnd)
    s.flush()
    lineage = ModelVersionRound(model_version_id=mv.id, round_id=rnd.id)
    masklet = Masklet(
        video=video, object_id=3, label="person", source_kind=SourceKind.MODEL,
        source_model_version_id=mv.id, status=MaskletStatus.IN_REVIEW, round_id=rnd.id,
    )
    s.add_all([lineage, masklet])
    s.flush()
    fm = FrameMask(
        masklet_id=masklet.id, frame_index=7, rle_counts="PPYo05M3N2", height=96, width=128,
        area=321, bbox_x=1.0, bbox_y=2.5, bbox_w=30.0, bbox_h=40.25, predicted_iou=0.91,
        object_score=3.5,
    )
    task = AnnotationTask(
        idempotency_key="ls:proj-1:video-1:r1:0-32:correction", tool="label_studio",
        project_id="1", external_task_id="77", kind=TaskKind.CORRECTION, video_id=video.id,
        round_id=rnd.id, frame_start=0, frame_stop=32, status=TaskStatus.SUBMITTED,
    )
    s.add_all([fm, task])
    s.flush()
    applied = AppliedAnnotation(
        task_id=task.id, tool="label_studio", external_annotation_id="901",
        version="2025-03-01T12:00:00Z", summary={"frames_written": 32},
    )
    effort = EffortEvent(
        round_id=rnd.id, masklet_id=masklet.id, task_id=task.id,
        actor_kind=ActorKind.SCRIPTED_ANNOTATOR, actor_id="scripted-v1", mode=EffortMode.PROPAGATE,
        frames_total=32, frames_edited=5, clicks=12, strokes=3, seconds=41.5, occurred_at=T0,
    )
    caption = Caption(
        video_id=video.id, frame_index=None, text=AWKWARD, source_kind=SourceKind.HUMAN,
        model_version_id=None,
    )
    ocr = OcrToken(
        video_id=video.id, frame_index=4, text="EXIT", bbox_x=10.0, bbox_y=11.0, bbox_w=12.0,
        bbox_h=13.0, confidence=0.93, engine="easyocr", model_version_id=mv.id,
    )
    emb = Embedding(
        family="open_clip", model_version_id=mv.id, subject_kind=SubjectKind.MASKLET,
        video_id=video.id, masklet_id=masklet.id, frame_index=None, dim=8, vector=_vector(8),
        blob_key=None,
    )
    tag = CurationTag(
        video_id=video.id, frame_index=12, masklet_id=masklet.id,
        tag=CurationTagKind.NEEDS_REVIEW, source="fiftyone:uniqueness", note="odd frame",
        consumed_by_round_id=rnd.id,
    )
    run = PipelineRun(
        flow="preannotate", run_key="preannotate:ds1:r1", status=RunStatus.SUCCEEDED,
        params={"round": 1, "videos": [1, 2]}, result={"masklets": 1}, error=None,
        started_at=T0, finished_at=T0 + dt.timedelta(minutes=5),
    )
    s.add_all([applied, effort, caption, ocr, emb, tag, run])
    s.flush()
    rows = {
        "datasets": ds, "model_versions": mv, "videos": video, "annotation_rounds": rnd,
        "model_version_rounds": lineage, "masklets": masklet, "frame_masks": fm,
        "annotation_tasks": task, "applied_annotations": applied, "effort_events": effort,
        "captions": caption, "ocr_tokens": ocr, "embeddings": emb, "curation_tags": tag,
        "pipeline_runs": run,
    }
    return rows


def _column_values(obj: Base) -> dict[str, object]:
    return {a.key: getattr(obj, a.key) for a in inspect(obj).mapper.column_attrs}


def _pk(obj: Base) -> tuple:
    return inspect(obj).identity


def _count(conn_or_session, model) -> int:
    return conn_or_session.execute(select(func.count()).select_from(model)).scalar_one()


# --- engines ----------------------------------------------------------------------------------


def test_engine_backend_settings(engine):
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        else:
            assert engine.dialect.driver == "psycopg"
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_make_engine_rejects_bad_urls_clearly(tmp_path):
    with pytest.raises(DatabaseError, match="mysql"):
        make_engine("mysql://u@h/db")
    missing = tmp_path / "nope" / "x.db"
    with pytest.raises(DatabaseError, match=str(missing.parent)):
        make_engine(f"sqlite:///{missing}")
    with pytest.raises(DatabaseError, match="invalid database URL"):
        make_engine("not a url")
    # Plain postgresql:// always means psycopg 3 (nothing connects here).
    assert make_engine("postgresql://u@127.0.0.1:1/x").dialect.driver == "psycopg"


# --- round trips ------------------------------------------------------------------------------


def test_round_trip_every_table(engine):
    with session_scope(engine) as s:
        rows = build_graph(s)
        expected = {name: (type(obj), _pk(obj), _column_values(obj)) for name, obj in rows.items()}
    assert set(expected) == set(Base.metadata.tables), "build_graph must cover every table"

    with Session(engine) as s:  # a fresh session: values come from the database
        for name, (cls, pk, values) in expected.items():
            got = _column_values(s.get(cls, pk))
            for key, value in values.items():
                assert got[key] == value, f"{name}.{key}: wrote {value!r}, read {got[key]!r}"
        mv = s.get(ModelVersion, expected["model_versions"][1])
        assert mv.parent.version == "v0"
        assert [r.number for r in mv.data_rounds] == [1]
        emb = s.scalars(select(Embedding)).one()
        assert struct.unpack("<8f", emb.vector)[1] == pytest.approx(1.0)
        assert emb.subject_id == emb.masklet_id
        fm = s.scalars(select(FrameMask)).one()
        assert fm.rle == {"size": [96, 128], "counts": "PPYo05M3N2"}
        assert [f.frame_index for f in fm.masklet.frames] == [7]
        assert isinstance(s.scalars(select(Video.split)).one(), Split)


def test_server_defaults_and_utc_timestamps(engine):
    before = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    with session_scope(engine) as s:
        ds = Dataset(name="d")
        s.add(ds)
        s.flush()
        s.add(Video(dataset_id=ds.id, uri="u", sha256=SHA_A, fps=30, frame_count=1, width=1,
                    height=1, size_bytes=0))
        s.add(PipelineRun(flow="f", run_key="k"))
    with Session(engine) as s:
        video = s.scalars(select(Video)).one()
        run = s.scalars(select(PipelineRun)).one()
        assert video.split is Split.TRAIN
        assert run.status is RunStatus.PENDING and run.params == {} and run.result is None
        for stamp in (video.created_at, run.created_at, run.updated_at):
            assert stamp.tzinfo is not None and stamp.utcoffset() == dt.timedelta(0)
            assert before <= stamp <= dt.datetime.now(UTC) + dt.timedelta(minutes=5)
        # Aware values in another zone come back as the same instant, in UTC.
        run.started_at = dt.datetime(2025, 1, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        s.commit()
        s.expire_all()
        assert s.get(PipelineRun, run.id).started_at == dt.datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
        assert run.result is None
        assert s.execute(select(func.count()).where(PipelineRun.result.is_(None))).scalar() == 1


def test_naive_datetimes_are_refused(engine):
    with Session(engine) as s:
        s.add(PipelineRun(flow="f", run_key="k", started_at=dt.datetime(2025, 1, 1)))
        with pytest.raises(StatementError, match="naive datetime"):
            s.flush()


def test_session_scope_commits_or_rolls_back(engine):
    with session_scope(engine) as s:
        s.add(Dataset(name="kept"))
    with pytest.raises(RuntimeError, match="boom"):
        with session_scope(engine) as s:
            s.add(Dataset(name="dropped"))
            s.flush()
            raise RuntimeError("boom")
    with Session(engine) as s:
        assert s.scalars(select(Dataset.name)).all() == ["kept"]


# --- constraints ------------------------------------------------------------------------------


def test_duplicate_idempotency_key_raises(engine):
    with session_scope(engine) as s:
        rows = build_graph(s)
        task = rows["annotation_tasks"]
        dup = AnnotationTask(
            idempotency_key=task.idempotency_key, tool="label_studio", project_id="1",
            external_task_id="78", kind=TaskKind.VERIFICATION, video_id=task.video_id,
            round_id=task.round_id, frame_start=32, frame_stop=64,
        )
        s.add(dup)
        with pytest.raises(IntegrityError, match="idempotency_key"):
            s.flush()
        s.rollback()


def _duplicates(rows):
    """(description, copy of an existing row that must violate a unique constraint)."""
    v, mv, fm = rows["videos"], rows["model_versions"], rows["frame_masks"]
    t, a, r = rows["annotation_tasks"], rows["applied_annotations"], rows["annotation_rounds"]
    return [
        ("dataset name", Dataset(name=rows["datasets"].name)),
        ("video (dataset_id, sha256)", Video(
            dataset_id=v.dataset_id, uri="other", sha256=v.sha256, fps=1, frame_count=1,
            width=1, height=1, size_bytes=1)),
        ("model (family, version)", ModelVersion(
            family=mv.family, version=mv.version, artifact_uri="x", artifact_sha256=SHA_A)),
        ("round (dataset_id, number)", AnnotationRound(dataset_id=r.dataset_id, number=r.number)),
        ("frame mask (masklet_id, frame_index)", FrameMask(
            masklet_id=fm.masklet_id, frame_index=fm.frame_index, rle_counts="0", height=1,
            width=1, area=0, bbox_x=0, bbox_y=0, bbox_w=0, bbox_h=0)),
        ("task (tool, project_id, external_task_id)", AnnotationTask(
            idempotency_key="other", tool=t.tool, project_id=t.project_id,
            external_task_id=t.external_task_id, kind=TaskKind.CORRECTION, video_id=t.video_id,
            round_id=t.round_id, frame_start=0, frame_stop=1)),
        ("applied (tool, external_annotation_id, version)", AppliedAnnotation(
            task_id=t.id, tool=a.tool, external_annotation_id=a.external_annotation_id,
            version=a.version)),
        ("pipeline run_key", PipelineRun(flow="other", run_key=rows["pipeline_runs"].run_key)),
    ]


def test_unique_constraints(engine):
    with Session(engine) as s:
        rows = build_graph(s)
        s.commit()
        for what, dup in _duplicates(rows):
            # A SAVEPOINT per attempt: the graph survives each failure (and SQLite SAVEPOINTs
            # work, which needs make_engine's explicit BEGIN).
            with pytest.raises(IntegrityError):
                with s.begin_nested():
                    s.add(dup)
                    s.flush()
            assert dup not in s, what
        lineage = rows["model_version_rounds"]
        with pytest.raises(IntegrityError):  # Core: the ORM would refuse the duplicate identity
            with s.begin_nested():
                s.execute(ModelVersionRound.__table__.insert(), {
                    "model_version_id": lineage.model_version_id, "round_id": lineage.round_id})
        # An annotation may be applied again once it has a new version: exactly-once per version.
        a = rows["applied_annotations"]
        s.add(AppliedAnnotation(task_id=a.task_id, tool=a.tool,
                                external_annotation_id=a.external_annotation_id, version="v2"))
        s.commit()
        assert _count(s, AppliedAnnotation) == 2


def _enum_columns():
    for table in Base.metadata.sorted_tables:
        for col in table.columns:
            if isinstance(col.type, Enum):
                yield table, col


def test_enum_check_constraints_reject_unknown_values(engine):
    """Every enum column refuses a value outside its enum in the database itself (raw SQL,
    bypassing the ORM), identically on SQLite and PostgreSQL."""
    checked = []
    with Session(engine) as s:
        build_graph(s)
        s.commit()
        for table, col in _enum_columns():
            stmt = text(f'UPDATE {table.name} SET "{col.name}" = :bad')
            with pytest.raises(IntegrityError, match=f"ck_{table.name}_{col.name}"):
                with s.begin_nested():
                    s.execute(stmt, {"bad": "bogus"})
            checked.append(f"{table.name}.{col.name}")
            if (table.name, col.name) == ("embeddings", "subject_kind"):
                continue  # other values need other columns too (ck_embeddings_subject_consistent)
            # ... and every declared value passes the same CHECK.
            for value in col.type.enums:
                sp = s.begin_nested()
                s.execute(text(f'UPDATE {table.name} SET "{col.name}" = :v'), {"v": value})
                sp.rollback()
    assert len(checked) == 13, checked
    assert "masklets.source_kind" in checked and "curation_tags.tag" in checked
    # The ORM refuses unknown values before they reach the database.
    with Session(engine) as s:
        s.add(Masklet(video_id=1, object_id=0, label="x", source_kind="person"))
        with pytest.raises(StatementError, match="person"):
            s.flush()


@pytest.mark.parametrize(
    "table,assignment,constraint",
    [
        ("masklets", "source_model_version_id = NULL", "model_source_has_version"),
        ("effort_events", "frames_edited = 33", "edited_within_total"),
        ("effort_events", "clicks = -1", "counts_nonneg"),
        ("embeddings", "dim = 9", "vector_float32"),
        ("embeddings", "vector = NULL", "has_vector"),
        ("embeddings", "masklet_id = NULL", "subject_consistent"),
        ("annotation_tasks", "frame_stop = 0", "frame_range"),
        ("videos", "sha256 = 'abc'", "sha256_hex"),
        ("videos", "fps = 0", "fps_positive"),
        ("frame_masks", "frame_index = -1", "frame_index_nonneg"),
        ("ocr_tokens", "confidence = 1.5", "confidence_range"),
        ("model_versions", "parent_id = id", "not_own_parent"),
    ],
)
def test_row_check_constraints(engine, table, assignment, constraint):
    with Session(engine) as s:
        build_graph(s)
        s.commit()
        with pytest.raises(IntegrityError, match=f"ck_{table}_{constraint}"):
            s.execute(text(f"UPDATE {table} SET {assignment}"))


def test_foreign_keys_are_enforced(engine):
    with Session(engine) as s:
        s.add(FrameMask(masklet_id=424242, frame_index=0, rle_counts="0", height=1, width=1,
                        area=0, bbox_x=0, bbox_y=0, bbox_w=0, bbox_h=0))
        with pytest.raises(IntegrityError):
            s.flush()


def test_deleting_a_video_cascades_to_what_was_derived_from_it(engine):
    with Session(engine) as s:
        rows = build_graph(s)
        s.commit()
        video_id, effort_id = rows["videos"].id, rows["effort_events"].id
        s.execute(text("DELETE FROM videos WHERE id = :id"), {"id": video_id})
        s.commit()
        for model in (Masklet, FrameMask, AnnotationTask, AppliedAnnotation, Caption, OcrToken,
                      Embedding, CurationTag):
            assert _count(s, model) == 0, model.__tablename__
        # Effort stays with its round (it is what the round cost); its links become NULL.
        s.expire_all()
        effort = s.get(EffortEvent, effort_id)
        assert (effort.masklet_id, effort.task_id) == (None, None)
        assert _count(s, Dataset) == _count(s, AnnotationRound) == 1


def test_provenance_is_protected_and_lineage_is_kept(engine):
    with Session(engine) as s:
        rows = build_graph(s)
        s.commit()
        mv, parent, rnd = rows["model_versions"], rows["model_versions"].parent, rows["annotation_rounds"]
        # A model version that pre-annotated a round (and made masklets) cannot be deleted...
        with pytest.raises(IntegrityError):
            with s.begin_nested():
                s.execute(text("DELETE FROM model_versions WHERE id = :id"), {"id": mv.id})
        # ... nor a round whose data trained a model ...
        with pytest.raises(IntegrityError):
            with s.begin_nested():
                s.execute(text("DELETE FROM annotation_rounds WHERE id = :id"), {"id": rnd.id})
        # ... while removing a parent keeps the child, unlinked.
        s.execute(text("DELETE FROM model_versions WHERE id = :id"), {"id": parent.id})
        s.commit()
        s.expire_all()
        assert s.get(ModelVersion, mv.id).parent_id is None


def test_deleting_a_round_releases_its_curation_tags(engine):
    with Session(engine) as s:
        rows = build_graph(s)
        s.commit()
        tag_id = rows["curation_tags"].id
        # Unpin the round (no model was trained on it), then delete it: its masklets, tasks and
        # effort go with it, and so does the tag on its masklet.
        s.execute(text("DELETE FROM model_version_rounds"))
        s.execute(text("DELETE FROM annotation_rounds"))
        s.commit()
        s.expire_all()
        for model in (Masklet, FrameMask, AnnotationTask, EffortEvent, CurationTag):
            assert _count(s, model) == 0, model.__tablename__
        assert s.get(CurationTag, tag_id) is None
        # A video-level tag survives, and is pending again.
        rnd = AnnotationRound(dataset_id=rows["datasets"].id, number=2)
        s.add(rnd)
        s.flush()
        video_tag = CurationTag(video_id=rows["videos"].id, tag=CurationTagKind.REANNOTATE,
                                source="manual", consumed_by_round_id=rnd.id)
        s.add(video_tag)
        s.commit()
        s.execute(text("DELETE FROM annotation_rounds WHERE id = :id"), {"id": rnd.id})
        s.commit()
        s.expire_all()
        assert s.get(CurationTag, video_tag.id).consumed_by_round_id is None


def test_deleting_a_dataset_removes_everything_but_registry_and_runs(engine):
    with Session(engine) as s:
        rows = build_graph(s)
        s.execute(text("DELETE FROM model_version_rounds"))  # lineage pins the round otherwise
        s.commit()
        s.execute(text("DELETE FROM datasets WHERE id = :id"), {"id": rows["datasets"].id})
        s.commit()
        kept = {"model_versions": 2, "pipeline_runs": 1}  # not owned by a dataset
        for table in Base.metadata.sorted_tables:
            n = s.execute(select(func.count()).select_from(table)).scalar_one()
            assert n == kept.get(table.name, 0), table.name


def test_every_foreign_key_is_indexed_in_the_migrated_database(engine):
    """Reads by FK (and ON DELETE checks) must not scan: every FK's columns lead some index,
    unique constraint or primary key of its table."""
    insp = inspect(engine)
    unindexed = []
    for table in Base.metadata.sorted_tables:
        covering = [tuple(ix["column_names"]) for ix in insp.get_indexes(table.name)]
        covering += [tuple(u["column_names"]) for u in insp.get_unique_constraints(table.name)]
        covering.append(tuple(insp.get_pk_constraint(table.name)["constrained_columns"]))
        for fk in insp.get_foreign_keys(table.name):
            cols = tuple(fk["constrained_columns"])
            if not any(c[: len(cols)] == cols for c in covering):
                unindexed.append(f"{table.name}{cols}")
    assert unindexed == []


def test_big_tables_use_64_bit_ids(engine):
    # PostgreSQL: BIGINT. SQLite: INTEGER PRIMARY KEY, the rowid, which is 64-bit already (a
    # BIGINT primary key there would not auto-increment).
    expected = "BIGINT" if engine.dialect.name == "postgresql" else "INTEGER"
    insp = inspect(engine)
    for name in ("frame_masks", "embeddings", "ocr_tokens", "effort_events"):
        id_col = next(c for c in insp.get_columns(name) if c["name"] == "id")
        assert id_col["type"].__class__.__name__ == expected, name
    mid = _masklet(engine)
    with engine.begin() as conn:  # ids beyond 2**31 work
        conn.execute(FrameMask.__table__.insert(), {
            "id": 2**40, "masklet_id": mid, "frame_index": 0, "rle_counts": "0",
            "height": 1, "width": 1, "area": 0, "bbox_x": 0, "bbox_y": 0, "bbox_w": 0,
            "bbox_h": 0})
    with engine.connect() as conn:
        assert conn.execute(select(FrameMask.id)).scalar_one() == 2**40


# --- bulk I/O ---------------------------------------------------------------------------------


def _masklet(engine) -> int:
    with session_scope(engine) as s:
        ds = Dataset(name="bulk")
        s.add(ds)
        s.flush()
        v = Video(dataset_id=ds.id, uri="u", sha256=SHA_A, fps=24, frame_count=10**6, width=128,
                  height=128, size_bytes=1)
        s.add(v)
        s.flush()
        m = Masklet(video_id=v.id, object_id=1, label="obj", source_kind=SourceKind.GROUND_TRUTH)
        s.add(m)
        s.flush()
        return m.id


def _frame_rows(masklet_id: int, n: int, start: int = 0):
    for i in range(start, start + n):
        yield {
            "masklet_id": masklet_id, "frame_index": i, "rle_counts": f"{i}{AWKWARD}",
            "height": 128, "width": 128, "area": i, "bbox_x": i / 3, "bbox_y": 0.5, "bbox_w": 7.0,
            "bbox_h": 1e-7, "predicted_iou": None if i % 2 else i / (i + 1), "object_score": -2.5,
        }


def _read_frames(conn, masklet_id):
    stmt = (select(*FrameMask.__table__.c).where(FrameMask.masklet_id == masklet_id)
            .order_by(FrameMask.frame_index))
    return [{k: v for k, v in row._mapping.items() if k != "id"} for row in conn.execute(stmt)]


def test_bulk_insert_uses_one_executemany_per_chunk(engine):
    mid = _masklet(engine)
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO FRAME_MASKS"):
            statements.append((executemany, len(parameters) if executemany else 1))

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as conn:
            n = bulk_insert(conn, FrameMask, _frame_rows(mid, 2_345), chunk=1_000)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert n == 2_345
    assert statements == [(True, 1_000), (True, 1_000), (True, 345)]
    with engine.connect() as conn:
        assert _read_frames(conn, mid) == list(_frame_rows(mid, 2_345))


def test_bulk_insert_runs_in_the_callers_transaction(engine):
    mid = _masklet(engine)
    with Session(engine) as s:
        assert bulk_insert(s, FrameMask.__table__, _frame_rows(mid, 10)) == 10
        s.rollback()
        assert _count(s, FrameMask) == 0
    with pytest.raises(ValueError, match="chunk"):
        bulk_insert(None, FrameMask, [], chunk=0)


def test_copy_insert_round_trips_values(engine):
    mid = _masklet(engine)
    cols = [c.name for c in FrameMask.__table__.c if c.name != "id"]
    as_tuples = (tuple(r[c] for c in cols) for r in _frame_rows(mid, 500, start=500))
    with engine.begin() as conn:
        assert copy_insert(conn, FrameMask, _frame_rows(mid, 500), cols) == 500
        assert copy_insert(conn, FrameMask, as_tuples, cols) == 500
    with engine.connect() as conn:
        assert _read_frames(conn, mid) == list(_frame_rows(mid, 1_000))


def test_copy_insert_converts_like_the_orm(engine):
    """Enums, JSON, bytes and aware timestamps go through COPY as the ORM would write them."""
    with session_scope(engine) as s:
        rows = build_graph(s)
        video_id = rows["videos"].id
    started = dt.datetime(2025, 1, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    runs = [
        {"flow": "f", "run_key": f"k{i}", "status": RunStatus.RUNNING if i else "failed",
         "params": {"i": i, "text": AWKWARD, "nested": [1, {"a": None}]},
         "result": None, "error": AWKWARD, "started_at": started}
        for i in range(3)
    ]
    embs = [
        {"family": "clip", "subject_kind": SubjectKind.FRAME, "video_id": video_id,
         "frame_index": i, "dim": 4, "vector": _vector(4, i + 0.25)}
        for i in range(3)
    ]
    with engine.begin() as conn:
        assert copy_insert(conn, PipelineRun, runs, list(runs[0])) == 3
        assert copy_insert(conn, Embedding, embs, list(embs[0])) == 3
    with Session(engine) as s:
        got = s.scalars(select(PipelineRun).where(PipelineRun.flow == "f")
                        .order_by(PipelineRun.run_key)).all()
        assert [r.status for r in got] == [RunStatus.FAILED, RunStatus.RUNNING, RunStatus.RUNNING]
        assert got[2].params == runs[2]["params"] and got[2].result is None
        assert got[0].error == AWKWARD
        assert got[0].started_at == dt.datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
        vecs = s.scalars(select(Embedding.vector).where(Embedding.subject_kind == SubjectKind.FRAME)
                         .order_by(Embedding.frame_index)).all()
        assert vecs == [_vector(4, i + 0.25) for i in range(3)]
    # A naive timestamp is refused on the COPY path too, and nothing of the batch is kept.
    bad = dict(runs[0], run_key="naive", started_at=dt.datetime(2025, 1, 1))
    with pytest.raises((ValueError, StatementError), match="naive datetime"):
        with engine.begin() as conn:
            copy_insert(conn, PipelineRun, [dict(runs[0], run_key="ok"), bad], list(bad))
    with engine.connect() as conn:
        assert _count(conn, PipelineRun) == 4


def test_copy_insert_is_transactional_and_names_bad_columns(engine):
    mid = _masklet(engine)
    cols = [c.name for c in FrameMask.__table__.c if c.name != "id"]
    with engine.connect() as conn:
        copy_insert(conn, FrameMask, _frame_rows(mid, 20), cols)
        conn.rollback()
        assert _count(conn, FrameMask) == 0
        copy_insert(conn, FrameMask, _frame_rows(mid, 20), cols)
        conn.commit()  # commit-as-you-go: the COPY belonged to the connection's transaction
    with engine.connect() as conn:
        assert _count(conn, FrameMask) == 20
        with pytest.raises(KeyError, match="frame_masks.*'mask'"):
            copy_insert(conn, FrameMask, [], ["masklet_id", "mask"])
        # A duplicate (masklet_id, frame_index) fails the whole COPY, naming the constraint.
        with pytest.raises(IntegrityError, match="uq_frame_masks_masklet_id_frame_index|UNIQUE"):
            copy_insert(conn, FrameMask, _frame_rows(mid, 1), cols)


def test_iter_rows_streams_in_batches(engine):
    mid = _masklet(engine)
    cols = [c.name for c in FrameMask.__table__.c if c.name != "id"]
    with engine.begin() as conn:
        copy_insert(conn, FrameMask, _frame_rows(mid, 2_500), cols)
    stmt = select(FrameMask.frame_index).order_by(FrameMask.frame_index)
    with engine.connect() as conn:
        seen = []
        for row in iter_rows(conn, stmt, batch=100):
            seen.append(row.frame_index)
            if len(seen) == 150 and engine.dialect.name == "postgresql":
                # Mid-stream, the rows are still on the server: a server-side cursor is open.
                open_cursors = conn.exec_driver_sql("SELECT count(*) FROM pg_cursors").scalar()
                assert open_cursors >= 1
        assert seen == list(range(2_500))
        # Stopping early closes the cursor; the connection stays usable.
        gen = iter_rows(conn, stmt, batch=50)
        assert [next(gen).frame_index for _ in range(3)] == [0, 1, 2]
        gen.close()
        if engine.dialect.name == "postgresql":
            assert conn.exec_driver_sql("SELECT count(*) FROM pg_cursors").scalar() == 0
        assert _count(conn, FrameMask) == 2_500
    with Session(engine) as s:  # ORM objects, loaded a batch at a time
        frames = [row[0] for row in iter_rows(s, select(FrameMask).order_by(FrameMask.id), 500)]
        assert len(frames) == 2_500 and isinstance(frames[0], FrameMask)
    with pytest.raises(ValueError, match="batch"):
        next(iter_rows(None, stmt, batch=0))
