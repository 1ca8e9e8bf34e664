"""The ``racer`` command line: parsing and printing only; the work is in the library."""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    name="racer",
    help="RACER: calibrate any LLM router's scores into sets of models with a "
    "finite-sample guarantee on the misrouting risk.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

DEFAULT_ALPHAS = "0.05,0.1,0.2"
DEFAULT_BOUNDS = "binomial,hb,hoeffding"
DEFAULT_FAMILIES = "threshold,cumulative,cost"


class UserError(Exception):
    """A mistake in the command's input, shown without a traceback."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print the library's input errors as one clear line and exit with status 2."""
    from racer.exceptions import InfeasibleCalibrationError

    try:
        yield
    except (UserError, ValueError, FileNotFoundError, InfeasibleCalibrationError) as error:
        console.print(f"[bold red]Error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(
            f"{option} takes comma-separated numbers such as 0.05,0.1; got {text!r}."
        ) from None
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise UserError(f"{option} values must lie strictly between 0 and 1; got {text!r}.")
    return values


def _names(text: str, option: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [v for v in values if v not in allowed]
    if not values or unknown:
        raise UserError(
            f"{option} takes a comma-separated subset of {list(allowed)}; got {text!r}."
        )
    return values


@contextmanager
def _progress(title: str) -> Iterator[Callable[[str], None]]:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title)
        yield lambda message: progress.update(task, description=f"{title}: {message}")


