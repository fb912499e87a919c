"""`dataengine`: the command line. Each area registers its commands from its own module so that
this file stays a table of contents."""
from __future__ import annotations

import typer

from pipelines import __version__

app = typer.Typer(
    name="dataengine",
    help="A video data engine: SAM 2 pre-annotation, Label Studio correction, retraining, curation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dataengine {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """dataengine: turn raw videos into a curated, corrected dataset."""


def _register_all() -> None:
    # One line per area; each module defines `register(app)`.
    from pipelines import cli_data

    cli_data.register(app)
    from pipelines import cli_models

    cli_models.register(app)
    from pipelines import cli_sam2

    cli_sam2.register(app)
    from pipelines import cli_demo

    cli_demo.register(app)
    from pipelines import cli_services

    cli_services.register(app)
    from pipelines import cli_curate

    cli_curate.register(app)
    from pipelines import cli_annotate

    cli_annotate.register(app)
    from pipelines import cli_round

    cli_round.register(app)


_register_all()

if __name__ == "__main__":
    app()
