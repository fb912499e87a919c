"""Alembic environment for storage/migrations.

Run through ``storage.db.upgrade`` / ``downgrade`` (which build the Alembic Config in code and pass
an open connection in ``config.attributes["connection"]``); no alembic.ini is involved. Offline SQL
generation (``--sql``) works when the Config carries ``sqlalchemy.url``.
"""
from __future__ import annotations

from alembic import context

from storage.schema import Base, UtcDateTime

target_metadata = Base.metadata


def render_item(type_: str, obj, autogen_context):
    """Render project types as plain SQLAlchemy types so revision scripts never import
    storage.schema (a later schema change must not rewrite history)."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure_kwargs(dialect_name: str) -> dict:
    return dict(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table ("move and copy").
        render_as_batch=dialect_name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        render_item=render_item,
    )


def run_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "storage/migrations offline mode needs 'sqlalchemy.url' in the Alembic Config"
        )
    from sqlalchemy.engine import make_url

    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_configure_kwargs(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "storage/migrations expects an open connection in config.attributes['connection']; "
            "run migrations through storage.db.upgrade(engine_or_url) / downgrade(...)"
        )
    context.configure(connection=connection, **_configure_kwargs(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
