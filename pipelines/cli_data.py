"""`dataengine ingest` and `dataengine status`: put videos in, see what is there.

Components come only from `pipelines.settings.Settings` (engine(), blob_store(), and the S3
endpoint/region for S3 sources), so both commands work on whatever the environment configures or
on the embedded defaults under DATAENGINE_WORK_DIR. Heavy imports happen inside the commands so
`dataengine --help` stays fast.

Exit status of `ingest`: 0 when every video was stored or already present, 1 when some failed (the
others are stored all the same), 2 when the source itself cannot be read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("status")(status)


def ingest(
    source: str = typer.Argument(
        ..., help="A folder (searched recursively), a video file, or s3://bucket/prefix."),
    dataset: str = typer.Option(
        "default", "--dataset", "-d", help="Dataset to register the videos in (created if new)."),
    split: str = typer.Option(
        "train", "--split", help="Split of newly registered videos: train, val or test."),
    deep_check: bool = typer.Option(
        True, "--deep-check/--quick-check",
        help="Decode every frame (catches corrupt video data) or only read the container."),
) -> None:
    """Register videos (and their <name>.gt.json ground truth) in a dataset. Idempotent: videos
    already in the dataset (same bytes) are left as they are. Bad files are reported and skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipelines.ingest import IngestError, ingest_videos
    from pipelines.settings import Settings
    from storage.blobs import BlobStoreError, make_s3_client
    from storage.db import upgrade
    from storage.schema import Split

    console = Console()
    err = Console(stderr=True)
    try:
        split_value = Split(split.lower())
    except ValueError:
        raise typer.BadParameter(f"{split!r} is not one of {[s.value for s in Split]}",
                                 param_hint="--split") from None
    if not source.startswith("s3://") and not Path(source).exists():
        raise typer.BadParameter(f"{source} does not exist", param_hint="SOURCE")
    settings = Settings()
    s3_client = None
    if source.startswith("s3://"):
        # Credentials come from boto3's own chain (env, profile, instance role), never from here.
        s3_client = make_s3_client(settings.s3_endpoint_url, settings.s3_region)
    engine = settings.engine()
    try:
        upgrade(engine)  # a fresh work dir gets its schema; a current database is untouched
        try:
            blob_store = settings.blob_store()
        except BlobStoreError as e:
            err.print(f"[red]error:[/red] blob store: {e}", soft_wrap=True)
            raise typer.Exit(2) from None
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False) as bar:
            task = bar.add_task(f"ingest into {dataset}", total=None)

            def on_discovered(n: int) -> None:
                bar.update(task, total=n)

            def on_progress(item, done: int, total: int) -> None:
                bar.update(task, completed=done, description=f"ingest {_short(item.source)}")

            try:
                report = ingest_videos(engine, blob_store, source, dataset, split=split_value,
                                       s3_client=s3_client, deep_check=deep_check,
                                       progress=on_progress, on_discovered=on_discovered)
            except (IngestError, BlobStoreError) as e:
                bar.stop()
                err.print(f"[red]error:[/red] {e}", soft_wrap=True)
                raise typer.Exit(2) from None
    finally:
        engine.dispose()
    console.print(_report_table(report))
    if report.failed:
        raise typer.Exit(1)


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _report_table(report) -> Table:
    table = Table(title=f"ingest {report.source} -> dataset '{report.dataset}'")
    table.add_column("outcome")
    table.add_column("videos", justify="right")
    table.add_column("details", overflow="fold")
    details = {
        "new": "",
        "already present": "; ".join(f"{_short(i.source)}: {i.reason}" for i in report.present if i.reason),
        "updated": "; ".join(f"{_short(i.source)}: {i.reason}" for i in report.updated),
        "failed": "\n".join(f"{i.source}: {i.reason}" for i in report.failed),
    }
    for label, items, style in (("new", report.new, "green"), ("already present", report.present, ""),
                                ("updated", report.updated, "cyan"), ("failed", report.failed, "red")):
        if label == "updated" and not items:
            continue
        table.add_row(f"[{style}]{label}[/{style}]" if style else label, str(len(items)), details[label])
    return table


# --- status ----------------------------------------------------------------------------------------
@dataclass
class StatusReport:
    tables: dict[str, int] = field(default_factory=dict)  # table name -> rows
    datasets: list[dict] = field(default_factory=list)  # name, videos per split
    rounds: list[dict] = field(default_factory=list)  # dataset, number, status, counts


