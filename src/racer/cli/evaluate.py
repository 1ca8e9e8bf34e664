"""``racer evaluate`` and ``racer demo``: RACER and the baselines over split trials, a report.

Parsing and printing only; the work is in :mod:`racer.evaluation`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

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
    is_quiet,
    learned_stop_of,
    load_data,
    note,
    one_line,
    progress,
    results_console,
    set_quiet,
    user_errors,
    without_leakage,
)
from racer.cli.groups import (
    GroupByOption,
    GroupClassifierOption,
    GroupGuaranteeOption,
    SmallGroupsOption,
    check_group_options,
    check_group_paths,
    data_groups,
    fit_group_classifier,
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
SeedOption = Annotated[int, typer.Option(help="Seed of the random calibration/test splits.")]
DemoSeedOption = Annotated[
    int, typer.Option(help="Seed of the synthetic data, its train/test split and the trials.")
]
OverwriteOption = Annotated[
    bool, typer.Option(help="Replace the report or artifact already in --out.")
]
OutOption = Annotated[
    Path, typer.Option(help="Folder for report.md, results.json and figures.")
]
AbstentionModesOption = Annotated[
    str,
    typer.Option(
        "--abstention",
        help="Abstention modes to compare side by side, comma-separated: flag, strict, off. "
        "Each reports its risk, refusal rate, queries without a right answer, flag rate and "
        "flag precision (and per-group risk with --group-by).",
    ),
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


def _print_policy(policy: dict, limit: float) -> None:
    """The certified answer-level policy per alpha, one table per task: the headline."""
    short = {"regret": "<= {:g} pts", "error": "error <= {:g}", "set": "risk <= {:g}"}
    tasks: dict[str, list[dict]] = {}
    for row in policy["per_alpha"]:
        tasks.setdefault(row["task"] or "", []).append(row)
    for task, rows in tasks.items():
        reference = rows[0]["reference"]
        with_top1 = any(row["top1_accuracy"] is not None for row in rows)
        table = Table(
            title=f"{task + ': ' if task else ''}certified answer-level policy, "
            f"{policy['objective']} against {reference} (the answer served, "
            f"{policy['trials']} validity trials)"
        )
        columns = ["alpha", "certified", "accuracy", "reference", *(["top-1"] if with_top1 else [])]
        for column in (*columns, "cost share", "violations"):
            table.add_column(column, justify="right")
        for row in rows:
            color = "green" if row["violation_rate"] <= limit else "red"
            bound = 100 * row["alpha"] if policy["objective"] == "regret" else row["alpha"]
            table.add_row(
                f"{row['alpha']:g}",
                short[policy["objective"]].format(bound),
                f"{row['accuracy']:.3f}",
                f"{row['reference_accuracy']:.3f}",
                *([f"{row['top1_accuracy']:.3f}"] if with_top1 else []),
                f"{100 * row['cost_share']:.0f} %",
                f"[{color}]{row['violation_rate']:.3f}[/]",
            )
        results_console().print(table)
        served: dict[str, list[str]] = {}
        for row in rows:
            what = (
                row["policy"]
                if row["serve"] == "certified policy"
                else f"{reference} itself (no saving certified in most trials)"
            )
            served.setdefault(what, []).append(f"{row['alpha']:g}")
        for what, alphas in served.items():
            results_console().print(f"  alpha {', '.join(alphas)}: serve: {what}", highlight=False)


def _top1_line(rows: list[dict[str, Any]]) -> str:
    """The sets' served accuracy against the top-1 router, per alpha, in one line."""
    parts = []
    for row in rows:
        if not all(math.isfinite(row[key] or math.nan) for key in ("accuracy", "top1_accuracy")):
            continue
        part = f"alpha {row['alpha']:g} {row['accuracy']:.3f} vs {row['top1_accuracy']:.3f}"
        if row["cannot_beat_top1"]:
            part += " (cannot beat top-1: best-in-set serves its answer)"
        parts.append(part)
    return (
        "Served accuracy of the sets against the base router's top-1 on the same test queries: "
        + "; ".join(parts)
        + "."
    )


