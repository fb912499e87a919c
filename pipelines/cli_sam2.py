"""SAM 2 commands: `train sam2`, `eval sam2`, `preannotate`, `export --format davis`.

Progress goes to stderr; with `--json` the last line of stdout is one JSON object, so scripts can
`| tail -n 1`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

train_app = typer.Typer(name="train", help="Train models (SAM 2 now; captioner, FLIP, 3D later).",
                        no_args_is_help=True)
eval_app = typer.Typer(name="eval", help="Evaluate models on held-out synthetic data.",
                       no_args_is_help=True)
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")
    app.command("preannotate")(preannotate)
    app.command("export")(export)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


def _registry(settings):
    from models.registry import ModelRegistry

    return ModelRegistry(settings.engine(), settings.blob_store())


def _int_pair(text: str, option: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{option} wants two integers 'LOW,HIGH', got {text!r}") from None
    if not 1 <= lo <= hi:
        raise typer.BadParameter(f"{option} wants 1 <= LOW <= HIGH, got {text!r}")
    return lo, hi


@train_app.command("sam2")
def train_sam2_cmd(
    out: Path = typer.Option(Path(".work/train/sam2"), help="Folder for checkpoints and the log."),
    seed: int = typer.Option(1000, help="Dataset seed of the synthetic training videos."),
    domain: str = typer.Option("base", help="Synthetic domain to train on (base or target)."),
    config: str = typer.Option("dataengine_s128", help="Model config name or YAML path."),
    init_checkpoint: Optional[Path] = typer.Option(None, help="Start from this checkpoint."),
    image_steps: int = typer.Option(3600, help="Image-stage steps (schedule length)."),
    video_steps: int = typer.Option(2400, help="Video-stage steps (schedule length)."),
    image_minutes: Optional[float] = typer.Option(None, help="Wall-clock budget of the image stage."),
    video_minutes: Optional[float] = typer.Option(None, help="Wall-clock budget of the video stage."),
    image_lr: float = typer.Option(2e-3, help="Peak learning rate of the image stage."),
    video_lr: float = typer.Option(1e-3, help="Peak learning rate of the video stage."),
    memory_lr_mult: float = typer.Option(3.0, help="Video stage: learning-rate multiplier of the memory path."),
    warmup_steps: int = typer.Option(200, help="Warm-up steps of each stage."),
    image_batch: int = typer.Option(8, help="Image stage: frames per step (every object on each frame is a sample)."),
    image_objects: str = typer.Option("2,5", help="Image stage: objects per training frame, 'LOW,HIGH'."),
    clip_frames: int = typer.Option(8, help="Video stage: frames per training clip (longer clips teach "
                                            "objects that leave the frame and come back)."),
    clips_per_step: int = typer.Option(4, help="Video stage: clips per step."),
    leave_prob: float = typer.Option(0.25, help="Share of objects (after the first) that leave the frame "
                                                "and come back in the training videos."),
    threads: int = typer.Option(2, help="CPU threads for torch (1 when other work shares the cores)."),
    balance_memory: bool = typer.Option(
        True, help="Rescale the memory path before the video stage (training from scratch; "
                   "--no-balance-memory when continuing from a checkpoint that already tracks)."),
    register_version: bool = typer.Option(False, "--register", help="Register the result as a candidate."),
) -> None:
    """Train a small SAM 2 from scratch (or fine-tune) on synthetic videos, as SAM 2's trainer does."""
    from models.sam2.train import TrainConfig, train_sam2

    cfg = TrainConfig(config=config, out_dir=str(out), seed=seed, domain=domain,
                      init_checkpoint=str(init_checkpoint) if init_checkpoint else None,
                      image_steps=image_steps, video_steps=video_steps, threads=threads,
                      image_lr=image_lr, video_lr=video_lr, memory_lr_mult=memory_lr_mult,
                      warmup_steps=warmup_steps, image_batch=image_batch, balance_memory=balance_memory,
                      image_objects=_int_pair(image_objects, "--image-objects"),
                      clip_frames=clip_frames, clips_per_step=clips_per_step, leave_prob=leave_prob,
                      image_budget_s=image_minutes * 60 if image_minutes else None,
                      video_budget_s=video_minutes * 60 if video_minutes else None)

    def show(rec: dict) -> None:
        if "val_j_mask" in rec:
            err.print(f"[{rec['stage']} {rec['step']}] val J mask {rec['val_j_mask']:.3f} box {rec['val_j_box']:.3f}")
        elif "loss" in rec:
            err.print(f"[{rec['stage']} {rec['step']}] loss {rec['loss']:.3f} lr {rec['lr']:.2e} {rec['step_s']:.2f}s/step")

    final = train_sam2(cfg, progress=show)
    err.print(f"checkpoint: {final}")
    if register_version:
        from pipelines.settings import Settings

        info = _registry(Settings()).register("sam2", final, config={"config": config},
                                              metrics={}, stage="candidate")
        err.print(f"registered sam2/{info.version} (candidate)")


