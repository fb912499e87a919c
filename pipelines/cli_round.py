"""`dataengine round run|status` (the closed loop, issue 5) and `dataengine report`."""
from __future__ import annotations

import json

import typer

round_app = typer.Typer(name="round", help="The closed loop: annotation rounds that retrain.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(round_app, name="round")
    app.command("report")(report_cmd)


@round_app.command("run")
def run_cmd(
    dataset: str = typer.Option("loop", help="Dataset of the rounds."),
    round_number: int = typer.Option(1, "--round", help="Round number (1, 2, ...)."),
    seed: int = typer.Option(0, help="Seeds the round's synthetic videos."),
    prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="Run as the Prefect flow."),
    as_json: bool = typer.Option(False, "--json", help="Print the step results as JSON (last line)."),
) -> None:
    """Run (or resume) one round: finished steps are skipped."""
    from pipelines.settings import Settings

    if prefect:
        from pipelines.flows.round import data_engine_round

        out = data_engine_round(dataset=dataset, round_number=round_number, seed=seed)
    else:
        from pipelines.round_steps import run_round

        out = run_round(Settings(), dataset, round_number, seed)
    typer.echo(f"round {round_number} of {dataset}: {out.get('effort')}")
    if as_json:
        typer.echo(json.dumps(out, default=str))


@round_app.command("status")
def status_cmd(dataset: str = typer.Option("loop", help="Dataset of the rounds.")) -> None:
    """Each round's steps and their status (from pipeline_runs)."""
    from sqlalchemy import select

    from pipelines.settings import Settings
    from storage.schema import PipelineRun

    engine = Settings().engine()
    with engine.connect() as c:
        rows = c.execute(select(PipelineRun.run_key, PipelineRun.status, PipelineRun.finished_at,
                                PipelineRun.error)
                         .where(PipelineRun.run_key.like(f"{dataset}/round%"))
                         .order_by(PipelineRun.id)).all()
    if not rows:
        typer.echo(f"no rounds of {dataset!r} yet")
    for key, status, fin, error in rows:
        typer.echo(f"{key:40s} {status:10s} {fin or ''} {error or ''}")


def report_cmd(
    dataset: str = typer.Option("loop", help="Dataset of the rounds."),
) -> None:
    """Print the effort tables and write the PNG plot and the HTML report."""
    from rich.console import Console

    from pipelines.effort_report import load_rows, tables, write_report
    from pipelines.settings import Settings

    settings = Settings()
    modes, rounds = load_rows(settings.engine(), dataset)
    console = Console()
    for t in tables(modes, rounds):
        console.print(t)
    paths = write_report(settings, dataset, modes, rounds)
    console.print(f"plot: {paths['png']}\nreport: {paths['html']}")