def _print_summary(evaluation: Any, paths: dict[str, Any]) -> None:
    from racer.evaluation.report import format_cost, monte_carlo_limit

    unit = evaluation.cost_unit
    dollars = unit == "USD"
    found = paths["verdict"]
    limit = monte_carlo_limit(evaluation.settings.delta, evaluation.plan.n_trials)
    if found["policy"] is not None:
        _print_policy(found["policy"], limit)
    title = f"{evaluation.task}, calibrated sets: means over {evaluation.plan.n_trials} trials"
    if not dollars:
        title += " (cost = set size: model calls per query)"
    table = Table(title=title)
    columns = ["alpha", "method", "risk", "violations", "refused", "size"]
    columns += ["cost (USD)"] if dollars else []
    for column in (*columns, "accuracy"):
        table.add_column(column, justify="left" if column == "method" else "right")
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
    results_console().print(table)
    if never:
        results_console().print(
            f"[bold yellow]Warning:[/] RACER could not certify alpha = "
            f"{', '.join(f'{a:g}' for a in never)} in any trial: {evaluation.plan.n_cal} "
            "calibration queries are too few (see racer.minimum_calibration_size). Pass more "
            "test data, a larger --calibration-fraction or a larger --alpha.",
            highlight=False,
        )
    total = len(found["per_alpha"])
    results_console().print(
        f"Against the best single model, the sets of {found['method']} are more accurate at "
        f"{found['more_accurate_at']} of {total} alphas and cheaper at {found['cheaper_at']} "
        f"of {total}.",
        highlight=False,
    )
    results_console().print(_top1_line(found["per_alpha"]), highlight=False)
    results_console().print(f"[bold]Serve the {found['serve']}.[/] {found['why']}", highlight=False)
    _print_slices(evaluation)
    match = paths.get("match")
    if match and match["cheapest"]:
        best = match["cheapest"]
        results_console().print(
            f"Cheapest RACER configuration matching {match['reference']['model']}: "
            f"{best['method']}, alpha={best['alpha']:g}, {best['aggregator']} -> accuracy "
            f"{best['accuracy']:.3f} vs {match['reference']['accuracy']:.3f}, cost "
            f"{100 * best['cost_share']:.1f} % of the reference."
        )
    if paths.get("figures_note"):
        results_console().print(
            f"[yellow]No figures:[/] {escape(paths['figures_note'])}", highlight=False
        )
    results_console().print(f"Report: {paths['report']}\nResults: {paths['results']}")


def _print_slices(evaluation: Any) -> None:
    """The abstention modes side by side, and every group above alpha named."""
    from racer.evaluation.slices_report import above_alpha_lines

    records = evaluation.slices
    if not records:
        return
    title = "What users receive, per abstention mode"
    if evaluation.group_by:
        title += f" and calibration (groups: {evaluation.group_by})"
    table = Table(title=f"{title}, {records[0]['trials']} split trials")
    columns = ["alpha", "mode", "calibration", "risk", "size", "refused", "no right answer"]
    for column in (*columns, "flagged", "flag precision"):
        table.add_column(column, justify="left" if column in ("mode", "calibration") else "right")
    for r in records:
        if r["risk"] is None:
            table.add_row(f"{r['alpha']:g}", r["mode"], r["calibration"], *["-"] * 6)
            continue
        precision = r["flag_precision"]
        table.add_row(
            f"{r['alpha']:g}",
            r["mode"],
            r["calibration"],
            f"{r['risk']:.3f}",
            f"{r['mean_set_size']:.2f}",
            f"{r['refusal_rate']:.3f}",
            f"{r['without_right_answer']:.3f}",
            f"{r['flag_rate']:.3f}",
            "-" if precision != precision else f"{precision:.3f}",
        )
    results_console().print(table)
    for line in above_alpha_lines(records):
        results_console().print(f"[bold yellow]Above alpha:[/] {line}.", highlight=False)


