"""Engines, sessions, migrations and bulk I/O for the metadata database (SQLite or PostgreSQL).

Everything takes explicit arguments (a URL, an engine, a connection); nothing here reads the
environment. Only ``pipelines/settings.py`` decides which database to use.

Bulk rules: large tables (frame masks) are written with ``copy_insert`` (PostgreSQL COPY) or
``bulk_insert`` (executemany in chunks), never one statement per row, and read with ``iter_rows``,
which streams (server-side cursor on PostgreSQL) instead of loading a table into memory.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Row, make_url
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.types import JSON, TypeDecorator
from sqlalchemy.types import Enum as SAEnum

__all__ = [
    "DatabaseError",
    "MIGRATIONS_DIR",
    "make_engine",
    "session_scope",
    "alembic_config",
    "upgrade",
    "downgrade",
    "current_revision",
    "head_revision",
    "bulk_insert",
    "copy_insert",
    "iter_rows",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

EngineOrUrl = Engine | str | URL
Conn = Connection | Session
TableLike = Any  # a sqlalchemy Table or an ORM class mapped to one


class DatabaseError(RuntimeError):
    """A database set-up problem (bad URL, unsupported backend, failed migration check)."""


# --- engines and sessions ----------------------------------------------------------------------


def make_engine(
    url: str | URL,
    *,
    echo: bool = False,
    sqlite_busy_timeout_s: float = 30.0,
    **engine_kwargs: Any,
) -> Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql[+psycopg]://...``).

    SQLite: foreign keys ON, WAL journal (readers never block the writer), a busy timeout so
    concurrent writers wait instead of failing, and real BEGIN/COMMIT transactions (the stdlib
    driver's implicit ones break SAVEPOINTs and transactional DDL). PostgreSQL: always psycopg 3
    (``postgresql://`` is rewritten to ``postgresql+psycopg://``), with pre-ping on pool checkout.
    """
    try:
        u = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise DatabaseError(f"invalid database URL {str(url)!r}: {exc}") from exc
    driver = u.drivername
    if driver in ("postgresql", "postgres") or driver.startswith("postgres+"):
        u = u.set(drivername="postgresql+psycopg")
        driver = u.drivername
    backend = driver.split("+", 1)[0]
    if backend == "postgresql":
        engine_kwargs.setdefault("pool_pre_ping", True)
        return create_engine(u, echo=echo, **engine_kwargs)
    if backend == "sqlite":
        _check_sqlite_path(u)
        engine = create_engine(u, echo=echo, **engine_kwargs)
        _install_sqlite_hooks(engine, u, sqlite_busy_timeout_s)
        return engine
    raise DatabaseError(
        f"unsupported database URL scheme {driver!r} in "
        f"{u.render_as_string(hide_password=True)!r}: use sqlite:/// or postgresql+psycopg://"
    )


def _sqlite_is_memory(u: URL) -> bool:
    db = u.database or ""
    return db in ("", ":memory:") or "mode=memory" in db or u.query.get("mode") == "memory"


def _check_sqlite_path(u: URL) -> None:
    if _sqlite_is_memory(u) or (u.database or "").startswith("file:"):
        return
    parent = Path(u.database).expanduser().resolve().parent
    if not parent.is_dir():
        raise DatabaseError(
            f"SQLite database {u.database!r}: its directory {parent} does not exist; create it first"
        )