@contextmanager
def _warnings_as_notes(what: str) -> Iterator[None]:
    """Show the library's warnings as short notes instead of Python warning lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        console.print(f"[yellow]Note ({what}):[/] {warning.message}", highlight=False)


def _load(paths: list[Path], what: str, options: dict[str, Any]) -> Any:
    from racer.data.load import load_dataset

    for path in paths:
        if not path.exists():
            raise UserError(f"The {what} path {str(path)!r} does not exist.")
    with _warnings_as_notes(f"{what} data"):
        return load_dataset(paths if len(paths) > 1 else paths[0], **options)


def _settings(
    alpha: str,
    delta: float,
    trials: int,
    calibration_fraction: float,
    families: str,
    bounds: str,
    seed: int,
) -> Any:
    from racer.calibration import BOUNDS
    from racer.evaluation.run import EvaluationSettings
    from racer.sets import FAMILIES

    if not 0.0 < delta < 1.0:
        raise UserError(f"--delta must lie strictly between 0 and 1; got {delta}.")
    if trials < 1:
        raise UserError(f"--trials must be at least 1; got {trials}.")
    if not 0.0 < calibration_fraction < 1.0:
        raise UserError(
            f"--calibration-fraction must lie strictly between 0 and 1; got {calibration_fraction}."
        )
    return EvaluationSettings(
        alphas=_numbers(alpha, "--alpha"),
        delta=delta,
        n_trials=trials,
        calibration_fraction=calibration_fraction,
        families=_names(families, "--families", FAMILIES),
        bounds=_names(bounds, "--bounds", BOUNDS),
        seed=seed,
    )


def _print_summary(evaluation: Any, paths: dict[str, Any]) -> None:
    from racer.evaluation.report import HEADLINE_METHODS, format_cost, monte_carlo_limit

    table = Table(title=f"{evaluation.task}: means over {evaluation.plan.n_trials} trials")
    for column in ("alpha", "method", "risk", "violations", "size", "cost", "accuracy"):
        table.add_column(column, justify="left" if column == "method" else "right")
    limit = monte_carlo_limit(evaluation.settings.delta, evaluation.plan.n_trials)
    for alpha in evaluation.settings.alphas:
        for name in (*HEADLINE_METHODS, "uncorrected threshold"):
            r = evaluation.record(name, alpha)
            violation = f"{r['violation_rate']:.3f}"
            if r["group"] == "racer":
                violation = f"[{'green' if r['violation_rate'] <= limit else 'red'}]{violation}[/]"
            table.add_row(
                f"{alpha:g}",
                name,
                f"{r['risk']:.3f}",
                violation,
                f"{r['mean_set_size']:.2f}",
                format_cost(r["mean_cost"], r["cost_unit"]),
                f"{r['accuracy']:.3f}",
            )
    Console().print(table)
    match = paths.get("match")
    if match and match["cheapest"]:
        best = match["cheapest"]
        Console().print(
            f"Cheapest RACER configuration matching {match['reference']['model']}: "
            f"{best['method']}, alpha={best['alpha']:g}, {best['aggregator']} -> accuracy "
            f"{best['accuracy']:.3f} vs {match['reference']['accuracy']:.3f}, cost "
            f"{100 * best['cost_share']:.1f} % of the reference."
        )
    Console().print(f"Report: {paths['report']}\nResults: {paths['results']}")


AlphaOption = Annotated[
    str, typer.Option("--alpha", help="Target risk levels, comma-separated, each in (0, 1).")
]
DeltaOption = Annotated[
    float, typer.Option(help="Allowed probability that a calibration breaks its promise.")
]
TrialsOption = Annotated[
    int, typer.Option(help="Random calibration/test splits, and as many validity trials.")
]
FractionOption = Annotated[
    float, typer.Option(help="Share of the test pool that calibrates in each split trial.")
]
FamiliesOption = Annotated[
    str, typer.Option(help="RACER set families: threshold, cumulative, cost (needs costs).")
]
BoundsOption = Annotated[
    str,
    typer.Option(
        help="RACER bounds: binomial, hb, hoeffding, wsr (wsr calibrates trial by trial: slow)."
    ),
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
SeedOption = Annotated[int, typer.Option(help="Seed of the trials (and of the demo data).")]
RouterOption = Annotated[
    str, typer.Option(help="Base router, by name (see racer.routers.ROUTER_NAMES).")
]


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, results.json and figures.")
    ] = Path("racer-out"),
    queries: Annotated[int, typer.Option(help="Synthetic queries (half train, half test).")] = 4000,
    router: RouterOption = "logistic",
    alpha: AlphaOption = DEFAULT_ALPHAS,
    delta: DeltaOption = 0.1,
    trials: TrialsOption = 200,
    seed: SeedOption = 0,
) -> None:
    """Run the whole pipeline on a SYNTHETIC benchmark and write the report.

    Generates a clearly labelled synthetic routing benchmark (six models with different
    per-topic skills and prices, queries of varying difficulty, some no model solves,
    multiple-choice responses), trains a base router on half of it, then calibrates and
    evaluates RACER and the baselines on the other half.
    """
    from racer.data.split import train_test_split
    from racer.evaluation.synthetic import (
        SYNTHETIC_NOTICE,
        answer_level_story,
        make_synthetic_benchmark,
    )
    from racer.evaluation.task import evaluate_task, router_scores, write_task_report

    with _user_errors():
        if queries < 200:
            raise UserError(f"--queries must be at least 200 for a meaningful demo; got {queries}.")
        settings = _settings(alpha, delta, trials, 0.5, DEFAULT_FAMILIES, DEFAULT_BOUNDS, seed)
        start = time.perf_counter()
        data = make_synthetic_benchmark(queries, random_state=seed)
        train, test = train_test_split(data, 0.5, random_state=seed)
        with _progress("Training the base router") as step:
            step(router)
            scores = router_scores(router, train, test)
        with _progress("Evaluating") as step:
            evaluation = evaluate_task(test, scores, settings, train=train, progress=step)
            step("certified answer-level policies (synthetic story tasks)")
            certified = answer_level_story(delta=delta, n_trials=trials, random_state=seed)
        header = [
            f"**{SYNTHETIC_NOTICE}.** {data.n_models} made-up models, {data.n_queries} "
            f"made-up queries; base router: {router}, trained on {train.n_queries} of them.",
            "",
        ]
        paths = write_task_report(evaluation, out, header=header, certified=certified)
    _print_summary(evaluation, paths)
    console.print(f"Done in {time.perf_counter() - start:.1f} s.")


@app.command()
def evaluate(
    train: Annotated[
        list[Path] | None,
        typer.Option(help="Training data for the base router (file or folder; repeatable)."),
    ] = None,
    test: Annotated[
        list[Path] | None,
        typer.Option(help="Test data: the pool of the trials (file or folder; repeatable)."),
    ] = None,
    router: RouterOption = "knn",
    scores: Annotated[
        Path | None,
        typer.Option(
            help="Per-model scores for the test queries from another router (CSV, Parquet, "
            ".npy); replaces --router and makes --train optional."
        ),
    ] = None,
    alpha: AlphaOption = DEFAULT_ALPHAS,
    delta: DeltaOption = 0.1,
    trials: TrialsOption = 200,
    calibration_fraction: FractionOption = 0.5,
    families: FamiliesOption = DEFAULT_FAMILIES,
    bounds: BoundsOption = DEFAULT_BOUNDS,
    match_model: Annotated[
        str | None,
        typer.Option(
            help="Also search the cheapest RACER configuration whose accuracy matches this "
            "model (for example gpt-4-1106-preview)."
        ),
    ] = None,
    pass_threshold: Annotated[
        float | None,
        typer.Option(
            help="RouterDC multi-attempt files: pass fraction counted as correct "
            "(loader default when omitted)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Task name in the report.")] = None,
    seed: SeedOption = 0,
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, results.json and figures.")
    ] = Path("racer-out"),
    objective: ObjectiveOption = None,
    reference: ReferenceOption = None,
    fwer: FwerOption = "fixed_sequence",
) -> None:
    """Evaluate RACER and the baselines on routing data; write a report and figures.

    Trains the base router on --train (or reads --scores), then over --trials random
    calibration/test splits of --test compares RACER (each bound and family) with the
    top-1 router, fixed top-k, all models, the best single model, split conformal,
    conformal risk control and the uncorrected threshold. The violation rate comes from
    the exact validity check: calibrate on an i.i.d. resample of the test pool, measure
    the risk on the whole pool.
    """
    from racer.evaluation.certified import check_objective_options, records_for_evaluation
    from racer.evaluation.task import align_models, evaluate_task, router_scores, write_task_report

    with _user_errors():
        check_objective_options(objective, reference, fwer)
        if not test:
            raise UserError("Give the test data with --test PATH.")
        if scores is None and not train:
            raise UserError("Give --train PATH to fit the base router, or --scores FILE.")
        if scores is None and router == "external":
            raise UserError("The external router reads a file: pass it as --scores FILE.")
        settings = _settings(alpha, delta, trials, calibration_fraction, families, bounds, seed)
        options = {} if pass_threshold is None else {"pass_threshold": pass_threshold}
        test_data = _load(test, "test", options)
        train_data = _load(train, "train", options) if train else None
        if train_data is not None:
            test_data = align_models(train_data, test_data)
        start = time.perf_counter()
        if scores is not None:
            test_scores = _external_scores(scores, test_data)
            source = f"external scores from {scores}"
        else:
            with _progress("Training the base router") as step:
                step(f"{router} on {train_data.n_queries} queries")
                test_scores = router_scores(router, train_data, test_data)
            source = (
                f"base router {router}, trained on {train_data.name} "
                f"({train_data.n_queries} queries)"
            )
        with _progress("Evaluating") as step:
            evaluation = evaluate_task(
                test_data, test_scores, settings, train=train_data, task=name, progress=step
            )
        certified = records_for_evaluation(
            objective, reference, train_data, test_data, alphas=settings.alphas, delta=delta,
            n_trials=trials, calibration_fraction=calibration_fraction, seed=seed, method=fwer,
        )
        header = [f"Test data: {test_data.name}; {source}.", ""]
        paths = write_task_report(
            evaluation, out, header=header, match_model=match_model, certified=certified
        )
    _print_summary(evaluation, paths)
    console.print(f"Done in {time.perf_counter() - start:.1f} s.")


def _external_scores(path: Path, test: Any) -> Any:
    """Scores of the test queries from a file, keyed by query id, query text or row."""
    from racer.routers import make_router

    if not path.exists():
        raise UserError(f"The scores file {str(path)!r} does not exist.")
    names = list(test.model_names)
    router = make_router("external", source=path).fit(None, test.labels, model_names=names)
    if router.keys_ is None:
        keys = [str(i) for i in range(test.n_queries)]
    elif all(key in router.row_of_ for key in test.query_ids):
        keys = list(test.query_ids)
    else:
        keys = list(test.queries)
    try:
        return router.predict_proba(keys)
    except KeyError as error:
        raise UserError(error.args[0]) from None


@app.command()
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
    family: Annotated[str, typer.Option(help="threshold, cumulative or cost.")] = "threshold",
    guarantee: Annotated[
        str, typer.Option(help="pac (P(risk <= alpha) >= 1 - delta) or expectation (CRC).")
    ] = "pac",
    abstention: Annotated[
        bool, typer.Option(help="Allow the empty set (abstain) when no model looks good.")
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an artifact already in --out.")] = False,
    objective: ObjectiveOption = None,
    reference: ReferenceOption = None,
    fwer: FwerOption = "fixed_sequence",
) -> None:
    """Fit a base router and calibrate RACER on held-out data; save both as an artifact."""
    from racer.artifact import save_artifact
    from racer.estimator import RACER
    from racer.evaluation.certified import certify_for_artifact
    from racer.evaluation.task import align_models
    from racer.routers import make_router

    with _user_errors():
        train_data = _load(train, "train", {})
        cal_data = align_models(train_data, _load(calibration, "calibration", {}))
        with _progress("Training the base router") as step:
            step(router)
            base = make_router(router).fit(
                list(train_data.queries),
                train_data.labels,
                model_names=list(train_data.model_names),
            )
            cal_scores = base.predict_proba(list(cal_data.queries))
        prices = cal_data.mean_costs() if family == "cost" else None
        estimator = RACER(
            alpha,
            delta,
            bound=bound,
            family=family,
            guarantee=guarantee,
            abstention=abstention,
            costs=prices,
        )
        with _warnings_as_notes("calibration"):
            estimator.fit(cal_scores, cal_data.labels, model_names=list(cal_data.model_names))
        policy = certify_for_artifact(
            objective, reference, train_data, cal_data, alpha=alpha, delta=delta, method=fwer
        )
        save_artifact(
            out, base, estimator, calibration=cal_data, overwrite=overwrite, policy=policy
        )
    if policy is not None:
        Console().print(f"Answer-level policy: {policy['summary']}", highlight=False)
    Console().print(
        f"Calibrated on {estimator.n_calibration_} queries: lambda = {estimator.threshold_:.4f}, "
        f"empirical risk {estimator.empirical_risk_:.4f}, {estimator.bound_} bound "
        f"{estimator.risk_bound_:.4f} <= alpha = {alpha:g}.\nArtifact: {out}"
    )


def _read_queries(source: str) -> list[str]:
    text = sys.stdin.read() if source == "-" else _read_file(Path(source))
    queries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"Line {number} is not valid JSON: {error}.") from None
            if not isinstance(record.get("query"), str):
                raise UserError(f'Line {number}: a JSON line needs a string field "query".')
            queries.append(record["query"])
        else:
            queries.append(line)
    if not queries:
        raise UserError("No queries to route: the input is empty.")
    return queries


def _read_file(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"The input file {str(path)!r} does not exist.")
    return path.read_text(encoding="utf-8")


@app.command()
def route(
    artifact: Annotated[Path, typer.Option(help="Artifact folder written by racer calibrate.")],
    input: Annotated[
        str,
        typer.Option(
            "--input",
            help='Queries: a file, or - for stdin; one query per line, or JSONL {"query": ...}.',
        ),
    ] = "-",
    output: Annotated[str, typer.Option(help="JSONL file to write, or - for stdout.")] = "-",
) -> None:
    """Choose the set of models for each query with a saved artifact; write JSONL."""
    with _user_errors():
        if not artifact.is_dir():
            raise UserError(f"The artifact folder {str(artifact)!r} does not exist.")
        from racer.artifact import load_artifact

        queries = _read_queries(input)
        loaded = load_artifact(artifact)
        scores = loaded.predict_proba(queries)
        sets = loaded.predict_sets(queries, scores=scores)
        names = loaded.model_names
        lines = [
            json.dumps(
                {
                    "query": query,
                    "models": [names[j] for j in row.nonzero()[0]],
                    "abstain": not row.any(),
                    "scores": {names[j]: round(float(s), 6) for j, s in enumerate(score_row)},
                }
            )
            for query, row, score_row in zip(queries, sets, scores, strict=True)
        ]
        text = "\n".join(lines) + "\n"
        if output == "-":
            sys.stdout.write(text)
        else:
            Path(output).write_text(text, encoding="utf-8")
            console.print(f"Routed {len(queries)} queries -> {output}")


def _register_gateway_commands() -> None:
    """``racer serve`` and ``racer replay-server`` live with the gateway (racer.serve)."""
    try:
        from racer.serve.cli import register
    except ImportError:
        return
    register(app)


_register_gateway_commands()