def _finish_evaluation(
    evaluation: Any, paths: dict[str, Any], start: float, as_json: bool
) -> None:
    """Print the summary table (or one JSON document with --json) and the time."""
    from racer.evaluation.report import json_safe

    if as_json:
        document = {
            "task": evaluation.task,
            "report": str(paths["report"]),
            "results": str(paths["results"]),
            "figures": [str(p) for p in paths["figures"]],
            "figures_note": paths.get("figures_note"),
            "verdict": paths["verdict"],
            "summary": _summary_rows(evaluation),
            "slices": evaluation.slices,
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
    router: RouterOption = DEFAULT_ROUTER,
    alpha: AlphaOption = DEFAULT_ALPHAS,
    delta: DeltaOption = 0.1,
    trials: TrialsOption = 200,
    seed: DemoSeedOption = 0,
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
        if router == "external":
            raise UserError(
                "racer demo trains its base router on made-up queries, and no external "
                "router has scores for them: choose another --router (default "
                f"{DEFAULT_ROUTER}), or run racer evaluate --scores FILE on your data."
            )
        check_router_option(router, None, [Path("synthetic")])
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
    router: RouterOption = DEFAULT_ROUTER,
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
    agreement: AgreementOption = "char",
    stop_rule: StopRuleOption = "auto",
    abstention: AbstentionModesOption = "flag",
    group_by: GroupByOption = None,
    group_classifier: GroupClassifierOption = False,
    group_guarantee: GroupGuaranteeOption = "each",
    small_groups: SmallGroupsOption = "raise",
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

    The --abstention modes are compared side by side (served rates), and with --group-by
    each group's risk is shown under the marginal certificate and under per-group
    certificates, naming every group above alpha. Strict mode tests along a front built
    on the training split's cross-fitted scores.
    """
    from racer.evaluation.certified import check_objective_options, model_index
    from racer.evaluation.certified_trials import records_for_evaluation
    from racer.evaluation.scoring import cross_fitted_scores, router_scores
    from racer.evaluation.slices import ABSTENTION_MODES, SliceSettings
    from racer.evaluation.task import (
        align_models,
        check_pool_size,
        evaluate_task,
        write_task_report,
    )
    from racer.similarity import free_text_kind

    set_quiet(quiet or as_json)
    with user_errors():
        check_objective_options(objective, reference, fwer)
        if objective is not None:
            free_text_kind(agreement)  # a wrong name, or dense without the extra
        learned_stop = learned_stop_of(stop_rule)
        if not test:
            raise UserError("Give the test data with --test PATH.")
        settings = _settings(alpha, delta, trials, calibration_fraction, families, bounds, seed)
        modes = _names(abstention, "--abstention", ABSTENTION_MODES)
        check_group_options(group_by, group_classifier, group_guarantee, small_groups)
        check_group_paths(group_by, test, "--test")
        check_group_paths(group_by if group_classifier else None, train, "--train")
        if group_classifier and not train:
            raise UserError("--group-classifier is trained on --train; give --train PATH.")
        check_router_option(router, scores, train)  # reads the file system: after the options
        slices = SliceSettings(
            modes=modes,
            group_by=group_by + " (classifier)" if group_classifier and group_by else group_by,
            group_guarantee=group_guarantee,
            small_groups=small_groups,
        )
        options = data_options(kind, pass_threshold, missing)
        _check_out_folder(out, overwrite, "report.md")
        test_data = load_data(test, "test", options)
        check_pool_size(test_data, settings)
        train_data = load_data(train, "train", options) if train else None
        if train_data is not None:
            test_data = align_models(train_data, test_data)
            train_data = without_leakage(train_data, test_data, "test")
        if reference is not None:
            model_index(test_data.model_names, reference)
        if objective is not None and train_data is None:
            raise UserError(
                f"--objective {objective} plans its policies on the --train data; give --train."
            )
        start = time.perf_counter()
        train_scores = None
        if scores is not None:
            test_scores = _external_scores(scores, test_data)
            source = f"external scores from {scores}"
        else:
            with progress("Training the base router") as step:
                step(f"{router} on {train_data.n_queries} queries")
                if "strict" in modes:  # strict mode's front, from out-of-fold training scores
                    train_scores, test_scores = cross_fitted_scores(router, train_data, test_data)
                else:
                    test_scores = router_scores(router, train_data, test_data)
            source = (
                f"base router {router}, trained on {train_data.name} "
                f"({train_data.n_queries} queries)"
            )
        groups = None
        if group_classifier:
            with progress("Training the group classifier") as step:
                step(f"{group_by} of {train_data.n_queries} training queries")
                groups = fit_group_classifier(train_data).predict(list(test_data.queries))
        elif group_by is not None:
            groups = data_groups(test_data)
        with progress("Evaluating") as step:
            evaluation = evaluate_task(
                test_data,
                test_scores,
                settings,
                train=train_data,
                task=name,
                progress=step,
                slices=slices,
                groups=groups,
                train_scores=train_scores,
            )
        certified = records_for_evaluation(
            objective, reference, train_data, test_data, alphas=settings.alphas, delta=delta,
            n_trials=trials, calibration_fraction=calibration_fraction, seed=seed, method=fwer,
            router=None if scores is not None else router, agreement=agreement,
            learned_stop=learned_stop,
        )
        header = [f"Test data: {test_data.name}; {source}.", ""]
        paths = write_task_report(
            evaluation, out, header=header, match_model=match_model, certified=certified
        )
    _finish_evaluation(evaluation, paths, start, as_json)


def _external_scores(path: Path, test: Any) -> Any:
    """Scores of the test queries from a file, keyed by query id, query text or row."""
    from racer.routers.external import fit_external_scores

    try:
        return fit_external_scores(path, test.model_names, test.query_ids, test.queries)[1]
    except ValueError as error:
        raise UserError(
            f"--scores {str(path)!r} does not fit the test data's {test.n_models} models "
            f"{list(test.model_names)}: {one_line(error)}"
        ) from None
