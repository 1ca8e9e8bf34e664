"""``racer calibrate`` and ``racer route``: calibrate an artifact, then route queries with it.

Parsing and printing only; the work is in :class:`racer.RACER`, :mod:`racer.artifact`
and :mod:`racer.batch` (Parquet / JSONL tables, here or on Ray: :mod:`racer.cli.batch`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from racer.cli.batch import (
    AddressOption,
    BatchOption,
    EngineOption,
    WorkersOption,
    check_route_options,
    route_tables,
)
from racer.cli.common import (
    DeltaOption,
    FwerOption,
    JsonOption,
    KindOption,
    MissingOption,
    ObjectiveOption,
    PassThresholdOption,
    QuietOption,
    ReferenceOption,
    RouterOption,
    UserError,
    data_options,
    load_data,
    note,
    progress,
    set_quiet,
    user_errors,
    warnings_as_notes,
    without_leakage,
)

ABSTENTION_CHOICES = ("flag", "strict", "off")


def _check_artifact_out(out: Path, overwrite: bool) -> None:
    from racer.artifact import METADATA_FILE

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; choose a folder path for the artifact.")
    if (out / METADATA_FILE).exists() and not overwrite:
        raise UserError(
            f"--out {str(out)!r} already holds an artifact; pass --overwrite to replace it, "
            "or choose another --out."
        )


def calibrate(
    train: Annotated[
        list[Path], typer.Option(help="Training data of the base router (repeatable).")
    ],
    calibration: Annotated[
        list[Path], typer.Option(help="Calibration data, exchangeable with future queries.")
    ],
    out: Annotated[Path, typer.Option(help="Artifact folder to write.")] = Path("racer-artifact"),
    router: RouterOption = "knn",
    alpha: Annotated[float, typer.Option(help="Target misrouting risk, in (0, 1).")] = 0.1,
    delta: DeltaOption = 0.1,
    bound: Annotated[str, typer.Option(help="auto, binomial, hb, hoeffding or wsr.")] = "auto",
    family: Annotated[
        str, typer.Option(help="threshold, cumulative or cost (prices from --train).")
    ] = "threshold",
    guarantee: Annotated[
        str, typer.Option(help="pac (P(risk <= alpha) >= 1 - delta) or expectation (CRC).")
    ] = "pac",
    abstention: Annotated[
        str,
        typer.Option(
            help="flag (answer, and flag queries that may have no good model), strict "
            "(abstain: call no model) or off (always call the top model); see "
            "racer/method.md section 3."
        ),
    ] = "flag",
    kind: KindOption = "auto",
    pass_threshold: PassThresholdOption = None,
    missing: MissingOption = "keep",
    overwrite: Annotated[bool, typer.Option(help="Replace an artifact already in --out.")] = False,
    objective: ObjectiveOption = None,
    reference: ReferenceOption = None,
    fwer: FwerOption = "fixed_sequence",
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fit a base router and calibrate RACER on held-out data; save both as an artifact."""
    import numpy as np

    from racer.artifact import save_artifact
    from racer.estimator import RACER
    from racer.evaluation.certified import certify_for_artifact
    from racer.evaluation.task import align_models
    from racer.routers import make_router

    set_quiet(quiet or as_json)
    with user_errors():
        if not 0.0 < alpha < 1.0:
            raise UserError(f"--alpha must lie strictly between 0 and 1; got {alpha}.")
        if not 0.0 < delta < 1.0:
            raise UserError(f"--delta must lie strictly between 0 and 1; got {delta}.")
        if abstention not in ABSTENTION_CHOICES:
            raise UserError(
                f"--abstention takes one of {list(ABSTENTION_CHOICES)}; got {abstention!r}."
            )
        _check_artifact_out(out, overwrite)
        options = data_options(kind, pass_threshold, missing)
        train_data = load_data(train, "train", options)
        cal_data = align_models(train_data, load_data(calibration, "calibration", options))
        train_data = without_leakage(train_data, cal_data, "calibration")
        prices = None
        if family == "cost":
            prices = train_data.mean_costs()
            if prices is None or not np.isfinite(prices).all():
                raise UserError(
                    "--family cost needs per-model prices in the --train data (for example "
                    "RouterBench's <model>|total_cost columns, or a cost column in a table); "
                    f"{train_data.name} has none for every model. Use --family threshold."
                )
        with progress("Training the base router") as step:
            step(router)
            base = make_router(router).fit(
                list(train_data.queries),
                train_data.labels,
                model_names=list(train_data.model_names),
            )
            cal_scores = base.predict_proba(list(cal_data.queries))
        estimator = RACER(
            alpha,
            delta,
            bound=bound,
            family=family,
            guarantee=guarantee,
            abstention=False if abstention == "off" else abstention,
            costs=prices,
        )
        with warnings_as_notes("calibration"):
            estimator.fit(cal_scores, cal_data.labels, model_names=list(cal_data.model_names))
        policy = certify_for_artifact(
            objective, reference, train_data, cal_data, alpha=alpha, delta=delta, method=fwer,
            router=router, calibration_scores=cal_scores,
        )
        save_artifact(
            out, base, estimator, calibration=cal_data, overwrite=overwrite, policy=policy
        )
    summary = {
        "artifact": str(out),
        "n_calibration": int(estimator.n_calibration_),
        "threshold": float(estimator.threshold_),
        "empirical_risk": float(estimator.empirical_risk_),
        "bound": estimator.bound_,
        "risk_bound": float(estimator.risk_bound_),
        "alpha": alpha,
        "delta": delta,
        "family": family,
        "abstention": getattr(estimator, "abstention_mode_", abstention),
        "abstain_threshold": getattr(estimator, "abstain_threshold_", None),
        "prices_from": train_data.name if prices is not None else None,
        "policy": None if policy is None else policy["summary"],
    }
    if as_json:
        typer.echo(json.dumps(summary))
    elif quiet:
        typer.echo(str(out))
    else:
        if policy is not None:
            Console().print(f"Answer-level policy: {policy['summary']}", highlight=False)
        Console().print(
            f"Calibrated on {estimator.n_calibration_} queries: lambda = "
            f"{estimator.threshold_:.4f}, empirical risk {estimator.empirical_risk_:.4f}, "
            f"{estimator.bound_} bound {estimator.risk_bound_:.4f} <= alpha = {alpha:g}.\n"
            f"Artifact: {out}"
        )


