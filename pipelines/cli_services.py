"""`dataengine services up|down|status`: the local Label Studio server (issue 4).

Everything comes from `pipelines.settings.Settings`: the port from `label_studio_url` (a loopback
URL), the admin user, password and legacy token from `label_studio_username/_password/_token`, and
the folders under `<work_dir>/labelstudio/` (`data/`: the server's database; `media/`: the
local-files root that projects' storages point into). Secrets go to the server scripts through
their environment only and are never printed.
"""
from __future__ import annotations

from urllib.parse import urlparse

import typer

services_app = typer.Typer(
    name="services",
    help="Start, stop and check the local services (Label Studio).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Attach the `services` command group to the top-level CLI."""
    app.add_typer(services_app, name="services")


def _server():
    from annotation.labelstudio.server import LocalServer
    from pipelines.settings import Settings

    s = Settings()
    u = urlparse(s.label_studio_url)
    if u.hostname not in ("127.0.0.1", "localhost") or not u.port:
        typer.echo(f"error: label_studio_url {s.label_studio_url!r} is not a loopback URL with a "
                   "port; `services` only runs a local server", err=True)
        raise typer.Exit(2)
    base = (s.work_dir / "labelstudio").resolve()
    return LocalServer(
        port=u.port, data_dir=base / "data", media_root=base / "media",
        username=s.label_studio_username,
        password=s.label_studio_password.get_secret_value(),
        token=s.label_studio_token.get_secret_value(),
    )


@services_app.command("up")
def up() -> None:
    """Start Label Studio (headless, loopback) and wait until it answers."""
    from annotation.labelstudio.server import LabelStudioServerError

    server = _server()
    try:
        server.start()
    except LabelStudioServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"label-studio: running at {server.url} (data {server.data_dir}, "
               f"media root {server.media_root}, log {server.log_file})")


@services_app.command("down")
def down() -> None:
    """Stop Label Studio (no-op when it is not running)."""
    from annotation.labelstudio.server import LabelStudioServerError

    server = _server()
    try:
        server.stop()
    except LabelStudioServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("label-studio: stopped")


@services_app.command("status")
def status() -> None:
    """Say whether Label Studio runs and answers (exit 0 only when it does)."""
    server = _server()
    state = server.status()
    typer.echo(f"label-studio: {state} ({server.url})")
    raise typer.Exit(0 if state == "running" else 3)
