"""`dataengine generate` (synthetic videos with ground truth) and `dataengine demo` (the main job
on the embedded defaults: generate -> ingest -> pre-annotate with SAM 2 -> score against the ground
truth -> export DAVIS masks -> print what is stored)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("demo")(demo)


def generate(
    out: Path = typer.Argument(..., help="Folder to write <name>.mp4 and <name>.gt.json into."),
    seed: int = typer.Option(0, help="Dataset seed (the same seed always gives the same videos)."),
    videos: int = typer.Option(4, help="How many videos."),
    domain: str = typer.Option("base", help="Synthetic domain: base or target."),
    frames: int = typer.Option(24, help="Frames per video."),
    size: int = typer.Option(128, help="Frame size in pixels (square)."),
    objects: int = typer.Option(3, help="At most this many objects per video."),
    difficulty: float = typer.Option(1.0, help="Scales speed, spin and clutter."),
) -> None:
    """Write seeded synthetic videos with exact ground-truth masklets (never shown to a model)."""
    from rich.progress import track

    from storage.synthetic.dataset import write_video
    from storage.synthetic.videos import generate_videos

    vids = generate_videos(seed, videos, domain=domain, frames=frames, size=size, objects=objects,
                           difficulty=difficulty)
    for v in track(vids, description=f"writing {videos} {domain} videos", console=err):
        write_video(v, out)
    err.print(f"wrote {videos} videos + ground truth to {out}")


def _prefect_defaults(work_dir) -> None:
    """Prefect for a one-machine demo: its own home under the work dir (an ephemeral API server
    on SQLite, started by the first flow run) unless the operator points PREFECT_* elsewhere; no
    analytics; a start-up timeout that a busy 2-core machine meets."""
    import os

    os.environ.setdefault("PREFECT_HOME", str(Path(work_dir).resolve() / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _demo_rounds(rounds: int, seed: int, as_json: bool, use_prefect: bool = True) -> None:
    """N closed-loop rounds on the embedded defaults, each as the Prefect flow `data_engine_round`
    (or as plain steps with use_prefect=False). A local Label Studio is started for the
    demo when none answers at the configured loopback URL (and stopped again afterwards)."""
    from pipelines.effort_report import print_tables
    from pipelines.round_steps import run_rounds
    from pipelines.settings import Settings

    started = time.time()
    settings = Settings()
    if use_prefect:
        _prefect_defaults(settings.work_dir)
    server, we_started = None, False
    try:
        from pipelines.cli_services import _server

        server = _server()
        if server.status() != "running":
            err.print(f"starting Label Studio at {server.url} for the demo (log {server.log_file})")
            server.start()
            we_started = True
    except typer.Exit:  # not a loopback URL: a server run by someone else must be up already
        server = None
    console.rule(f"[bold]dataengine demo: {rounds} closed-loop rounds (seed {seed})")
    try:
        result = run_rounds(settings, rounds, seed, use_prefect=use_prefect,
                            progress=lambda msg: err.print(msg))
    finally:
        if we_started and server is not None:
            server.stop()
    print_tables(console, result)
    console.print(f"plot and report: {result['report']} (and effort.png beside it)")
    console.print(f"demo finished in {time.time() - started:.0f} s")
    if as_json:
        print(json.dumps(result))


def demo(
    videos: int = typer.Option(4, help="Synthetic videos to generate."),
    seed: int = typer.Option(7, help="Seed of the demo videos."),
    domain: str = typer.Option("base", help="Synthetic domain of the demo videos."),
    dataset: str = typer.Option("demo", help="Dataset name."),
    rounds: int = typer.Option(0, help="Also run N closed-loop annotation rounds (scripted annotator "
                                       "through Label Studio, retraining, gate, effort report)."),
    prefect: bool = typer.Option(True, "--prefect/--no-prefect",
                                 help="With --rounds: run each round as the Prefect flow (default) "
                                      "or as the same steps without Prefect."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary as the last line."),
) -> None:
    """The main job on the embedded defaults: generate, ingest, pre-annotate, score, export;
    with --rounds N, the closed loop's rounds instead (see docs/loop.md)."""
    if rounds > 0:
        _demo_rounds(rounds, seed, as_json, use_prefect=prefect)
        return
    import numpy as np
    from sqlalchemy import select

    from models.sam2.evaluate import j_score
    from pipelines.export import export_davis
    from pipelines.ingest import ingest_videos
    from pipelines.preannotate import preannotate_dataset
    from pipelines.sam2_runtime import load_sam2
    from pipelines.settings import Settings
    from models.registry import ModelRegistry
    from storage.masklets import masklet_frames
    from storage.masks import decode_rle
    from storage.schema import Dataset, Masklet, Video
    from storage.synthetic.dataset import parse_ground_truth, write_video
    from storage.synthetic.videos import generate_videos

    started = time.time()
    settings = Settings()
    work = settings.ensure_work_dir()
    src = work / "demo" / f"{domain}-seed{seed}"
    console.rule("[bold]dataengine demo")
    console.print(f"work dir: {work.resolve()}  database: {settings.resolved_database_url}")
    for v in generate_videos(seed, videos, domain=domain):
        write_video(v, src)
    console.print(f"1. generated {videos} synthetic {domain} videos with ground truth in {src}")

    engine = settings.engine()
    blobs = settings.blob_store()
    ingest_report = ingest_videos(engine, blobs, str(src), dataset)
    console.print(f"2. ingested into dataset '{dataset}': {ingest_report}")

    registry = ModelRegistry(engine, blobs)
    loaded = load_sam2(registry, cache_dir=work / "cache" / "models", device=settings.device)
    console.print(f"3. SAM 2 production version: sam2/{loaded.version}")
    report = preannotate_dataset(engine, blobs, loaded.segmenter, dataset,
                                 model_version_id=loaded.model_version_id)
    console.print(f"   automatic masklets: {report.masklets} over {len(report.outcomes)} videos "
                  f"({sum(o.seconds for o in report.outcomes):.1f} s)")

    # Score the automatic masklets against the ground truth kept beside each video.
    table = Table(title="automatic masklets vs ground truth (best-matching masklet per object)")
    for col in ("video", "objects", "masklets", "mean best J"):
        table.add_column(col)
    all_best = []
    with engine.connect() as conn:
        rows = conn.execute(select(Video.id, Video.uri, Video.ground_truth_uri)
                            .join(Dataset, Video.dataset_id == Dataset.id)
                            .where(Dataset.name == dataset).order_by(Video.id)).all()
        for vid, uri, gt_uri in rows:
            if gt_uri is None:
                continue
            gt = parse_ground_truth(json.loads(blobs.get_bytes(blobs.key_for_uri(gt_uri))), where=gt_uri)
            mids = conn.execute(select(Masklet.id).where(Masklet.video_id == vid,
                                                         Masklet.source_model_version_id == loaded.model_version_id)).scalars().all()
            preds = []
            for mid in mids:
                arr = np.zeros_like(gt.masks[:, 0])
                for t, rle in masklet_frames(conn, mid).items():
                    arr[t] = decode_rle(rle)
                preds.append(arr)
            best = []
            for k in range(gt.masks.shape[1]):
                scores = [np.mean([j_score(p[t], gt.masks[t, k]) for t in range(gt.num_frames)]) for p in preds]
                best.append(max(scores) if scores else 0.0)
            all_best.extend(best)
            table.add_row(Path(uri).name, str(len(best)), str(len(mids)), f"{np.mean(best):.3f}")
    console.print(table)

    export = export_davis(engine, dataset, work / "export" / "davis")
    console.print(f"4. DAVIS export: {export.videos} videos, {export.frames} frames -> {work / 'export' / 'davis'}")
    from pipelines.cli_data import print_status

    print_status(engine)
    elapsed = time.time() - started
    console.print(f"demo finished in {elapsed:.0f} s")
    if as_json:
        print(json.dumps({"videos": videos, "masklets": report.masklets,
                          "mean_best_j": round(float(np.mean(all_best)), 4) if all_best else None,
                          "model_version": loaded.version, "seconds": round(elapsed, 1)}))