def _read_queries(source: str) -> list[str | None]:
    """One entry per input line; None for a blank line (kept so output lines align)."""
    text = sys.stdin.read() if source == "-" else _read_file(Path(source))
    queries: list[str | None] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            queries.append(None)
        elif line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"Line {number} is not valid JSON: {error}.") from None
            if not isinstance(record, dict) or not isinstance(record.get("query"), str):
                raise UserError(f'Line {number}: a JSON line needs a string field "query".')
            queries.append(record["query"])
        else:
            queries.append(line)
    if not any(q is not None for q in queries):
        raise UserError("No queries to route: the input is empty.")
    return queries


def _read_file(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"The input file {str(path)!r} does not exist.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"The input file {str(path)!r} is not UTF-8 text (undecodable byte at position "
            f"{error.start}); give one query per line, or JSON lines, in UTF-8."
        ) from None


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
    set_quiet(quiet)
    with user_errors():
        tables = check_route_options(artifact, inputs, output, engine, batch_size, workers)
        if not tables:
            _route_lines(artifact, inputs[0], output, as_json)
            return
    route_tables(
        artifact,
        inputs,
        output,
        engine=engine,
        address=address,
        workers=workers,
        query_column=query_column,
        id_column=id_column,
        batch_size=batch_size,
    )


def _route_lines(artifact: Path, source: str, output: str, as_json: bool) -> None:
    """Route plain-text queries (one per line, or JSONL); output line i answers input line i.

    A blank input line gets a record with ``"skipped": "blank line"``.
    """
    from racer.artifact import load_artifact

    lines = _read_queries(source)
    queries = [q for q in lines if q is not None]
    loaded = load_artifact(artifact)
    scores = loaded.predict_proba(queries)
    sets = loaded.predict_sets(queries, scores=scores)
    names = loaded.model_names
    routed = iter(zip(queries, sets, scores, strict=True))
    records = []
    for number, line in enumerate(lines, start=1):
        if line is None:
            records.append({"line": number, "query": "", "skipped": "blank line"})
            continue
        query, row, score_row = next(routed)
        records.append(
            {
                "line": number,
                "query": query,
                "models": [names[j] for j in row.nonzero()[0]],
                "abstain": not row.any(),
                "scores": {names[j]: round(float(s), 6) for j, s in enumerate(score_row)},
            }
        )
    if as_json:
        text = json.dumps(records) + "\n"
    else:
        text = "\n".join(json.dumps(r) for r in records) + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        note(f"Routed {len(queries)} queries -> {output}")