def _install_sqlite_hooks(engine: Engine, u: URL, busy_timeout_s: float) -> None:
    wal = not _sqlite_is_memory(u)
    busy_ms = max(0, int(busy_timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below emits BEGIN itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            if wal:
                cur.execute("PRAGMA journal_mode=WAL")
                # Safe with WAL (no corruption on power loss), far fewer fsyncs than FULL.
                cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


@contextmanager
def session_scope(engine: Engine, **session_kwargs: Any) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back (and re-raise) on any error.

    Objects stay readable after the block (``expire_on_commit=False``), so callers can return
    them; they are detached, so reload them in a new scope before changing them.
    """
    session_kwargs.setdefault("expire_on_commit", False)
    session = Session(engine, **session_kwargs)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --- migrations ----------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None):
    """An Alembic Config built in code: script_location is the migrations shipped in this package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _engine_of(engine_or_url: EngineOrUrl) -> tuple[Engine, bool]:
    """The engine, and whether we created it (and so must dispose of it)."""
    if isinstance(engine_or_url, Engine):
        return engine_or_url, False
    return make_engine(engine_or_url), True


def _run_alembic(engine_or_url: EngineOrUrl, command: Callable[[Any], None]) -> None:
    engine, owned = _engine_of(engine_or_url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                _run_sqlite_migration(conn, command)
            else:
                with conn.begin():  # PostgreSQL DDL is transactional: all or nothing
                    command(alembic_config(conn))
    finally:
        if owned:
            engine.dispose()


def _run_sqlite_migration(conn: Connection, command: Callable[[Any], None]) -> None:
    """Batch migrations rebuild tables (copy, drop, rename); with foreign keys ON, dropping the old
    table would fire ON DELETE CASCADE on the referencing rows. SQLite's documented procedure:
    switch foreign keys off outside the transaction, migrate, verify with foreign_key_check."""
    raw = conn.connection.driver_connection  # no transaction is open yet on this connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        with conn.begin():
            command(alembic_config(conn))
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise DatabaseError(
                    f"migration left {len(broken)} rows violating foreign keys "
                    f"(table, rowid, parent, fk index), first: {tuple(broken[0])}; rolled back"
                )
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def upgrade(engine_or_url: EngineOrUrl, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the newest)."""
    from alembic import command

    _run_alembic(engine_or_url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(engine_or_url: EngineOrUrl, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (default: ``base``, i.e. drop every table)."""
    from alembic import command

    _run_alembic(engine_or_url, lambda cfg: command.downgrade(cfg, revision))


def current_revision(engine_or_url: EngineOrUrl) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine, owned = _engine_of(engine_or_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def head_revision() -> str:
    """The newest revision shipped in storage/migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise DatabaseError(f"no migration revisions found in {MIGRATIONS_DIR / 'versions'}")
    return head


# --- bulk I/O ------------------------------------------------------------------------------------


def _as_table(table: TableLike) -> Table:
    tbl = getattr(table, "__table__", table)
    if not isinstance(tbl, Table):
        raise TypeError(f"expected a Table or an ORM class, got {table!r}")
    return tbl


def _as_connection(conn: Conn) -> Connection:
    """Sessions are accepted too: their current connection (same transaction) is used."""
    return conn.connection() if isinstance(conn, Session) else conn


def bulk_insert(
    conn: Conn, table: TableLike, rows: Iterable[Mapping[str, Any]], chunk: int = 5000
) -> int:
    """Insert ``rows`` (dicts keyed by column name, same keys in every row) with one executemany
    per ``chunk`` rows. Runs in the caller's transaction; returns the number of rows written.
    Memory stays at one chunk, so ``rows`` may be a generator of any length."""
    if chunk < 1:
        raise ValueError(f"bulk_insert chunk must be >= 1, got {chunk}")
    tbl = _as_table(table)
    connection = _as_connection(conn)
    stmt = insert(tbl)
    it = iter(rows)
    total = 0
    while batch := list(islice(it, chunk)):
        connection.execute(stmt, batch)  # a list of parameter sets: executemany
        total += len(batch)
    return total


def copy_insert(
    conn: Conn,
    table: TableLike,
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    columns: Sequence[str],
) -> int:
    """Insert ``rows`` with PostgreSQL ``COPY ... FROM STDIN`` through psycopg 3 (the fastest
    path, for the largest tables). Rows are dicts keyed by column name or sequences in
    ``columns`` order. Values are converted like the ORM would: enums to their values, JSON
    columns serialised, UTC timestamps normalised. Runs in the caller's transaction; returns the
    number of rows. On SQLite (or another driver) it falls back to ``bulk_insert``."""
    tbl = _as_table(table)
    cols = list(columns)
    unknown = [c for c in cols if c not in tbl.c]
    if unknown:
        raise KeyError(f"copy_insert: table {tbl.name!r} has no column(s) {unknown}")
    if not cols:
        raise ValueError(f"copy_insert into {tbl.name!r}: no columns given")
    connection = _as_connection(conn)
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "psycopg":
        return bulk_insert(connection, tbl, (_row_dict(r, cols) for r in rows))

    import psycopg
    from psycopg import sql

    if not connection.in_transaction():
        connection.begin()  # so that the caller's commit() covers the COPY
    # Only columns whose type changes values get a converter: the loop below is the hot path.
    converters = [
        (i, f) for i, c in enumerate(cols)
        if (f := _copy_converter(tbl.c[c].type, connection.dialect)) is not None
    ]
    target = sql.Identifier(tbl.schema, tbl.name) if tbl.schema else sql.Identifier(tbl.name)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    )
    raw = connection.connection.driver_connection
    n = 0
    try:
        with raw.cursor() as cur, cur.copy(stmt) as copy:
            for row in rows:
                values = _row_values(row, cols)
                if converters:
                    values = list(values)
                    for i, convert in converters:
                        if values[i] is not None:
                            values[i] = convert(values[i])
                copy.write_row(values)
                n += 1
    except psycopg.Error as exc:
        # Same exception classes as bulk_insert (IntegrityError on a duplicate key, ...), so
        # callers need not know which path ran. The transaction is aborted: roll it back.
        raise sa_exc.DBAPIError.instance(
            stmt.as_string(raw), None, exc, psycopg.Error, dialect=connection.dialect
        ) from exc
    return n


def _row_values(row: Mapping[str, Any] | Sequence[Any], cols: list[str]) -> Sequence[Any]:
    if isinstance(row, Mapping):
        # A missing key writes NULL; server defaults apply only to columns left out of `columns`.
        return list(map(row.get, cols))
    if len(row) != len(cols):
        raise ValueError(f"copy_insert: row has {len(row)} values for {len(cols)} columns {cols}")
    return row


def _row_dict(row: Mapping[str, Any] | Sequence[Any], cols: list[str]) -> dict[str, Any]:
    return dict(zip(cols, _row_values(row, cols)))


def _copy_converter(col_type, dialect) -> Callable[[Any], Any] | None:
    """Non-NULL Python value -> value psycopg can COPY, mirroring what the ORM would bind for
    this column type; None where psycopg's own adaptation already agrees."""
    if isinstance(col_type, TypeDecorator):  # e.g. UtcDateTime: normalise to UTC
        return lambda v: col_type.process_bind_param(v, dialect)
    if isinstance(col_type, JSON):
        return json.dumps
    if isinstance(col_type, SAEnum):  # store the enum's value, as the Enum type does
        return lambda v: v.value if isinstance(v, Enum) else v
    return None


def iter_rows(conn: Conn, stmt: Executable, batch: int = 1000) -> Iterator[Row]:
    """Stream the rows of ``stmt`` ``batch`` at a time (``yield_per``: a server-side cursor on
    PostgreSQL), so a table of any size is read with bounded memory. With a Session and an ORM
    select, each row holds ORM objects (``row[0]``). Stop early freely: the cursor is closed."""
    if batch < 1:
        raise ValueError(f"iter_rows batch must be >= 1, got {batch}")
    result = conn.execute(stmt.execution_options(yield_per=batch))
    try:
        for partition in result.partitions():
            yield from partition
    finally:
        result.close()
