"""The ``racer`` command line: one Typer app, one module per command group.

Parsing and printing only; the work is in the library. Every command is registered
here, in :data:`COMMANDS`:

- :mod:`racer.cli.evaluate`: ``demo``, ``evaluate``;
- :mod:`racer.cli.calibrate`: ``calibrate``, ``route``;
- :mod:`racer.cli.owndata`: ``collect``, ``grade``, ``split``, ``dataset``;
- :mod:`racer.cli.serve`: ``serve``, ``replay-server``;
- :mod:`racer.cli.batch`: ``replay`` (and ``route``'s Parquet / Ray path).

What they share (the one user-error wrapper, printing, common options) is in
:mod:`racer.cli.common`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated

import typer

from racer.cli import batch, calibrate, evaluate, owndata, serve
from racer.version import __version__

__all__ = ["COMMANDS", "app"]

app = typer.Typer(
    name="racer",
    help="RACER: calibrate any LLM router's scores into sets of models with a "
    "finite-sample guarantee on the misrouting risk. The method: racer/method.md in the "
    "package (docs/method.md in the repository).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Command name -> the function that runs it, in the order ``racer --help`` lists them.
COMMANDS: dict[str, Callable[..., None]] = {
    "demo": evaluate.demo,
    "evaluate": evaluate.evaluate,
    "calibrate": calibrate.calibrate,
    "serve": serve.serve,
    "replay-server": serve.replay_server,
    "collect": owndata.collect,
    "grade": owndata.grade,
    "split": owndata.split,
    "dataset": owndata.dataset,
    "route": calibrate.route,
    "replay": batch.replay,
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"racer {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """RACER: calibrate any LLM router's scores into sets of models with a finite-sample
    guarantee on the misrouting risk (racer/method.md, docs/method.md in the repository)."""


def one_paragraph_per_line(docstring: str | None) -> str:
    """A docstring's paragraphs, each on one line, so that ``--help`` wraps them at the
    terminal's width instead of at the source's hard line breaks."""
    paragraphs = inspect.cleandoc(docstring or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


for _name, _command in COMMANDS.items():
    app.command(_name, help=one_paragraph_per_line(_command.__doc__))(_command)

