"""What every command shares: the one user-error wrapper, printing, and common options.

A mistake in the input (a :class:`UserError`, or the library's ``ValueError``,
``FileNotFoundError`` and the like) is shown as one ``Error:`` line on stderr and the
command exits with status 2, never with a traceback: :func:`user_errors` around the
work, :func:`fail` where a command stops by itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

#: Notes, progress and errors go to stderr; results to stdout.
console = Console(stderr=True)
#: Set by --quiet: no progress and no notes on stderr (errors still show).
_quiet = {"on": False}

KINDS = ("auto", "choice", "pass_fraction")
MISSING = ("keep", "drop_queries")

DeltaOption = Annotated[
    float, typer.Option(help="Allowed probability that a calibration breaks its promise.")
]
ObjectiveOption = Annotated[
    str | None,
    typer.Option(
        help="Also certify an answer-level policy (cascades, sets + vote): set, error or "
        "regret (needs --reference)."
    ),
]
ReferenceOption = Annotated[
    str | None, typer.Option(help="Reference model of --objective regret (the fallback).")
]
FwerOption = Annotated[
    str,
    typer.Option(
        help="Family-wise error control of --objective: fixed_sequence, bonferroni or holm."
    ),
]
AgreementOption = Annotated[
    str,
    typer.Option(
        help="How --objective compares free-text answers (code, prose): char (character "
        "n-grams; the default, it certified more savings than dense on RouterBench MBPP), "
        "dense (MiniLM embeddings, needs the dense extra) or auto (dense when installed). "
        "The artifact records it; the gateway compares the same way."
    ),
]
STOP_RULES = ("auto", "learned", "margin")
StopRuleOption = Annotated[
    str,
    typer.Option(
        "--stop-rule",
        help="Cascade stop rules of --objective: auto (the default: cascades with a learned "
        "stop rule beside the agreement-margin ones when the training answers carry token "
        "logprobs), learned (also without logprobs) or margin (the agreement margin only).",
    ),
]


def learned_stop_of(stop_rule: str) -> bool | None:
    """``--stop-rule`` as ``plan_family``'s ``learned_stop`` (UserError for another value)."""
    if stop_rule not in STOP_RULES:
        raise UserError(f"--stop-rule must be one of {', '.join(STOP_RULES)}; got {stop_rule!r}.")
    return {"auto": None, "learned": True, "margin": False}[stop_rule]


#: The base router of every command that trains one: knn needs no tuning, is robust on the
#: real benchmarks, and is what the README and the committed results use.
DEFAULT_ROUTER = "knn"
RouterOption = Annotated[
    str,
    typer.Option(
        help="Base router, by name: prior, knn, logistic, mlp, mf, cluster, ensemble, or "
        "external (scores from a file: --scores FILE)."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")
]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress and no notes on stderr (errors still show)."),
]
KindOption = Annotated[
    str,
    typer.Option(
        help="RouterDC files: auto (from the scores, then the file name), choice (score > 0 "
        "is correct) or pass_fraction (multi-attempt pass rate)."
    ),
]
PassThresholdOption = Annotated[
    float | None,
    typer.Option(
        help="RouterDC pass-fraction files: pass fraction counted as correct (default 0.5)."
    ),
]
MissingOption = Annotated[
    str,
    typer.Option(
        help="Unknown outcomes: keep (left out of the evaluation pool and counted) or "
        "drop_queries (drop every query with one when loading)."
    ),
]


class UserError(Exception):
    """A mistake in the command's input, shown without a traceback."""


