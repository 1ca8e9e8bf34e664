"""``racer calibrate`` and ``racer route``: calibrate an artifact, then route queries with it.

Parsing and printing only; the work is in :class:`racer.RACER`, :mod:`racer.artifact`
and :mod:`racer.batch` (Parquet / JSONL tables, here or on Ray: :mod:`racer.cli.batch`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from racer.cli.batch import (
    AddressOption,
    BatchOption,
    EngineOption,
    WorkersOption,
    check_route_options,
    route_tables,
)
from racer.cli.common import (
    DEFAULT_ROUTER,
    AgreementOption,
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
    StopRuleOption,
    UserError,
    check_router_option,
    data_options,
    learned_stop_of,
    load_data,
    note,
    one_line,
    progress,
    results_console,
    set_quiet,
    user_errors,
    warnings_as_notes,
    without_leakage,
)
from racer.cli.groups import (
    GroupByOption,
    GroupClassifierOption,
    GroupGuaranteeOption,
    SmallGroupsOption,
    check_group_options,
    check_group_paths,
    check_routable_without_groups,
    data_groups,
    fit_group_classifier,
)

if TYPE_CHECKING:
    import numpy as np

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


def _check_calibrate_options(
    alpha: float, delta: float, bound: str, family: str, guarantee: str, abstention: str
) -> None:
    """The options that need no data, checked before anything is loaded."""
    from racer.calibration import GUARANTEES
    from racer.estimator import BOUND_CHOICES
    from racer.sets import FAMILIES

    if not 0.0 < alpha < 1.0:
        raise UserError(f"--alpha must lie strictly between 0 and 1; got {alpha}.")
    if not 0.0 < delta < 1.0:
        raise UserError(f"--delta must lie strictly between 0 and 1; got {delta}.")
    for option, value, choices in (
        ("--abstention", abstention, ABSTENTION_CHOICES),
        ("--bound", bound, BOUND_CHOICES),
        ("--family", family, FAMILIES),
        ("--guarantee", guarantee, GUARANTEES),
    ):
        if value not in choices:
            raise UserError(f"{option} takes one of {list(choices)}; got {value!r}.")


def check_calibration_size(
    labels: np.ndarray, alpha: float, delta: float, bound: str, guarantee: str
) -> None:
    """Refuse a calibration set below :func:`racer.minimum_calibration_size` before training.

    The bound is the one calibration would use: ``crc`` for the expectation guarantee,
    and for ``auto`` the exact binomial on 0/1 labels, Waudby-Smith-Ramdas on graded ones.
    """
    import numpy as np

    from racer.estimator import minimum_calibration_size

    known = labels[~np.isnan(labels)]
    if guarantee == "expectation":
        used = "crc"
    elif bound == "auto":
        used = "binomial" if np.isin(known, (0.0, 1.0)).all() else "wsr"
    else:
        used = bound
    needed = minimum_calibration_size(alpha, delta, used)
    if len(labels) < needed:
        raise UserError(
            f"The calibration data has {len(labels)} queries; certifying risk <= {alpha:g} "
            f"with probability {1 - delta:g} by the {used} bound needs at least {needed} "
            "(racer.minimum_calibration_size). Give more calibration data, or a larger "
            "--alpha or --delta."
        )


def _base_router(
    router: str, scores: Path | None, train_data: Any, cal_data: Any
) -> tuple[Any, np.ndarray]:
    """The base router (fitted on --train, or over --scores) and its calibration scores."""
    if scores is not None:
        from racer.routers.external import fit_external_scores

        try:
            return fit_external_scores(
                scores, cal_data.model_names, cal_data.query_ids, cal_data.queries
            )
        except ValueError as error:
            raise UserError(
                f"--scores {str(scores)!r} does not fit the calibration data's models "
                f"{list(cal_data.model_names)}: {one_line(error)}"
            ) from None
    from racer.routers import make_router

    with progress("Training the base router") as step:
        step(router)
        base = make_router(router).fit(
            list(train_data.queries), train_data.labels, model_names=list(train_data.model_names)
        )
        return base, base.predict_proba(list(cal_data.queries))


def calibrate(
    calibration: Annotated[
        list[Path], typer.Option(help="Calibration data, exchangeable with future queries.")
    ],
    train: Annotated[
        list[Path] | None,
        typer.Option(
            help="Training data of the base router (repeatable); optional with --scores."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Artifact folder to write.")] = Path("racer-artifact"),
    router: RouterOption = DEFAULT_ROUTER,
    scores: Annotated[
        Path | None,
        typer.Option(
            help="Per-model scores from another router (RouteLLM, RouterDC, yours): a CSV, "
            "JSONL, Parquet or .npz file with a query column (text or id) and one column "
            "per model; replaces --router (the artifact routes the queries of this file)."
        ),
    ] = None,
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
    refusals: Annotated[
        bool,
        typer.Option(
            "--refusals/--no-refusals",
            help="Flag mode: may a query get no model at all (a refusal)? By default it is "
            "served the top model with the flag raised.",
        ),
    ] = False,
    refusal_cost: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="What one refusal costs when choosing among certified configurations, in "
            "model calls (or dollars with prices); default: the query's top model; 0 makes "
            "refusals free (smallest sets).",
        ),
    ] = None,
    kind: KindOption = "auto",
    pass_threshold: PassThresholdOption = None,
    missing: MissingOption = "keep",
    overwrite: Annotated[bool, typer.Option(help="Replace an artifact already in --out.")] = False,
    objective: ObjectiveOption = None,
    reference: ReferenceOption = None,
    fwer: FwerOption = "fixed_sequence",
    agreement: AgreementOption = "char",
    stop_rule: StopRuleOption = "auto",
    group_by: GroupByOption = None,
    group_classifier: GroupClassifierOption = False,
    group_guarantee: GroupGuaranteeOption = "each",
    small_groups: SmallGroupsOption = "raise",
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fit a base router (or read --scores) and calibrate RACER on held-out data; save both
    as an artifact.

    With --group-by, each group gets its own certificate; the artifact records where a
    query's group comes from (the request's racer_group, or the saved group classifier).
    Strict abstention tests its (tau, lambda) pairs along a front built on the training
    split's cross-fitted scores.
    """
    import numpy as np

    from racer.artifact import save_artifact
    from racer.estimator import RACER
    from racer.evaluation.certified import (
        certify_for_artifact,
        check_objective_options,
        model_index,
    )
    from racer.evaluation.scoring import cross_fitted_scores
    from racer.evaluation.task import align_models
    from racer.similarity import free_text_kind

    set_quiet(quiet or as_json)
    with user_errors():
        _check_calibrate_options(alpha, delta, bound, family, guarantee, abstention)
        check_router_option(router, scores, train)
        check_objective_options(objective, reference, fwer)
        if objective is not None:
            free_text_kind(agreement)  # a wrong name, or dense without the extra
        learned_stop = learned_stop_of(stop_rule)
        if objective is not None and not train:
            raise UserError(
                f"--objective {objective} plans its policies on the --train data; give --train."
            )
        check_group_options(group_by, group_classifier, group_guarantee, small_groups)
        if group_classifier and not train:
            raise UserError(
                "--group-classifier learns the groups from the --train data; give --train."
            )
        check_group_paths(group_by, calibration, "--calibration")
        check_group_paths(group_by if group_classifier else None, train, "--train")
        _check_artifact_out(out, overwrite)
        options = data_options(kind, pass_threshold, missing)
        train_data = load_data(train, "train", options) if train else None
        cal_data = load_data(calibration, "calibration", options)
        if train_data is not None:
            cal_data = align_models(train_data, cal_data)
            train_data = without_leakage(train_data, cal_data, "calibration")
        if reference is not None:
            model_index(cal_data.model_names, reference)
        check_calibration_size(cal_data.labels, alpha, delta, bound, guarantee)
        prices = None
        if family == "cost":
            prices = None if train_data is None else train_data.mean_costs()
            if prices is None or not np.isfinite(prices).all():
                raise UserError(
                    "--family cost needs per-model prices in the --train data (for example "
                    "RouterBench's <model>|total_cost columns, or a cost column in a table); "
                    f"{'no --train was given' if train_data is None else train_data.name} has "
                    "none for every model. Use --family threshold."
                )
        base, cal_scores = _base_router(router, scores, train_data, cal_data)
        train_scores = None
        if abstention == "strict" and scores is None:  # the (tau, lambda) front
            with progress("Cross-fitted training scores (strict abstention's front)") as step:
                step(router)
                train_scores = cross_fitted_scores(router, train_data, cal_data)[0]
        classifier = None
        cal_groups = None
        if group_by is not None:
            if group_classifier:
                with progress("Training the group classifier") as step:
                    step(f"{group_by} of {train_data.n_queries} training queries")
                    classifier = fit_group_classifier(train_data)
                cal_groups = classifier.predict(list(cal_data.queries))
            else:
                cal_groups = data_groups(cal_data)
        estimator = RACER(
            alpha,
            delta,
            bound=bound,
            family=family,
            guarantee=guarantee,
            abstention=False if abstention == "off" else abstention,
            costs=prices,
            refusals=refusals,
            refusal_cost=refusal_cost,
            group_guarantee=group_guarantee,
            small_groups=small_groups,
        )
        with warnings_as_notes("calibration"):
            estimator.fit(
                cal_scores,
                cal_data.labels,
                groups=cal_groups,
                model_names=list(cal_data.model_names),
                train_scores=train_scores,
                train_labels=None if train_scores is None else train_data.labels,
            )
        policy = certify_for_artifact(
            objective, reference, train_data, cal_data, alpha=alpha, delta=delta, method=fwer,
            router=router, calibration_scores=cal_scores, agreement=agreement,
            learned_stop=learned_stop,
        )
        save_artifact(
            out,
            base,
            estimator,
            calibration=cal_data,
            overwrite=overwrite,
            policy=policy,
            group_column=group_by,
            group_classifier=classifier,
        )
    summary = {
        "artifact": str(out),
        "n_calibration": int(estimator.n_calibration_),
        "threshold": None if estimator.threshold_ is None else float(estimator.threshold_),
        "empirical_risk": float(estimator.empirical_risk_),
        "bound": estimator.bound_,
        "risk_bound": float(estimator.risk_bound_),
        "alpha": alpha,
        "delta": delta,
        "family": family,
        "abstention": getattr(estimator, "abstention_mode_", abstention),
        "abstain_threshold": getattr(estimator, "abstain_threshold_", None),
        "mean_set_size": estimator.mean_set_size_,
        "prices_from": train_data.name if prices is not None and train_data else None,
        "scores_from": None if scores is None else str(scores),
        "policy": None if policy is None else policy["summary"],
        "groups": _group_summary(estimator),
        # what users of the calibration queries receive (racer.diagnostics.served_rates)
        "refusal_rate": estimator.refusal_rate_,
        "without_right_answer": estimator.without_right_answer_,
        "flag_rate": estimator.flag_rate_,
        "flag_precision": None  # NaN: nothing flagged
        if estimator.flag_precision_ != estimator.flag_precision_
        else estimator.flag_precision_,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    elif quiet:
        typer.echo(str(out))
    else:
        if policy is not None:
            results_console().print(f"Answer-level policy: {policy['summary']}", highlight=False)
        if estimator.groups_ is None:
            results_console().print(
                f"Calibrated on {estimator.n_calibration_} queries: lambda = "
                f"{estimator.threshold_:.4f}, empirical risk {estimator.empirical_risk_:.4f}, "
                f"{estimator.bound_} bound {estimator.risk_bound_:.4f} <= alpha = {alpha:g}.",
                highlight=False,
            )
        else:
            results_console().print(
                f"Calibrated {len(estimator.groups_)} groups on {estimator.n_calibration_} "
                f"queries, each with its own certificate ({estimator.bound_} bound <= alpha = "
                f"{alpha:g}):",
                highlight=False,
            )
            for row in _group_summary(estimator) or []:
                results_console().print(
                    f"  {row['group']}: n = {row['n']}, lambda = {row['threshold']:.4f}, "
                    f"empirical risk {row['empirical_risk']:.4f}, bound {row['risk_bound']:.4f}"
                    + (f" (pools {', '.join(row['members'])})" if row["members"] else ""),
                    highlight=False,
                )
        precision = estimator.flag_precision_
        results_console().print(
            f"On the calibration queries: {estimator.mean_set_size_:.2f} models called per "
            f"query, {estimator.refusal_rate_:.1%} refused (no model called), "
            f"{estimator.without_right_answer_:.1%} without a right answer, "
            f"{estimator.flag_rate_ or 0.0:.1%} flagged"
            + ("" if precision != precision else f" (flag precision {precision:.1%})")
            + f".\nArtifact: {out}",
            highlight=False,
        )


def _read_queries(source: str) -> list[tuple[str, str] | None]:
    """(id, query) per input line, None for a blank line (kept so output lines align).

    The id is a JSON line's ``"id"`` field when it has one, else the line number.
    """
    text = sys.stdin.read() if source == "-" else _read_file(Path(source))
    queries: list[tuple[str, str] | None] = []
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
            queries.append((str(record.get("id", number)), record["query"]))
        else:
            queries.append((str(number), line))
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
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
) -> None:
    """Choose the set of models for each query with a saved artifact.

    Every input gives one record per query, in input order, with the same fields: its
    id, the models called, refused (no model called) and flagged (an answer with the
    abstain flag), the reason of a refusal, each model's score, and the artifact's id and
    certificate (see docs/ray.md). Text input adds the line number and the query; both
    engines write identical rows.
    """
    inputs = input or ["-"]
    set_quiet(quiet)
    with user_errors():
        if output != "-" and Path(output).is_file() and not overwrite:
            raise UserError(
                f"--output {output!r} already exists; pass --overwrite to replace it, or "
                "choose another --output."
            )
        tables = check_route_options(artifact, inputs, output, engine, batch_size, workers)
        check_routable_without_groups(artifact)
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

    Each record has the fields of a routed table row (:mod:`racer.route_record`) after
    its ``line`` and ``query``; a blank input line gets ``"skipped": "blank line"``.
    """
    from racer.artifact import load_artifact
    from racer.route_record import route_records

    lines = _read_queries(source)
    given = [q for q in lines if q is not None]
    routed = iter(
        route_records(load_artifact(artifact), [q for _, q in given], [i for i, _ in given])
    )
    records = []
    for number, line in enumerate(lines, start=1):
        if line is None:
            records.append({"line": number, "query": "", "skipped": "blank line"})
        else:
            records.append({"line": number, "query": line[1], **next(routed)})
    if as_json:
        text = json.dumps(records) + "\n"
    else:
        text = "\n".join(json.dumps(r) for r in records) + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        note(f"Routed {len(given)} queries -> {output}")


def _group_summary(estimator: Any) -> list[dict[str, Any]] | None:
    """Each group's certificate (None for a marginal calibration), JSON-ready."""
    if estimator.groups_ is None:
        return None
    return [
        {
            "group": g.name,
            "n": g.n,
            "threshold": g.threshold,
            "abstain_threshold": g.abstain_threshold,
            "empirical_risk": g.empirical_risk,
            "risk_bound": g.risk_bound,
            "delta": g.delta,
            "members": list(g.members),
        }
        for g in estimator.groups_.values()
    ]
