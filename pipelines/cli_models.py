"""`dataengine models ...`: look at and manage the model registry from the command line.

Components come only from `pipelines.settings.Settings` (database engine, blob store), so the CLI
talks to whatever the environment configures (DATAENGINE_DATABASE_URL, DATAENGINE_BLOB_URI, or
the embedded defaults under DATAENGINE_WORK_DIR). Heavy imports (SQLAlchemy, the registry) happen
inside the commands so `dataengine --help` stays fast.

Errors the user can fix (unknown version, corrupt artifact, bad JSON) print one line to stderr
and exit with status 1 (2 for a bad option value), never a traceback.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from models.registry import ModelRegistry, ModelVersionInfo

models_app = typer.Typer(
    name="models",
    help="The model registry: list, show, register and promote model versions.",
    no_args_is_help=True,
)

# How many metrics the list table shows per version (the first ones, in the order they were
# recorded: trainers put the headline numbers first).
KEY_METRICS = 3


def register(app: typer.Typer) -> None:
    """Attach the `models` command group to the top-level CLI."""
    app.add_typer(models_app, name="models")


@contextmanager
def _open_registry() -> Iterator[ModelRegistry]:
    """A registry over the configured database and blob store. The database is migrated to head
    first: with the embedded defaults the CLI is often the first thing to touch a fresh work dir,
    and Alembic's upgrade is a no-op on a database that is already current."""
    from models.registry import ModelRegistry
    from pipelines.settings import Settings
    from storage.db import upgrade

    settings = Settings()
    engine = settings.engine()
    try:
        upgrade(engine)
        yield ModelRegistry(engine, settings.blob_store())
    finally:
        engine.dispose()


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can act on into one clear line and exit status 1."""
    from models.registry import RegistryError
    from storage.blobs import BlobStoreError
    from storage.db import DatabaseError

    try:
        yield
    except (RegistryError, BlobStoreError, DatabaseError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def _console():
    # Built per command, so it writes to the sys.stdout of the moment (CliRunner swaps it).
    from rich.console import Console

    return Console(highlight=False)


def _fmt_time(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t is not None else "-"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _key_metrics(metrics: dict[str, Any]) -> str:
    items = list(metrics.items())
    shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in items[:KEY_METRICS])
    more = len(items) - KEY_METRICS
    return shown + (f" (+{more})" if more > 0 else "")


def _parent(info: ModelVersionInfo) -> str:
    if info.parent_version is None:
        return "-"
    if info.parent_family == info.family:
        return info.parent_version
    return f"{info.parent_family}/{info.parent_version}"


def _json_option(value: str | None, option: str) -> dict[str, Any]:
    """A JSON object given inline (`'{"j": 0.7}'`) or as `@path/to/file.json`."""
    if value is None:
        return {}
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=option) from None
    if not isinstance(data, dict):
        raise typer.BadParameter(
            f"expected a JSON object, got {type(data).__name__}", param_hint=option
        )
    return data


# --- commands --------------------------------------------------------------------------------------


@models_app.command("list")
def list_cmd(
    family: str | None = typer.Option(None, "--family", "-f", help="Only this model family."),
) -> None:
    """List registered model versions (family, version, stage, created, key metrics, parent)."""
    from rich.table import Table
    from rich.text import Text

    with _user_errors(), _open_registry() as registry:
        versions = registry.list(family)
    console = _console()
    if not versions:
        console.print(
            f"no model versions registered{f' in family {family!r}' if family else ''}",
            markup=False,
        )
        return
    table = Table(title="model versions")
    for column in ("family", "version", "stage", "created", "key metrics", "parent"):
        table.add_column(column, overflow="fold")
    stage_style = {"production": "bold green", "candidate": "yellow", "retired": "dim"}
    for v in versions:
        # Text(): values are data, never rich markup (a "[" in a metric name must print as is).
        table.add_row(
            Text(v.family), Text(v.version), Text(v.stage.value, style=stage_style[v.stage.value]),
            Text(_fmt_time(v.created_at)), Text(_key_metrics(v.metrics)), Text(_parent(v)),
        )
    console.print(table)


@models_app.command("show")
def show_cmd(family: str, version: str) -> None:
    """Every field of one version, its metrics and config as JSON, and its lineage."""
    with _user_errors(), _open_registry() as registry:
        info = registry.get(family, version)
        lineage = registry.lineage(family, version)
    lines = [
        f"{info.ref}",
        f"  id:               {info.id}",
        f"  stage:            {info.stage.value}",
        f"  stage changed:    {_fmt_time(info.stage_changed_at)}",
        f"  created:          {_fmt_time(info.created_at)}",
        f"  artifact:         {info.artifact_uri}",
        f"  sha256:           {info.artifact_sha256}",
        f"  parent:           {_parent(info)}",
        f"  data rounds:      {', '.join(map(str, info.rounds)) or '-'}",
        f"  notes:            {info.notes or '-'}",
        "  lineage:          " + " <- ".join([info.ref] + [p.ref for p in lineage]),
        "  metrics:",
        _indent(json.dumps(info.metrics, indent=2, sort_keys=False)),
        "  config:",
        _indent(json.dumps(info.config, indent=2, sort_keys=False)),
    ]
    # Plain echo, not rich: JSON must come out verbatim (no markup, no re-wrapping).
    typer.echo("\n".join(lines))


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


@models_app.command("promote")
def promote_cmd(family: str, version: str) -> None:
    """Make FAMILY VERSION the production version; the previous one is retired."""
    with _user_errors(), _open_registry() as registry:
        result = registry.promote(family, version)
    for note in result.notes:
        typer.echo(f"note: {note}")
    if not result.changed:
        return
    retired = f"; retired {result.retired.version}" if result.retired else ""
    typer.echo(
        f"promoted {result.promoted.ref} to production "
        f"(was {result.previous_stage.value}){retired}"
    )


@models_app.command("retire")
def retire_cmd(family: str, version: str) -> None:
    """Take FAMILY VERSION out of service (a retired version can be promoted again)."""
    from storage.schema import ModelStage

    with _user_errors(), _open_registry() as registry:
        before = registry.get(family, version).stage
        info = registry.retire(family, version)
    typer.echo(f"retired {info.ref} (was {before.value})")
    if before is ModelStage.PRODUCTION:
        typer.echo(f"note: family {family!r} has no production version now")


@models_app.command("register")
def register_cmd(
    family: str,
    path: Path = typer.Argument(..., help="The artifact (e.g. a SAM 2 checkpoint .pt)."),
    version: str | None = typer.Option(None, "--version", help="Default: <family>-v<n>."),
    metrics_json: str | None = typer.Option(
        None, "--metrics-json", help="Metrics as a JSON object, inline or @file.json."
    ),
    config_json: str | None = typer.Option(
        None, "--config-json", help="Training config as a JSON object, inline or @file.json."
    ),
    parent: str | None = typer.Option(
        None, "--parent", help="The version it was fine-tuned from (same family, or FAMILY/VERSION)."
    ),
    rounds: list[int] = typer.Option(
        [], "--round", help="annotation_rounds id whose data trained it (repeatable)."
    ),
    notes: str = typer.Option("", "--notes", help="Free text kept with the version."),
) -> None:
    """Upload PATH to the blob store and register it as a version of FAMILY.

    Registering a file that the family already holds prints the existing version instead.
    """
    metrics = _json_option(metrics_json, "--metrics-json")
    config = _json_option(config_json, "--config-json")
    parent_family, parent_version = None, parent
    if parent is not None and "/" in parent:
        parent_family, parent_version = parent.split("/", 1)
    with _user_errors(), _open_registry() as registry:
        before = {v.version for v in registry.list(family)}
        info = registry.register(
            family, path, version=version, config=config, metrics=metrics,
            parent_version=parent_version, parent_family=parent_family, rounds=rounds,
            notes=notes,
        )
    if info.version in before:
        typer.echo(
            f"{path} is already registered as {info.ref} (sha256 {info.artifact_sha256}); "
            "nothing changed"
        )
    else:
        typer.echo(
            f"registered {info.ref} ({info.stage.value}, sha256 {info.artifact_sha256}) "
            f"at {info.artifact_uri}"
        )
