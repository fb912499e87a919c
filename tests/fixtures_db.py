"""Database fixtures shared by the whole suite (imported into tests/conftest.py).

- ``db_url``: a database migrated to head, isolated per test, parametrized over SQLite and
  PostgreSQL (``[sqlite]`` / ``[postgres]``; the latter carries ``pytest.mark.postgres``).
- ``engine``: ``storage.db.make_engine(db_url)``, disposed after the test.
- ``pg_url`` / ``sqlite_url``: one backend only (mark tests using ``pg_url`` with
  ``@pytest.mark.postgres`` yourself: a fixture cannot mark the test that requests it).
- ``empty_db_url``: a fresh, never-migrated database on each backend (for migration tests).

PostgreSQL (127.0.0.1:5432, user postgres, trust auth): one uniquely named database per test
session, migrated once, emptied (TRUNCATE) after every test that used it, and dropped with
``DROP DATABASE ... WITH (FORCE)`` when the session ends. SQLite: a template file is migrated once
per session and copied for each test (a copy takes milliseconds, a migration ~0.1 s).
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

__all__ = [
    "PG_HOST",
    "PG_PORT",
    "PG_USER",
    "db_url",
    "empty_db_url",
    "engine",
    "pg_url",
    "sqlite_url",
    # private fixtures the public ones depend on: pytest finds fixtures by name in conftest
    "_pg_session_database",
    "_sqlite_template",
]

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"


def pg_database_url(name: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _pg_admin():
    """An autocommit connection to the maintenance database (CREATE/DROP DATABASE cannot run in
    a transaction). Fails the test with the address when the server does not answer."""
    import psycopg

    try:
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
            autocommit=True, connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER!r} ({exc}); "
            "start it with infra/postgres/ensure_running.sh or deselect with -m 'not postgres'",
            pytrace=False,
        )


def create_pg_database(prefix: str = "dataengine_test") -> str:
    """Create an empty, uniquely named database; returns its name."""
    from psycopg import sql

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_pg_database(name: str) -> None:
    from psycopg import sql

    with _pg_admin() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _truncate_all(url: str) -> None:
    """Empty every table of the schema (keeps alembic_version) and restart the id sequences."""
    from storage.db import make_engine
    from storage.schema import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            # A test that left a transaction open would otherwise hang the suite here.
            conn.exec_driver_sql("SET LOCAL lock_timeout = '15s'")
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def _pg_session_database() -> Iterator[str]:
    from storage.db import upgrade

    name = create_pg_database()
    url = pg_database_url(name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture
def pg_url(_pg_session_database: str) -> Iterator[str]:
    """PostgreSQL only: the session database (at head), emptied after the test."""
    yield _pg_session_database
    _truncate_all(_pg_session_database)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> str:
    from storage.db import make_engine, upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # last connection closed: SQLite checkpoints the WAL into the main file
    return str(path)


@pytest.fixture
def sqlite_url(_sqlite_template: str, tmp_path) -> str:
    """SQLite only: a private database file at head."""
    path = tmp_path / "dataengine.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """A database at head on each backend, private to this test."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def engine(db_url: str):
    from storage.db import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request, tmp_path) -> Iterator[str]:
    """A fresh database with no tables at all (not migrated), dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = create_pg_database("dataengine_empty")
    try:
        yield pg_database_url(name)
    finally:
        drop_pg_database(name)
