"""``racer evaluate`` and ``racer demo``: RACER and the baselines over split trials, a report.

Parsing and printing only; the work is in :mod:`racer.evaluation`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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
    is_quiet,
    load_data,
    note,
    one_line,
    progress,
    set_quiet,
    user_errors,
    without_leakage,
)

DEFAULT_ALPHAS = "0.05,0.1,0.2"
DEFAULT_BOUNDS = "binomial,hb,hoeffding"
DEFAULT_FAMILIES = "threshold,cumulative,cost"

AlphaOption = Annotated[
    str, typer.Option("--alpha", help="Target risk levels, comma-separated, each in (0, 1).")
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
SeedOption = Annotated[int, typer.Option(help="Seed of the trials (and of the demo data).")]
OverwriteOption = Annotated[
    bool, typer.Option(help="Replace the report or artifact already in --out.")
]
OutOption = Annotated[
    Path, typer.Option(help="Folder for report.md, results.json and figures.")
]


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


def _check_out_folder(out: Path, overwrite: bool, marker: str) -> None:
    """Refuse an --out that is a file, or a folder holding ``marker`` without --overwrite,
    before any work is done."""
    if out.exists() and not out.is_dir():
        raise UserError(
            f"--out {str(out)!r} is a file, not a folder; choose a folder path with --out."
        )
    if (out / marker).exists() and not overwrite:
        raise UserError(
            f"--out {str(out)!r} already holds {marker} from an earlier run; pass --overwrite "
            "to replace it, or choose another --out."
        )


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


def _summary_rows(evaluation: Any) -> list[dict[str, Any]]:
    from racer.evaluation.report import headline_methods

    rows = []
    for alpha in evaluation.settings.alphas:
        for name in (*headline_methods(evaluation), "uncorrected threshold"):
            rows.append(evaluation.record(name, alpha))
    return rows


def _print_summary(evaluation: Any, paths: dict[str, Any]) -> None:
    from racer.evaluation.report import format_cost, monte_carlo_limit, verdict

    unit = evaluation.cost_unit
    dollars = unit == "USD"
    title = f"{evaluation.task}: means over {evaluation.plan.n_trials} trials"
    if not dollars:
        title += " (cost = set size: model calls per query)"
    table = Table(title=title)
    columns = ["alpha", "method", "risk", "violations", "refused", "size"]
    columns += ["cost (USD)"] if dollars else []
    for column in (*columns, "accuracy"):
        table.add_column(column, justify="left" if column == "method" else "right")
    limit = monte_carlo_limit(evaluation.settings.delta, evaluation.plan.n_trials)
    never = []
    for r in _summary_rows(evaluation):
        refused = r["infeasible_rate"] >= 1.0
        violation = "-" if refused else f"{r['violation_rate']:.3f}"
        if r["group"] == "racer" and not refused:
            violation = f"[{'green' if r['violation_rate'] <= limit else 'red'}]{violation}[/]"
        if r["group"] == "racer" and refused:
            never.append(r["alpha"])
        cells = [
            f"{r['alpha']:g}",
            r["method"],
            "-" if refused else f"{r['risk']:.3f}",
            violation,
            f"{r['infeasible_rate']:.2f}",
            "-" if refused else f"{r['mean_set_size']:.2f}",
        ]
        cells += [format_cost(r["mean_cost"], unit)] if dollars else []
        table.add_row(*cells, "-" if refused else f"{r['accuracy']:.3f}")
    Console().print(table)
    if never:
        Console().print(
            f"[bold yellow]Warning:[/] RACER could not certify alpha = "
            f"{', '.join(f'{a:g}' for a in never)} in any trial: {evaluation.plan.n_cal} "
            "calibration queries are too few (see racer.minimum_calibration_size). Pass more "
            "test data, a larger --calibration-fraction or a larger --alpha.",
            highlight=False,
        )
    found = verdict(evaluation)
    total = len(found["per_alpha"])
    Console().print(
        f"Against the best single model, {found['method']} is more accurate at "
        f"{found['more_accurate_at']} of {total} alphas and cheaper at {found['cheaper_at']} "
        f"of {total}."
    )
    match = paths.get("match")
    if match and match["cheapest"]:
        best = match["cheapest"]
        Console().print(
            f"Cheapest RACER configuration matching {match['reference']['model']}: "
            f"{best['method']}, alpha={best['alpha']:g}, {best['aggregator']} -> accuracy "
            f"{best['accuracy']:.3f} vs {match['reference']['accuracy']:.3f}, cost "
            f"{100 * best['cost_share']:.1f} % of the reference."
        )
    if paths.get("figures_note"):
        Console().print(f"[yellow]No figures:[/] {paths['figures_note']}", highlight=False)
    Console().print(f"Report: {paths['report']}\nResults: {paths['results']}")


def _finish_evaluation(
    evaluation: Any, paths: dict[str, Any], start: float, as_json: bool
) -> None:
    """Print the summary table (or one JSON document with --json) and the time."""
    from racer.evaluation.report import json_safe, verdict

    if as_json:
        document = {
            "task": evaluation.task,
            "report": str(paths["report"]),
            "results": str(paths["results"]),
            "figures": [str(p) for p in paths["figures"]],
            "figures_note": paths.get("figures_note"),
            "verdict": verdict(evaluation),
            "summary": _summary_rows(evaluation),
        }
        typer.echo(json.dumps(json_safe(document)))
    elif is_quiet():
        typer.echo(str(paths["report"]))
    else:
        _print_summary(evaluation, paths)
    note(f"Done in {time.perf_counter() - start:.1f} s.")


def demo(
    out: OutOption = Path("racer-out"),
    queries: Annotated[int, typer.Option(help="Synthetic queries (half train, half test).")] = 4000,
    router: RouterOption = "logistic",
    alpha: AlphaOption = DEFAULT_ALPHAS,
    delta: DeltaOption = 0.1,
    trials: TrialsOption = 200,
    seed: SeedOption = 0,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run the whole pipeline on a SYNTHETIC benchmark and write the report.

    Generates a clearly labelled synthetic routing benchmark (six models with different
    per-topic skills and prices, queries of varying difficulty, some no model solves,
    multiple-choice responses), trains a base router on half of it, then calibrates and
    evaluates RACER and the baselines on the other half. Figures need the "plots" extra
    (pip install "racer-routing[plots]"); without it the report says so and has none.
    """
    from racer.data.split import train_test_split
    from racer.evaluation.scoring import router_scores
    from racer.evaluation.synthetic import (
        SYNTHETIC_NOTICE,
        answer_level_story,
        make_synthetic_benchmark,
    )
    from racer.evaluation.task import evaluate_task, write_task_report

    set_quiet(quiet or as_json)
    with user_errors():
        if queries < 200:
            raise UserError(f"--queries must be at least 200 for a meaningful demo; got {queries}.")
        settings = _settings(alpha, delta, trials, 0.5, DEFAULT_FAMILIES, DEFAULT_BOUNDS, seed)
        _check_out_folder(out, overwrite, "report.md")
        start = time.perf_counter()
        data = make_synthetic_benchmark(queries, random_state=seed)
        train, test = train_test_split(data, 0.5, random_state=seed)
        with progress("Training the base router") as step:
            step(router)
            scores = router_scores(router, train, test)
        with progress("Evaluating") as step:
            evaluation = evaluate_task(test, scores, settings, train=train, progress=step)
            step("certified answer-level policies (synthetic story tasks)")
            certified = answer_level_story(delta=delta, n_trials=trials, random_state=seed)
        header = [
            f"**{SYNTHETIC_NOTICE}.** {data.n_models} made-up models, {data.n_queries} "
            f"made-up queries; base router: {router}, trained on {train.n_queries} of them.",
            "",
        ]
        paths = write_task_report(evaluation, out, header=header, certified=certified)
    _finish_evaluation(evaluation, paths, start, as_json)


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
    kind: KindOption = "auto",
    pass_threshold: PassThresholdOption = None,
    missing: MissingOption = "keep",
    name: Annotated[str | None, typer.Option(help="Task name in the report.")] = None,
    seed: SeedOption = 0,
    out: OutOption = Path("racer-out"),
    objective: ObjectiveOption = None,
    reference: ReferenceOption = None,
    fwer: FwerOption = "fixed_sequence",
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Evaluate RACER and the baselines on routing data; write a report and figures.

    Trains the base router on --train (or reads --scores), then over --trials random
    calibration/test splits of --test compares RACER (each bound and family) with the
    top-1 router, fixed top-k, all models, the best single model, split conformal,
    conformal risk control and the uncorrected threshold. The violation rate comes from
    the exact validity check: calibrate on an i.i.d. resample of the test pool, measure
    the risk on the whole pool. Training queries that are also in --test are removed
    from training (leakage). The cost family's per-model prices come from --train.
    """
    from racer.evaluation.certified import check_objective_options
    from racer.evaluation.certified_trials import records_for_evaluation
    from racer.evaluation.scoring import router_scores
    from racer.evaluation.task import (
        align_models,
        check_pool_size,
        evaluate_task,
        write_task_report,
    )

    set_quiet(quiet or as_json)
    with user_errors():
        check_objective_options(objective, reference, fwer)
        if not test:
            raise UserError("Give the test data with --test PATH.")
        if scores is None and not train:
            raise UserError("Give --train PATH to fit the base router, or --scores FILE.")
        if scores is None and router == "external":
            raise UserError("The external router reads a file: pass it as --scores FILE.")
        settings = _settings(alpha, delta, trials, calibration_fraction, families, bounds, seed)
        options = data_options(kind, pass_threshold, missing)
        _check_out_folder(out, overwrite, "report.md")
        test_data = load_data(test, "test", options)
        check_pool_size(test_data, settings)
        train_data = load_data(train, "train", options) if train else None
        if train_data is not None:
            test_data = align_models(train_data, test_data)
            train_data = without_leakage(train_data, test_data, "test")
        start = time.perf_counter()
        if scores is not None:
            test_scores = _external_scores(scores, test_data)
            source = f"external scores from {scores}"
        else:
            with progress("Training the base router") as step:
                step(f"{router} on {train_data.n_queries} queries")
                test_scores = router_scores(router, train_data, test_data)
            source = (
                f"base router {router}, trained on {train_data.name} "
                f"({train_data.n_queries} queries)"
            )
        with progress("Evaluating") as step:
            evaluation = evaluate_task(
                test_data, test_scores, settings, train=train_data, task=name, progress=step
            )
        certified = records_for_evaluation(
            objective, reference, train_data, test_data, alphas=settings.alphas, delta=delta,
            n_trials=trials, calibration_fraction=calibration_fraction, seed=seed, method=fwer,
            router=None if scores is not None else router,
        )
        header = [f"Test data: {test_data.name}; {source}.", ""]
        paths = write_task_report(
            evaluation, out, header=header, match_model=match_model, certified=certified
        )
    _finish_evaluation(evaluation, paths, start, as_json)


def _external_scores(path: Path, test: Any) -> Any:
    """Scores of the test queries from a file, keyed by query id, query text or row."""
    from racer.routers import make_router

    if not path.exists():
        raise UserError(f"The scores file {str(path)!r} does not exist.")
    names = list(test.model_names)
    try:
        router = make_router("external", source=path).fit(None, test.labels, model_names=names)
    except ValueError as error:
        raise UserError(
            f"--scores {str(path)!r} does not fit the test data's {len(names)} models "
            f"{names}: {one_line(error)}"
        ) from None
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
