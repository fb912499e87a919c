"""`dataengine annotate ...`: Label Studio sync, webhook receiver, the scripted annotator (issue 4).

- `annotate sync --dataset D [--kind correction|verification] [--method export|per_task]`: pull the
  project's annotations and apply every new version exactly once (safe to run any time, any
  number of times; a crash loses nothing). `--json`: the report as the last line.
- `annotate webhooks --dataset D ... [--port P]`: serve the webhook receiver (shared secret from
  `DATAENGINE_WEBHOOK_SECRET`) and register it in the datasets' projects; runs until Ctrl-C.
- `annotate scripted --dataset D --ground-truth-dir DIR`: the scripted annotator corrects (or
  verifies) every task whose video has `<video>.gt.json` in DIR, with the production SAM 2 for
  its clicks (`--no-sam2`: no clicks, hand-drawn masks only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

annotate_app = typer.Typer(name="annotate",
                           help="Label Studio: sync annotations, webhooks, the scripted annotator.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the `annotate` command group to the top-level CLI."""
    app.add_typer(annotate_app, name="annotate")


def _client(settings):
    from annotation.labelstudio import LabelStudioClient

    return LabelStudioClient(settings.label_studio_url, settings.label_studio_token.get_secret_value())


def _project_id(client, dataset: str, kind: str) -> int:
    from annotation.labelstudio import project_title

    p = client.find_project(project_title(dataset, kind))
    if p is None:
        typer.echo(f"error: Label Studio has no project {project_title(dataset, kind)!r}", err=True)
        raise typer.Exit(2)
    return int(p["id"])


@annotate_app.command("sync")
def sync_cmd(
    dataset: str = typer.Option(..., help="Dataset whose project is synced."),
    kind: str = typer.Option("correction", help="Round kind: correction or verification."),
    method: str = typer.Option("export", help="export (bulk, one snapshot) or per_task."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (last line)."),
) -> None:
    """Apply every new annotation version of the project exactly once."""
    from annotation.labelstudio import LabelStudioError
    from annotation.labelstudio.sync import AnnotationSync
    from pipelines.settings import Settings

    settings = Settings()
    client = _client(settings)
    try:
        pid = _project_id(client, dataset, kind)
        report = AnnotationSync(settings.engine()).sync_project(client, pid, method=method)
    except LabelStudioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"project {pid}: {report}")
    for task_id, issues in sorted(report.invalid.items()):
        typer.echo(f"  task {task_id} left for a person: {'; '.join(issues[:5])}", err=True)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))


