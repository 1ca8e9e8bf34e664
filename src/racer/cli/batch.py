"""``racer replay``, and ``racer route`` on Parquet / JSONL tables: here or on Ray.

Parsing and printing only; the work is in :mod:`racer.batch`. ``racer route`` itself
(also plain text, line by line) is in :mod:`racer.cli.calibrate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from racer.batch.io import require_pyarrow
from racer.cli.common import UserError, note, results_console, user_errors, warnings_as_notes

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


def _check_engine(engine: str) -> None:
    from racer.batch.engines import ENGINES, import_ray

    if engine not in ENGINES:
        raise UserError(f"--engine takes one of {list(ENGINES)}; got {engine!r}.")
    if engine == "ray":
        import_ray()


def _check_artifact(artifact: Path) -> None:
    if not artifact.is_dir():
        raise UserError(f"The artifact folder {str(artifact)!r} does not exist.")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {batch_size}.")


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
        raise UserError("Routing Parquet or several inputs needs --output FILE or FOLDER.")
    plain = [i for i in inputs if not _is_table_input(i)]
    if plain and len(inputs) == 1:
        return False
    if plain:
        raise UserError(
            f"--input {plain[0]!r} is not Parquet or JSONL; several inputs must all be "
            ".parquet or .jsonl files, folders of them or URIs."
        )
    return True


def check_route_options(
    artifact: Path,
    inputs: list[str],
    output: str,
    engine: str,
    batch_size: int,
    workers: int | None,
) -> bool:
    """Check ``racer route``'s options (:class:`UserError`); True for Parquet/JSONL tables,
    False for plain text routed line by line."""
    _check_artifact(artifact)
    _check_engine(engine)
    _check_batch_size(batch_size)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1; got {workers}.")
    tables = _structured(inputs, output)
    if not tables and engine == "ray":
        raise UserError(
            "--engine ray routes Parquet or JSONL files: give --input FILE.parquet|.jsonl "
            "and --output FILE."
        )
    return tables


def route_tables(
    artifact: Path,
    inputs: list[str],
    output: str,
    *,
    engine: str,
    address: str | None,
    workers: int | None,
    query_column: str,
    id_column: str,
    batch_size: int,
) -> None:
    """Route Parquet/JSONL tables (:func:`racer.batch.engines.route_files`); note the rate."""
    with user_errors():
        require_pyarrow()
    from racer.batch.engines import RouteSettings, route_files

    settings = RouteSettings(
        query_column=query_column,
        id_column=id_column,
        batch_size=batch_size,
        unit_rows=batch_size * max(1, 16384 // batch_size),
    )
    with user_errors():
        stats = route_files(
            artifact,
            inputs,
            output,
            engine=engine,
            settings=settings,
            workers=workers,
            address=address,
        )
    rate = stats.n_rows / stats.seconds if stats.seconds > 0 else float("nan")
    note(
        f"Routed {stats.n_rows} queries ({stats.n_units} work units, engine {stats.engine}) "
        f"-> {output} in {stats.seconds:.1f} s ({rate:,.0f} queries/s)."
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
        ("top-1 router accuracy, same queries", f"{summary['top1_accuracy']:.4f}"),
        ("mean cost", format_cost(summary["mean_cost"], summary["cost_unit"])),
        ("mean set size", f"{summary['mean_set_size']:.3f}"),
        ("refusal rate (no model called)", f"{summary['refusal_rate']:.4f}"),
        ("flag rate (answers served flagged)", f"{summary['flag_rate']:.4f}"),
        ("any invoked model correct (upper bound)", f"{summary['any_correct']:.4f}"),
        ("refused (no model called)", f"{summary['refusal_rate']:.4f}"),
        ("queries without a right answer", f"{summary['without_right_answer']:.4f}"),
        ("flagged answers", f"{summary['flag_rate']:.4f}"),
        (
            "flag precision (flagged without a right answer)",
            "-" if summary["flag_precision"] is None else f"{summary['flag_precision']:.4f}",
        ),
    ]
    for row in summary["groups"] or []:
        rows.append((f"risk of group {row['group']} (n = {row['n']})", f"{row['risk']:.4f}"))
    for name, value in rows:
        table.add_row(name, value)
    printer = results_console()
    printer.print(table)
    printer.print(
        f"Certificate: risk <= {certificate['alpha']:g} with probability >= "
        f"{1 - certificate['delta']:g} ({certificate['bound']} bound, "
        f"n = {certificate['n_calibration']}, mode {certificate['abstention_mode']}); "
        f"{summary['n_dropped']} queries with an unknown label left out.",
        highlight=False,
    )
    risks = {row["group"]: row["risk"] for row in summary["groups"] or []}
    for group in summary["above_alpha"]:
        results_console().print(
            f"[bold yellow]Above alpha:[/] {group}: risk {risks[group]:.2f} under a "
            f"certificate of {certificate['alpha']:g}.",
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
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="Also report each group's risk next to the certificate (and name the groups "
            "above alpha): the data's source column, eval_name or source. An artifact "
            "calibrated per group without a group classifier reads its groups from it.",
        ),
    ] = None,
) -> None:
    """Replay labelled traffic through an artifact: would-have-been risk, accuracy and cost.

    The figures are those racer evaluate computes (the same outcome functions, costs and
    aggregator) for this artifact's fixed policy on the given data.
    """
    with user_errors():
        from racer.batch.engines import replay as run_replay
        from racer.batch.replay import replay_data

        _check_artifact(artifact)
        _check_engine(engine)
        _check_batch_size(batch_size)
        for path in data:
            if not path.exists():
                raise UserError(f"The data path {str(path)!r} does not exist.")
        from racer.artifact import load_artifact
        from racer.cli.groups import check_group_options
        from racer.data.load import load_dataset

        check_group_options(group_by, False, "each", "raise")
        loaded = load_artifact(artifact)
        needs_groups = loaded.racer.groups_ is not None and loaded.group_classifier is None
        with warnings_as_notes("replay data"):
            dataset = load_dataset(data if len(data) > 1 else data[0])
        prepared = replay_data(
            dataset, loaded.model_names, with_groups=group_by is not None or needs_groups
        )
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