def fail(message: str) -> NoReturn:
    """Print ``message`` as one ``Error:`` line on stderr and exit with status 2.

    A message of several lines (a heading, then one problem per line) is joined into
    one: the heading, then the problems separated by semicolons.
    """
    heading, *problems = [
        line.strip() for line in message.removeprefix("Error:").strip().splitlines()
    ] or [""]
    problems = [line for line in problems if line]
    text = f"{heading} {'; '.join(problems)}" if problems else heading
    console.print(f"[bold red]Error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def user_errors(missing_extra: str | None = None) -> Iterator[None]:
    """Show input mistakes, and errors of Ray tasks, as one ``Error:`` line (exit status 2).

    Parameters
    ----------
    missing_extra : str, optional
        The package extra the command needs (for example ``"serve"``): a missing module
        is then reported with the ``pip install`` line that provides it.
    """
    try:
        yield
    except ImportError as error:
        if missing_extra is None:
            fail(one_line(error))
        fail(
            f"this command needs the {missing_extra} extra: pip install "
            f'"racer-routing[{missing_extra}]" ({error}).'
        )
    except (IsADirectoryError, NotADirectoryError, PermissionError) as error:
        where = f" {error.filename!r}" if error.filename else ""
        fail(f"cannot use{where}: {error.strerror}. Choose another path.")
    except (UserError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        fail(one_line(error))
    except Exception as error:
        if type(error).__module__.split(".")[0] != "ray":
            raise
        lines = [line for line in str(error).splitlines() if line.strip()]
        fail(lines[-1] if lines else str(error))


def one_line(error: BaseException | str) -> str:
    """The message on one line, with the library's Python advice in command-line words."""
    text = " ".join(str(error).split()) or type(error).__name__
    for python, option in (
        ("overwrite=True", "--overwrite"),
        ("kind='choice' or kind='pass_fraction'", "--kind choice or --kind pass_fraction"),
        ("missing='drop_queries'", "--missing drop_queries"),
        ("abstention='strict'", "--abstention strict"),
        ("abstention='flag'", "--abstention flag"),
    ):
        text = text.replace(python, option)
    return text


def check_router_option(router: str, scores: Path | None, train: list[Path] | None) -> None:
    """Check --router, --scores and --train together, before any data is read."""
    from racer.routers import ROUTER_NAMES

    if router not in ROUTER_NAMES:
        raise UserError(f"Unknown router {router!r}; choose one of {list(ROUTER_NAMES)}.")
    if scores is None and router == "external":
        raise UserError(
            "--router external reads per-model scores from a file (RouteLLM, RouterDC, "
            "your own): pass it as --scores FILE."
        )
    if scores is not None and not scores.is_file():
        raise UserError(f"The scores file {str(scores)!r} does not exist.")
    if scores is None and not train:
        raise UserError("Give --train PATH to fit the base router, or --scores FILE.")


def results_console() -> Console:
    """The console for results on stdout: the terminal's width, or, when stdout is a pipe
    or a file, wide enough that no table cell (a method name) is cut."""
    printer = Console()
    return printer if printer.is_terminal else Console(width=1000)


def set_quiet(on: bool) -> None:
    """--quiet: no progress and no notes from now on (errors still show)."""
    _quiet["on"] = on


def is_quiet() -> bool:
    """Whether --quiet (or --json) silenced progress and notes."""
    return _quiet["on"]


def note(text: str) -> None:
    """A note on stderr (rich markup), unless --quiet."""
    if not _quiet["on"]:
        console.print(text, highlight=False, soft_wrap=True)


@contextmanager
def progress(title: str) -> Iterator[Callable[..., None]]:
    """A progress line on a terminal (time elapsed; percentage and time left when steps are
    counted); nothing at all when stderr is not a terminal or with --quiet."""
    if _quiet["on"] or not console.is_terminal:
        yield lambda message, done=None, total=None: None
        return
    from datetime import timedelta

    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class TimeLeft(ProgressColumn):
        """"0:00:12 left" while the steps are counted; nothing for a spinner."""

        def render(self, task: Any) -> Text:
            if task.total is None or task.time_remaining is None:
                return Text("")
            return Text(f"{timedelta(seconds=int(task.time_remaining))} left")

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("elapsed"),
        TimeLeft(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(title, total=None)

        def step(message: str, done: int | None = None, total: int | None = None) -> None:
            bar.update(task, description=f"{title}: {message}", completed=done, total=total)

        yield step


@contextmanager
def warnings_as_notes(what: str) -> Iterator[None]:
    """Show the library's warnings as short notes instead of Python warning lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        note(f"[yellow]Note ({what}):[/] {one_line(warning.message)}")


def data_options(kind: str, pass_threshold: float | None, missing: str) -> dict[str, Any]:
    """Reader options from --kind, --pass-threshold and --missing (only those given)."""
    if kind not in KINDS:
        raise UserError(f"--kind takes one of {list(KINDS)}; got {kind!r}.")
    if missing not in MISSING:
        raise UserError(f"--missing takes one of {list(MISSING)}; got {missing!r}.")
    options: dict[str, Any] = {"missing": missing}
    if kind != "auto":
        options["kind"] = kind
    if pass_threshold is not None:
        if not 0.0 < pass_threshold <= 1.0:
            raise UserError(f"--pass-threshold must lie in (0, 1]; got {pass_threshold}.")
        options["pass_threshold"] = pass_threshold
    return options


def load_data(paths: list[Path], what: str, options: dict[str, Any]) -> Any:
    """The routing data of ``paths`` (the --train, --test or --calibration option)."""
    from racer.data.load import load_dataset

    for path in paths:
        if not path.exists():
            raise UserError(f"The {what} path {str(path)!r} does not exist.")
    reader_options = {k: v for k, v in options.items() if k != "missing"}
    with warnings_as_notes(f"{what} data"):
        try:
            return load_dataset(
                paths if len(paths) > 1 else paths[0],
                missing=options.get("missing", "keep"),
                **reader_options,
            )
        except TypeError:
            given = ", ".join(f"--{k.replace('_', '-')}" for k in reader_options)
            raise UserError(
                f"{given} appl{'ies' if len(reader_options) == 1 else 'y'} to RouterDC JSON "
                f"files only, and the {what} data {', '.join(map(str, paths))} is another "
                "format; leave the option out."
            ) from None


def without_leakage(train: Any, held_out: Any, what: str) -> Any:
    """``train`` without the queries it shares with ``held_out`` (same id or text).

    A query in both inflates every figure (the router has seen it): such queries are
    removed from the training data with a note; when nothing would be left, refused.
    """
    import numpy as np

    from racer.data.split import shared_queries

    shared = shared_queries(train, held_out)
    count = int(shared.sum())
    if count == 0:
        return train
    if count == train.n_queries:
        raise UserError(
            f"Every one of the {count} training queries is also in the {what} data: --train "
            f"and --{what} hold the same queries, which would leak. Train on other data "
            f"than the {what} data."
        )
    contained = int(shared_queries(held_out, train).sum())
    hint = (
        f" (all {held_out.n_queries} {what} queries were in --train: does --train include "
        f"the {what} file?)"
        if contained == held_out.n_queries
        else ""
    )
    note(
        f"[yellow]Note (leakage):[/] removed {count} of {train.n_queries} training queries "
        f"that are also in the {what} data (same id or text){hint}; the base router is "
        f"trained on the other {train.n_queries - count}."
    )
    return train.subset(np.flatnonzero(~shared))
