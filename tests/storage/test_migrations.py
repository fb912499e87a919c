"""The Alembic migrations shipped in storage/migrations, on fresh SQLite and PostgreSQL databases."""
from __future__ import annotations

import ast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    UniqueConstraint,
    inspect,
)

from storage.db import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    upgrade,
)
from storage.schema import Base

SCHEMA_TABLES = set(Base.metadata.tables)


def _diff(engine, metadata: MetaData) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(ctx, metadata)


def test_upgrade_head_then_downgrade_base(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) == SCHEMA_TABLES | {"alembic_version"}

        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}

        upgrade(empty_db_url)  # a URL works as well as an engine; and it is repeatable
        assert current_revision(engine) == head_revision()
        upgrade(engine)  # already at head: a no-op
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_autogenerate_finds_no_difference_between_orm_and_migrations(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        upgrade(engine)
        assert _diff(engine, Base.metadata) == []

        # Control: the comparison does see a difference when there is one.
        changed = MetaData(naming_convention=Base.metadata.naming_convention)
        for table in Base.metadata.tables.values():
            table.to_metadata(changed)
        changed.tables["videos"].append_column(Column("extra", Integer))
        Index("ix_masklets_label", changed.tables["masklets"].c.label)
        kinds = sorted(d[0] for d in _diff(engine, changed))
        assert kinds == ["add_column", "add_index"]
    finally:
        engine.dispose()


def test_migrated_constraints_are_named_as_in_the_orm(empty_db_url):
    """Autogenerate cannot compare CHECK constraints: compare their names (and the unique
    constraints', foreign keys' and indexes') between the migrated database and the ORM."""
    engine = make_engine(empty_db_url)
    try:
        upgrade(engine)
        insp = inspect(engine)
        for table in Base.metadata.sorted_tables:
            orm = {
                "check": {c.name for c in table.constraints if isinstance(c, CheckConstraint)},
                "unique": {c.name for c in table.constraints if isinstance(c, UniqueConstraint)},
                "fk": {c.name for c in table.foreign_key_constraints},
                "index": {i.name for i in table.indexes},
            }
            db = {
                "check": {c["name"] for c in insp.get_check_constraints(table.name)},
                "unique": {c["name"] for c in insp.get_unique_constraints(table.name)},
                "fk": {c["name"] for c in insp.get_foreign_keys(table.name)},
                # PostgreSQL also lists the indexes behind unique constraints: not ours to name.
                "index": {
                    i["name"] for i in insp.get_indexes(table.name)
                    if "duplicates_constraint" not in i
                },
            }
            assert db == orm, table.name
        enum_checks = {c["name"] for c in insp.get_check_constraints("masklets")}
        assert {"ck_masklets_source_kind", "ck_masklets_status"} <= enum_checks
    finally:
        engine.dispose()


def test_sqlite_foreign_keys_are_back_on_after_migrating(sqlite_url):
    """Migrations run with foreign keys off on SQLite (batch table rebuilds need it); the pooled
    connection they used must come back with them on."""
    engine = make_engine(sqlite_url)
    try:
        downgrade(engine, "base")
        upgrade(engine)
        for _ in range(3):  # whichever pooled connection is handed out
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_one_head_and_frozen_revision_scripts():
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [head_revision()]
    assert MIGRATIONS_DIR.joinpath("env.py").is_file()
    for path in MIGRATIONS_DIR.joinpath("versions").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        }
        assert not any(m and m.split(".")[0] == "storage" for m in imported), (
            f"{path.name} imports the live schema; revision scripts must be frozen"
        )


def test_unknown_revision_is_a_clear_error(sqlite_url):
    with pytest.raises(CommandError, match="nope"):
        upgrade(sqlite_url, "nope")


def test_every_source_kind_of_the_orm_is_allowed_by_the_migrated_checks(empty_db_url):
    """Migration 0002 widened the source-kind CHECKs for re-propagated masklets: each kind the
    ORM knows is accepted by the migrated database, an unknown one is still refused; and going
    back to 0001 removes what the old schema cannot hold."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from storage.schema import SourceKind

    engine = make_engine(empty_db_url)
    try:
        upgrade(engine)
        with engine.begin() as c:
            c.execute(text("INSERT INTO datasets (id, name) VALUES (1, 'd')"))
            c.execute(text("INSERT INTO model_versions (id, family, version, artifact_uri, "
                           "artifact_sha256, config, metrics) VALUES (1, 'sam2', 'v1', "
                           "'file:///x', :sha, '{}', '{}')"), {"sha": "ab" * 32})
            c.execute(text("INSERT INTO videos (id, dataset_id, uri, sha256, fps, frame_count, "
                           "width, height, size_bytes) VALUES (1, 1, 'v.mp4', :sha, 1.0, 2, 8, 8, 1)"),
                      {"sha": "cd" * 32})
        for i, kind in enumerate(SourceKind):
            with engine.begin() as c:
                c.execute(text("INSERT INTO masklets (video_id, object_id, label, source_kind, "
                               "source_model_version_id, status) VALUES (1, :o, 'x', :k, 1, "
                               "'predicted')"), {"o": i, "k": kind.value})
        with pytest.raises(IntegrityError):
            with engine.begin() as c:
                c.execute(text("INSERT INTO masklets (video_id, object_id, label, source_kind, "
                               "status) VALUES (1, 99, 'x', 'bogus', 'predicted')"))
        downgrade(engine, "0001")
        with engine.connect() as c:
            kinds = set(c.scalars(text("SELECT source_kind FROM masklets")))
        assert kinds == {k.value for k in SourceKind} - {"repropagated"}
    finally:
        engine.dispose()
