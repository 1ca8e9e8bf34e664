"""``racer route`` and ``racer replay``: batch routing and replay, here or on Ray.

Parsing and printing only; the work is in :mod:`racer.batch`. Plain-text input (stdin,
or a text file with one query per line) keeps the line-by-line JSONL output of
:func:`racer.cli.route`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)


class BatchUserError(Exception):
    """A mistake in the command's input, shown without a traceback."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """One ``Error:`` line and exit status 2 for input mistakes (and for Ray task errors)."""
    try:
        yield
    except (BatchUserError, ValueError, FileNotFoundError, ImportError) as error:
        console.print(f"[bold red]Error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from None
    except Exception as error:
        if type(error).__module__.split(".")[0] != "ray":
            raise
        lines = [line for line in str(error).splitlines() if line.strip()]
        message = lines[-1] if lines else str(error)
        console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
        raise typer.Exit(2) from None


def _check_engine(engine: str) -> None:
    from racer.batch.engines import ENGINES, import_ray

    if engine not in ENGINES:
        raise BatchUserError(f"--engine takes one of {list(ENGINES)}; got {engine!r}.")
    if engine == "ray":
        import_ray()


def _check_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise BatchUserError(
            'Routing Parquet or JSONL files needs pyarrow: pip install "racer-routing[parquet]".'
        ) from None


def _check_artifact(artifact: Path) -> None:
    if not artifact.is_dir():
        raise BatchUserError(f"The artifact folder {str(artifact)!r} does not exist.")


def _is_table_input(location: str) -> bool:
    from racer.batch.io import FORMATS

    if "://" in location:
        return True
    path = Path(location)
    return path.is_dir() or path.suffix.lower() in FORMATS


def _structured(inputs: list[str], output: str) -> bool:
    """Parquet/JSONL batch routing (True), or the plain-text line-by-line route (False)."""
    if inputs == ["-"]:
        return False
    if output == "-":
        if len(inputs) == 1 and Path(inputs[0]).suffix.lower() != ".parquet":
            return False
        raise BatchUserError("Routing Parquet or several inputs needs --output FILE or FOLDER.")
    plain = [i for i in inputs if not _is_table_input(i)]
    if plain and len(inputs) == 1:
        return False
    if plain:
        raise BatchUserError(
            f"--input {plain[0]!r} is not Parquet or JSONL; several inputs must all be "
            ".parquet or .jsonl files, folders of them or URIs."
        )
    return True


EngineOption = Annotated[
    str, typer.Option(help="local (this process, one core) or ray (a Ray Data pipeline).")
]
AddressOption = Annotated[
    str | None,
    typer.Option(help="Ray cluster address (auto: the running one); a local cluster if omitted."),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(help="Ray actors, each loading the artifact once (all cluster CPUs if omitted)."),
]
BatchOption = Annotated[int, typer.Option(help="Queries embedded and scored at once.")]


def route(
    artifact: Annotated[Path, typer.Option(help="Artifact folder written by racer calibrate.")],
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="Queries: Parquet or JSONL files, folders or URIs (repeatable); or a text "
            'file or - (stdin) with one query per line or JSONL {"query": ...}, where output '
            "line i answers input line i.",
        ),
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            help="A .parquet or .jsonl file, or a folder of Parquet parts; - (stdout) for "
            "text input."
        ),
    ] = "-",
    engine: EngineOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    query_column: Annotated[str, typer.Option(help="Column with the query text.")] = "query",
    id_column: Annotated[
        str, typer.Option(help="Column with the query id (row numbers when absent).")
    ] = "id",
    batch_size: BatchOption = 2048,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Text input: write one JSON document (a list of records), not JSONL."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No notes on stderr (errors still show).")
    ] = False,
) -> None:
    """Choose the set of models for each query with a saved artifact.

    Parquet/JSONL input gives one output row per query, in input order, with its id, the
    invoked models, the abstention decision, the scores and the artifact's id and
    certificate (see docs/ray.md); both engines write identical rows.
    """
    inputs = input or ["-"]
    with _user_errors():
        _check_artifact(artifact)
        _check_engine(engine)
        if batch_size < 1:
            raise BatchUserError(f"--batch-size must be at least 1; got {batch_size}.")
        if workers is not None and workers < 1:
            raise BatchUserError(f"--workers must be at least 1; got {workers}.")
        structured = _structured(inputs, output)
        if not structured and engine == "ray":
            raise BatchUserError(
                "--engine ray routes Parquet or JSONL files: give --input FILE.parquet|.jsonl "
                "and --output FILE."
            )
    if not structured:
        from racer import cli

        cli.route(artifact=artifact, input=inputs[0], output=output, as_json=as_json, quiet=quiet)
        return
    with _user_errors():
        _check_pyarrow()
    from racer.batch.engines import RouteSettings, route_files

    settings = RouteSettings(
        query_column=query_column,
        id_column=id_column,
        batch_size=batch_size,
        unit_rows=batch_size * max(1, 16384 // batch_size),
    )
    with _user_errors():
        stats = route_files(
            artifact,
            inputs,
            output,
            engine=engine,
            settings=settings,
            workers=workers,
            address=address,
        )
    if quiet:
        return
    rate = stats.n_rows / stats.seconds if stats.seconds > 0 else float("nan")
    console.print(
        f"Routed {stats.n_rows} queries ({stats.n_units} work units, engine {stats.engine}) "
        f"-> {output} in {stats.seconds:.1f} s ({rate:,.0f} queries/s).",
        highlight=False,
    )


def _print_replay(summary: dict[str, Any]) -> None:
    from racer.evaluation.report import format_cost

    certificate = summary["certificate"]
    table = Table(title=f"Replay of {summary['n_queries']} labelled queries")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("risk (served loss)", f"{summary['risk']:.4f}"),
        (f"accuracy ({summary['aggregator']})", f"{summary['accuracy']:.4f}"),
        ("mean cost", format_cost(summary["mean_cost"], summary["cost_unit"])),
        ("mean set size", f"{summary['mean_set_size']:.3f}"),
        ("abstention rate", f"{summary['abstention_rate']:.4f}"),
        ("any invoked model correct", f"{summary['any_correct']:.4f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    Console().print(
        f"Certificate: risk <= {certificate['alpha']:g} with probability >= "
        f"{1 - certificate['delta']:g} ({certificate['bound']} bound, "
        f"n = {certificate['n_calibration']}, mode {certificate['abstention_mode']}); "
        f"{summary['n_dropped']} queries with an unknown label left out.",
        highlight=False,
    )


def replay(
    artifact: Annotated[Path, typer.Option(help="Artifact folder written by racer calibrate.")],
    data: Annotated[
        list[Path],
        typer.Option(help="Logged queries with per-model labels (and costs); repeatable."),
    ],
    engine: EngineOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    batch_size: BatchOption = 2048,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
) -> None:
    """Replay labelled traffic through an artifact: would-have-been risk, accuracy and cost.

    The figures are those racer evaluate computes (the same outcome functions, costs and
    aggregator) for this artifact's fixed policy on the given data.
    """
    with _user_errors():
        from racer.batch.engines import replay as run_replay
        from racer.batch.replay import replay_data

        _check_artifact(artifact)
        _check_engine(engine)
        if batch_size < 1:
            raise BatchUserError(f"--batch-size must be at least 1; got {batch_size}.")
        for path in data:
            if not path.exists():
                raise BatchUserError(f"The data path {str(path)!r} does not exist.")
        from racer.artifact import load_artifact
        from racer.data.load import load_dataset

        names = load_artifact(artifact).model_names
        dataset = load_dataset(data if len(data) > 1 else data[0])
        prepared = replay_data(dataset, names)
        summary = run_replay(
            artifact,
            prepared,
            engine=engine,
            batch_size=batch_size,
            unit_rows=batch_size * max(1, 16384 // batch_size),
            workers=workers,
            address=address,
        )
        if json_out is not None:
            json_out.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _print_replay(summary)


def register(app: typer.Typer) -> None:
    """Add ``route`` and ``replay`` to the ``racer`` app."""
    app.command("route")(route)
    app.command("replay")(replay)