def collect_status(engine) -> StatusReport:
    """Row counts per table, videos per dataset and split, and what each annotation round holds."""
    from sqlalchemy import func, select

    from storage.schema import (
        AnnotationRound,
        AnnotationTask,
        Base,
        Dataset,
        EffortEvent,
        FrameMask,
        Masklet,
        ModelVersion,
        TaskStatus,
        Video,
    )

    report = StatusReport()
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            report.tables[table.name] = conn.scalar(select(func.count()).select_from(table))

        per_split = conn.execute(
            select(Dataset.name, Video.split, func.count(Video.id))
            .join(Video, Video.dataset_id == Dataset.id, isouter=True)
            .group_by(Dataset.name, Video.split).order_by(Dataset.name)
        ).all()
        datasets: dict[str, dict] = {}
        for name, split, n in per_split:
            entry = datasets.setdefault(name, {"dataset": name, "videos": 0, "splits": {}})
            if split is not None:
                entry["splits"][str(getattr(split, "value", split))] = n
                entry["videos"] += n
        report.datasets = list(datasets.values())

        def grouped(stmt) -> dict:
            return {row[0]: row[1] for row in conn.execute(stmt)}

        masklets = grouped(select(Masklet.round_id, func.count()).group_by(Masklet.round_id))
        frame_masks = grouped(select(Masklet.round_id, func.count(FrameMask.id))
                              .join(FrameMask, FrameMask.masklet_id == Masklet.id)
                              .group_by(Masklet.round_id))
        tasks = grouped(select(AnnotationTask.round_id, func.count()).group_by(AnnotationTask.round_id))
        synced = grouped(select(AnnotationTask.round_id, func.count())
                         .where(AnnotationTask.status == TaskStatus.SYNCED)
                         .group_by(AnnotationTask.round_id))
        effort = grouped(select(EffortEvent.round_id, func.count()).group_by(EffortEvent.round_id))
        rounds = conn.execute(
            select(AnnotationRound.id, Dataset.name, AnnotationRound.number, AnnotationRound.status,
                   ModelVersion.family, ModelVersion.version)
            .join(Dataset, Dataset.id == AnnotationRound.dataset_id)
            .join(ModelVersion, ModelVersion.id == AnnotationRound.model_version_id, isouter=True)
            .order_by(Dataset.name, AnnotationRound.number)
        ).all()
        for rid, ds, number, rstatus, family, version in rounds:
            report.rounds.append({
                "dataset": ds, "round": number, "status": str(getattr(rstatus, "value", rstatus)),
                "model": f"{family}/{version}" if family else "",
                "masklets": masklets.get(rid, 0), "frame_masks": frame_masks.get(rid, 0),
                "tasks": tasks.get(rid, 0), "tasks_synced": synced.get(rid, 0),
                "effort_events": effort.get(rid, 0),
            })
        # Masklets outside any round (ground truth imports, for instance).
        if masklets.get(None):
            report.rounds.append({
                "dataset": "", "round": None, "status": "outside rounds", "model": "",
                "masklets": masklets[None], "frame_masks": frame_masks.get(None, 0),
                "tasks": 0, "tasks_synced": 0, "effort_events": 0,
            })
    return report


def print_status(engine, console: Console | None = None) -> StatusReport:
    """Print the status tables (rich) and return what they show."""
    console = console or Console()
    report = collect_status(engine)

    tables = Table(title="rows per table")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    for name, n in report.tables.items():
        tables.add_row(name, str(n))
    console.print(tables)

    if report.datasets:
        ds = Table(title="videos per dataset")
        for col in ("dataset", "videos", "train", "val", "test"):
            ds.add_column(col, justify="left" if col == "dataset" else "right")
        for d in report.datasets:
            ds.add_row(d["dataset"], str(d["videos"]),
                       *(str(d["splits"].get(s, 0)) for s in ("train", "val", "test")))
        console.print(ds)

    rounds = Table(title="annotation rounds")
    for col in ("dataset", "round", "status", "model", "masklets", "frame masks", "tasks (synced)",
                "effort events"):
        rounds.add_column(col, justify="right" if col in ("round", "masklets", "frame masks",
                                                          "tasks (synced)", "effort events") else "left")
    for r in report.rounds:
        rounds.add_row(r["dataset"], "" if r["round"] is None else str(r["round"]), r["status"],
                       r["model"], str(r["masklets"]), str(r["frame_masks"]),
                       f"{r['tasks']} ({r['tasks_synced']})", str(r["effort_events"]))
    if not report.rounds:
        rounds.caption = "no annotation rounds yet"
    console.print(rounds)
    return report


def status() -> None:
    """Counts per table, videos per dataset and split, and what each annotation round holds."""
    from pipelines.settings import Settings
    from storage.db import upgrade

    settings = Settings()
    engine = settings.engine()
    try:
        upgrade(engine)  # a fresh work dir shows an empty schema rather than an error
        Console().print(f"database: {_safe_url(engine)}")
        print_status(engine)
    finally:
        engine.dispose()


def _safe_url(engine) -> str:
    return engine.url.render_as_string(hide_password=True)
