"""`dataengine curate publish|sync|open|embed`: curation in FiftyOne (issue 6).

FiftyOne is pointed at the database from settings (`fiftyone_database_uri`, default the local
mongod that `dataengine services up` starts on `fiftyone_mongod_port`) before it is imported.
"""
from __future__ import annotations

import typer

curate_app = typer.Typer(
    name="curate",
    help="Curation in FiftyOne: publish the dataset, read curators' tags back, open the App.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(curate_app, name="curate")


def _settings():
    from pipelines.settings import Settings

    s = Settings()
    s.configure_fiftyone()
    return s


@curate_app.command("publish")
def publish(
    dataset: str = typer.Option("default", "--dataset", help="Engine dataset to publish."),
    full: bool = typer.Option(False, "--full", help="Publish every video, not only what changed."),
    no_sync: bool = typer.Option(False, "--no-sync", help="Do not read curators' tags first."),
) -> None:
    """Publish the dataset to FiftyOne (incremental; curators' tags are synced first)."""
    from annotation.fiftyone.publish import PublishError
    from pipelines.curation import publish_to_fiftyone

    s = _settings()
    try:
        tags, report = publish_to_fiftyone(s, dataset, full=full, sync_first=not no_sync)
    except (PublishError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if tags is not None:
        typer.echo(f"tags: {tags}")
    typer.echo(f"published: {report}")


@curate_app.command("sync")
def sync(dataset: str = typer.Option("default", "--dataset", help="Engine dataset.")) -> None:
    """Read reannotate / exclude / needs-review tags from the App into the database."""
    from pipelines.curation import sync_curation_tags, videos_to_requeue

    s = _settings()
    report = sync_curation_tags(s, dataset)
    if report is None:
        typer.echo(f"error: {s.fiftyone_dataset_name(dataset)!r} was never published "
                   "(run `dataengine curate publish` first)", err=True)
        raise typer.Exit(1)
    typer.echo(f"tags: {report}")
    engine = s.engine()
    try:
        typer.echo(f"videos to re-queue next round: {videos_to_requeue(engine, dataset)}")
    finally:
        engine.dispose()


@curate_app.command("embed")
def embed(
    dataset: str = typer.Option("default", "--dataset", help="Engine dataset."),
    every: int = typer.Option(8, "--every", help="Embed every N-th frame as a keyframe."),
    replace: bool = typer.Option(False, "--replace", help="Recompute videos that have embeddings."),
) -> None:
    """Pooled SAM 2 image-encoder embeddings (family sam2-encoder) for the dataset's videos."""
    from models.registry import ModelRegistry
    from pipelines.curation import compute_sam2_embeddings
    from pipelines.sam2_runtime import load_sam2

    s = _settings()
    engine, blobs = s.engine(), s.blob_store()
    try:
        loaded = load_sam2(ModelRegistry(engine, blobs), version=s.sam2_model_version,
                           cache_dir=s.work_dir / "models", device=s.device)
        n = compute_sam2_embeddings(engine, blobs, loaded.segmenter, dataset,
                                    model_version_id=loaded.model_version_id,
                                    keyframe_every=every, replace=replace)
    finally:
        engine.dispose()
    typer.echo(f"embedded {n} videos with SAM 2 {loaded.version}")


@curate_app.command("open")
def open_app(
    dataset: str = typer.Option("default", "--dataset", help="Engine dataset."),
    port: int = typer.Option(None, "--port", help="App port (default: settings.fiftyone_app_port)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Start, print the URL and return."),
) -> None:
    """Launch the FiftyOne App (headless, loopback) on the dataset; Ctrl-C stops it."""
    from annotation.fiftyone.app import AppServer, AppServerError

    s = _settings()
    name = s.fiftyone_dataset_name(dataset)
    s.fiftyone_dir.mkdir(parents=True, exist_ok=True)
    server = AppServer(port=port or s.fiftyone_app_port, env=s.fiftyone_env(),
                       log_file=s.fiftyone_dir / "app.log")
    try:
        server.start()
    except AppServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"FiftyOne App: {server.dataset_url(name)} (pid {server.pid}, log {server.log_file})")
    if no_wait:
        return
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