@eval_app.command("sam2")
def eval_sam2_cmd(
    seed: int = typer.Option(..., help="Seed of the held-out videos (use seeds never trained on)."),
    videos: int = typer.Option(10, help="How many videos to generate and score."),
    domain: str = typer.Option("target", help="Synthetic domain: target (default) or base."),
    frames: int = typer.Option(24, help="Frames per video."),
    size: int = typer.Option(128, help="Frame size in pixels."),
    objects: int = typer.Option(3, help="At most this many objects per video."),
    model_version: Optional[str] = typer.Option(None, help="Registry version (default: production)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Evaluate this checkpoint file instead."),
    auto: bool = typer.Option(True, help="Also score automatic masklets (auto_recall)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Score SAM 2 on K held-out synthetic videos: J, J&F, box J, copy baseline, auto recall, IoU head."""
    import torch

    from models.sam2.evaluate import EvalSpec, evaluate
    from pipelines.sam2_runtime import load_sam2
    from pipelines.settings import Settings

    torch.set_num_threads(max(1, torch.get_num_threads()))
    settings = Settings()
    registry = None if checkpoint else _registry(settings)
    loaded = load_sam2(registry, version=model_version, checkpoint=checkpoint,
                       cache_dir=settings.work_dir / "cache" / "models", device=settings.device)
    spec = EvalSpec(seed=seed, videos=videos, domain=domain, size=size, frames=frames,
                    objects=objects, auto=auto)
    with _progress() as prog:
        task = prog.add_task(f"eval sam2 ({domain}, seed {seed})", total=videos)
        result = evaluate(loaded.segmenter, spec, model_version=loaded.version,
                          on_video=lambda i, n: prog.update(task, completed=i))
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(title=f"SAM 2 {loaded.version} on {videos} {domain} videos (seed {seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, "-" if v is None else str(v))
    Console().print(table)


def preannotate(
    dataset: str = typer.Option("default", help="Dataset to pre-annotate."),
    model_version: Optional[str] = typer.Option(None, help="Registry version (default: production)."),
    prompted: bool = typer.Option(False, help="Track objects corrected before instead of proposing new ones."),
    video_id: Optional[list[int]] = typer.Option(None, help="Only these video ids (repeatable)."),
    reseed_every: int = typer.Option(8, help="Automatic mode: propose new objects every N frames."),
) -> None:
    """SAM 2 masklets for every video of a dataset, written in bulk (re-running replaces, never adds)."""
    from models.sam2.automatic import AutoConfig
    from pipelines.preannotate import preannotate_dataset
    from pipelines.sam2_runtime import load_sam2
    from pipelines.settings import Settings

    settings = Settings()
    registry = _registry(settings)
    loaded = load_sam2(registry, version=model_version, cache_dir=settings.work_dir / "cache" / "models",
                       device=settings.device)
    engine = settings.engine()
    with _progress() as prog:
        task = prog.add_task(f"preannotate {dataset} with sam2/{loaded.version}", total=None)
        report = preannotate_dataset(
            engine, settings.blob_store(), loaded.segmenter, dataset,
            model_version_id=loaded.model_version_id, video_ids=video_id, prompted=prompted,
            auto_cfg=AutoConfig(reseed_every=reseed_every),
            on_video=lambda o: prog.advance(task))
    table = Table(title=f"pre-annotation of {dataset}")
    for col in ("video", "mode", "masklets", "frames", "seconds", "error"):
        table.add_column(col)
    for o in report.outcomes:
        table.add_row(str(o.video_id), o.mode, str(o.masklets), str(o.frames), f"{o.seconds:.1f}",
                      o.error or "")
    Console().print(table)
    if report.failed:
        err.print(f"[red]{len(report.failed)} video(s) failed; the others were written.[/red]")
        raise typer.Exit(1)


def export(
    out: Path = typer.Argument(..., help="Output folder."),
    fmt: str = typer.Option("davis", "--format", help="Export format (davis)."),
    dataset: str = typer.Option("default", help="Dataset to export."),
    model_version: Optional[str] = typer.Option(None, help="Only masklets of this SAM 2 version."),
) -> None:
    """Write masks in DAVIS layout (indexed PNG per frame) for the official DAVIS / SA-V evaluators."""
    from pipelines.export import export_davis
    from pipelines.settings import Settings

    if fmt != "davis":
        err.print(f"unknown export format {fmt!r}: only 'davis' is supported")
        raise typer.Exit(2)
    settings = Settings()
    n = export_davis(settings.engine(), dataset, out, model_version=model_version)
    err.print(f"wrote {n.videos} video(s), {n.frames} frame(s) to {out}")
