"""`dataengine services up|down|status`: the local Label Studio server (issue 4), and with
`up --ml-backend` the interactive SAM 2 ML backend (`dataengine annotate ml-backend` in the
background, PID file `<work_dir>/labelstudio/ml_backend.pid`).

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
def up(
    ml_backend: bool = typer.Option(False, "--ml-backend/--no-ml-backend",
                                    help="Also start the interactive SAM 2 ML backend."),
    ml_port: int = typer.Option(9090, help="Port of the ML backend."),
    dataset: list[str] = typer.Option([], help="Datasets whose correction projects get the ML backend."),
) -> None:
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
    if ml_backend:
        _start_ml_backend(server.data_dir.parent, ml_port, dataset)


def _ml_pid_file(base):
    return base / "ml_backend.pid"


def _pid_alive(pid_file) -> int | None:
    import os

    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _start_ml_backend(base, port: int, datasets: list[str]) -> None:
    """`dataengine annotate ml-backend` in the background (own session, PID file, log)."""
    import subprocess
    import sys
    import time
    import urllib.request

    pid_file, log_file = _ml_pid_file(base), base / "ml_backend.log"
    if (pid := _pid_alive(pid_file)) is not None:
        typer.echo(f"ml-backend: already running (pid {pid})")
        return
    cmd = [sys.executable, "-m", "pipelines.cli", "annotate", "ml-backend", "--port", str(port)]
    for d in datasets:
        cmd += ["--dataset", d]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pid_file.write_text(str(proc.pid))
    url = f"http://127.0.0.1:{port}/health"
    for _ in range(240):
        if proc.poll() is not None:
            typer.echo(f"error: ml-backend exited (code {proc.returncode}); log {log_file}", err=True)
            raise typer.Exit(1)
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    typer.echo(f"ml-backend: running at http://127.0.0.1:{port} (pid {proc.pid}, log {log_file})")
                    return
        except OSError:
            time.sleep(0.5)
    typer.echo(f"error: ml-backend did not answer {url}; log {log_file}", err=True)
    raise typer.Exit(1)
    if _fiftyone_mongod("up"):
        raise typer.Exit(1)


@services_app.command("down")
def down() -> None:
    """Stop Label Studio (no-op when it is not running)."""
    from annotation.labelstudio.server import LabelStudioServerError

    server = _server()
    ml_pid = _pid_alive(_ml_pid_file(server.data_dir.parent))
    if ml_pid is not None:
        import os
        import signal

        os.killpg(ml_pid, signal.SIGTERM)  # its own session: it and only it
        _ml_pid_file(server.data_dir.parent).unlink(missing_ok=True)
        typer.echo(f"ml-backend: stopped (pid {ml_pid})")
    try:
        server.stop()
    except LabelStudioServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("label-studio: stopped")
    if _fiftyone_mongod("down"):
        raise typer.Exit(1)


@services_app.command("status")
def status() -> None:
    """Say whether Label Studio runs and answers (exit 0 only when it does)."""
    server = _server()
    state = server.status()
    typer.echo(f"label-studio: {state} ({server.url})")
    fo_rc = _fiftyone_mongod("status")
    raise typer.Exit(0 if state == "running" and fo_rc == 0 else 3)


# --- FiftyOne's MongoDB (issue 6): kept apart from Label Studio on purpose -------------------------
def _fiftyone_mongod(action: str) -> int:
    """up / down / status of the local mongod FiftyOne uses; skipped when settings point FiftyOne
    at an external MongoDB (fiftyone_database_uri). Returns 0 when all is well."""
    from annotation.fiftyone.mongod import MongoServerError
    from pipelines.settings import Settings

    s = Settings()
    if not s.fiftyone_uses_local_mongod:
        typer.echo("fiftyone-db: external MongoDB configured (fiftyone_database_uri); nothing to do")
        return 0
    server = s.mongod_server()
    try:
        if action == "up":
            server.start()
            typer.echo(f"fiftyone-db: running at {server.uri} (data {server.db_dir}, log {server.log_file})")
        elif action == "down":
            server.stop()
            typer.echo("fiftyone-db: stopped")
        else:
            state = server.status()
            typer.echo(f"fiftyone-db: {state} ({server.uri})")
            return 0 if state == "running" else 3
    except MongoServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    return 0