@annotate_app.command("webhooks")
def webhooks_cmd(
    dataset: list[str] = typer.Option(..., help="Datasets whose projects call the receiver (repeatable)."),
    kind: list[str] = typer.Option(["correction", "verification"], help="Round kinds (repeatable)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8091, help="Port to listen on."),
    public_url: Optional[str] = typer.Option(None, help="URL Label Studio calls (default: http://HOST:PORT/webhook)."),
) -> None:
    """Serve the webhook receiver and register it in the projects (until Ctrl-C)."""
    from annotation.labelstudio.sync import AnnotationSync
    from annotation.labelstudio.webhooks import WebhookReceiver, register_webhook
    from pipelines.settings import Settings

    settings = Settings()
    secret = settings.webhook_secret.get_secret_value()
    client = _client(settings)
    rx = WebhookReceiver(AnnotationSync(settings.engine()), secret, host=host, port=port)
    url = public_url or rx.url
    for d in dataset:
        for k in kind:
            pid = _project_id(client, d, k)
            hook = register_webhook(client, pid, url, secret)
            typer.echo(f"project {pid} ({d} / {k}): webhook {hook} -> {url}")
    typer.echo(f"receiving at {rx.url} (Ctrl-C stops)")
    try:
        rx.serve_forever()
    except KeyboardInterrupt:
        typer.echo(f"stopped: {rx.stats}")


@annotate_app.command("scripted")
def scripted_cmd(
    dataset: str = typer.Option(..., help="Dataset whose project the scripted annotator works on."),
    ground_truth_dir: Path = typer.Option(..., help="Folder with <video>.gt.json files."),
    kind: str = typer.Option("correction", help="Round kind: correction or verification."),
    iou_threshold: float = typer.Option(0.9, help="Masks below this IoU are corrected."),
    click_limit: int = typer.Option(5, help="Clicks per mask before drawing it by hand."),
    click_patience: int = typer.Option(1, help="Clicks in a row that may fail to improve the mask "
                                                "before drawing it by hand (0: spend click_limit)."),
    sam2: bool = typer.Option(True, "--sam2/--no-sam2", help="Refine clicks with the production SAM 2."),
    model_version: Optional[str] = typer.Option(None, help="SAM 2 registry version (default: production)."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON (last line)."),
) -> None:
    """The scripted annotator corrects or verifies every task that has ground truth."""
    from annotation.scripted_annotator import Sam2ClickRefiner, ScriptedAnnotator, ScriptedAnnotatorConfig
    from pipelines.settings import Settings
    from storage.synthetic.dataset import GT_SUFFIX, load_ground_truth

    settings = Settings()
    client = _client(settings)
    pid = _project_id(client, dataset, kind)
    refiner = None
    if sam2:
        from pipelines.cli_sam2 import _registry
        from pipelines.sam2_runtime import load_sam2

        loaded = load_sam2(_registry(settings), version=model_version,
                           cache_dir=settings.work_dir / "cache" / "models", device=settings.device)
        refiner = Sam2ClickRefiner(loaded.segmenter)
    cache: dict = {}

    def gt_for(data):
        name = data.get("video")
        path = Path(ground_truth_dir) / f"{name}{GT_SUFFIX}"
        if name not in cache:
            cache[name] = load_ground_truth(path) if path.is_file() else None
        return cache[name]

    bot = ScriptedAnnotator(client, refiner=refiner, config=ScriptedAnnotatorConfig(
        iou_threshold=iou_threshold, click_limit=click_limit, click_patience=click_patience))
    outcomes = bot.annotate_project(pid, gt_for)
    done = [o for o in outcomes if o.annotation_id is not None]
    summary = {"tasks": len(outcomes), "submitted": len(done),
               "clicks": sum(o.clicks for o in done), "masks_drawn": sum(o.masks_drawn for o in done),
               "frames_corrected": sum(o.frames_corrected for o in done),
               "lead_time_s": round(sum(o.lead_time for o in done), 1)}
    typer.echo(f"the scripted annotator: {summary}")
    if as_json:
        typer.echo(json.dumps(summary))


@annotate_app.command("ml-backend")
def ml_backend_cmd(
    dataset: list[str] = typer.Option([], help="Datasets whose correction projects get the backend (repeatable)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(9090, help="Port to listen on."),
    model_version: Optional[str] = typer.Option(None, help="SAM 2 registry version (default: production)."),
) -> None:
    """Serve interactive SAM 2 to the Label Studio editor (ML backend protocol) until Ctrl-C."""
    from annotation.labelstudio.ml_backend import MlBackendServer, Sam2Backend
    from pipelines.cli_sam2 import _registry
    from pipelines.sam2_runtime import load_sam2
    from pipelines.settings import Settings

    settings = Settings()
    client = _client(settings)
    loaded = load_sam2(_registry(settings), version=model_version,
                       cache_dir=settings.work_dir / "cache" / "models", device=settings.device)
    server = MlBackendServer(Sam2Backend(client, loaded.segmenter, model_version=f"sam2/{loaded.version}"),
                             host=host, port=port).start()
    for d in dataset:  # Label Studio calls /health and /setup when connecting: serve first
        pid = _project_id(client, d, "correction")
        ml_id = client.ensure_ml_backend(pid, server.url)
        typer.echo(f"project {pid} ({d} / correction): ML backend {ml_id} -> {server.url}")
    typer.echo(f"interactive SAM 2 (sam2/{loaded.version}) at {server.url} (Ctrl-C stops)")
    try:
        while True:
            import time

            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
