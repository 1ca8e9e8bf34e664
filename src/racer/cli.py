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

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from racer.version import __version__

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
console = Console(stderr=True)
#: Set by --quiet: no progress and no notes on stderr (errors still show).
_QUIET = {"on": False}

KINDS = ("auto", "choice", "pass_fraction")
ABSTENTION_CHOICES = ("flag", "strict", "off")
MISSING = ("keep", "drop_queries")


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
    except (
        UserError,
        ValueError,
        FileNotFoundError,
        FileExistsError,
        InfeasibleCalibrationError,
    ) as error:
        console.print(f"[bold red]Error:[/] {_one_line(error)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (IsADirectoryError, NotADirectoryError, PermissionError) as error:
        where = f" {error.filename!r}" if error.filename else ""
        console.print(
            f"[bold red]Error:[/] cannot use{where}: {error.strerror}. Choose another path.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None


def _one_line(error: BaseException) -> str:
    """The message on one line, with the library's Python advice in command-line words."""
    text = " ".join(str(error).split())
    for python, option in (
        ("overwrite=True", "--overwrite"),
        ("kind='choice' or kind='pass_fraction'", "--kind choice or --kind pass_fraction"),
        ("missing='drop_queries'", "--missing drop_queries"),
        ("abstention='strict'", "--abstention strict"),
        ("abstention='flag'", "--abstention flag"),
    ):
        text = text.replace(python, option)
    return text


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
def _progress(title: str) -> Iterator[Callable[..., None]]:
    """A progress line on a terminal (percentage and time left when steps are counted);
    nothing at all when stderr is not a terminal or with --quiet."""
    if _QUIET["on"] or not console.is_terminal:
        yield lambda message, done=None, total=None: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title, total=None)

        def step(message: str, done: int | None = None, total: int | None = None) -> None:
            progress.update(task, description=f"{title}: {message}", completed=done, total=total)

        yield step


def _note(text: str) -> None:
    if not _QUIET["on"]:
        console.print(text, highlight=False, soft_wrap=True)


@contextmanager
def _warnings_as_notes(what: str) -> Iterator[None]:
    """Show the library's warnings as short notes instead of Python warning lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        _note(f"[yellow]Note ({what}):[/] {_one_line(warning.message)}")


def _load(paths: list[Path], what: str, options: dict[str, Any]) -> Any:
    from racer.data.load import load_dataset

    for path in paths:
        if not path.exists():
            raise UserError(f"The {what} path {str(path)!r} does not exist.")
    reader_options = {k: v for k, v in options.items() if k != "missing"}
    with _warnings_as_notes(f"{what} data"):
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


def _data_options(kind: str, pass_threshold: float | None, missing: str) -> dict[str, Any]:
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


def _without_leakage(train: Any, held_out: Any, what: str) -> Any:
    """``train`` without the queries it shares with ``held_out`` (same id or text).

    A query in both inflates every figure (the router has seen it): such queries are
    removed from the training data with a note; when nothing would be left, refused.
    """
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
    _note(
        f"[yellow]Note (leakage):[/] removed {count} of {train.n_queries} training queries "
        f"that are also in the {what} data (same id or text){hint}; the base router is "
        f"trained on the other {train.n_queries - count}."
    )
    return train.subset(np.flatnonzero(~shared))


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
    from racer.evaluation.report import verdict

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
        typer.echo(json.dumps(_json_safe(document)))
    elif _QUIET["on"]:
        typer.echo(str(paths["report"]))
    else:
        _print_summary(evaluation, paths)
    _note(f"Done in {time.perf_counter() - start:.1f} s.")


def _json_safe(value: Any) -> Any:
    from racer.evaluation.report import json_safe as _clean

    return _clean(value)


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
OverwriteOption = Annotated[
    bool, typer.Option(help="Replace the report or artifact already in --out.")
]
OutOption = Annotated[
    Path, typer.Option(help="Folder for report.md, results.json and figures.")
]


@app.command()
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
    from racer.evaluation.synthetic import (
        SYNTHETIC_NOTICE,
        answer_level_story,
        make_synthetic_benchmark,
    )
    from racer.evaluation.task import evaluate_task, router_scores, write_task_report

    _QUIET["on"] = quiet or as_json
    with _user_errors():
        if queries < 200:
            raise UserError(f"--queries must be at least 200 for a meaningful demo; got {queries}.")
        settings = _settings(alpha, delta, trials, 0.5, DEFAULT_FAMILIES, DEFAULT_BOUNDS, seed)
        _check_out_folder(out, overwrite, "report.md")
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
    _finish_evaluation(evaluation, paths, start, as_json)


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
    from racer.evaluation.task import (
        align_models,
        check_pool_size,
        evaluate_task,
        router_scores,
        write_task_report,
    )

    _QUIET["on"] = quiet or as_json
    with _user_errors():
        check_objective_options(objective, reference, fwer)
        if not test:
            raise UserError("Give the test data with --test PATH.")
        if scores is None and not train:
            raise UserError("Give --train PATH to fit the base router, or --scores FILE.")
        if scores is None and router == "external":
            raise UserError("The external router reads a file: pass it as --scores FILE.")
        settings = _settings(alpha, delta, trials, calibration_fraction, families, bounds, seed)
        options = _data_options(kind, pass_threshold, missing)
        _check_out_folder(out, overwrite, "report.md")
        test_data = _load(test, "test", options)
        check_pool_size(test_data, settings)
        train_data = _load(train, "train", options) if train else None
        if train_data is not None:
            test_data = align_models(train_data, test_data)
            train_data = _without_leakage(train_data, test_data, "test")
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
            f"{names}: {_one_line(error)}"
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


def _check_artifact_out(out: Path, overwrite: bool) -> None:
    from racer.artifact import METADATA_FILE

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; choose a folder path for the artifact.")
    if (out / METADATA_FILE).exists() and not overwrite:
        raise UserError(
            f"--out {str(out)!r} already holds an artifact; pass --overwrite to replace it, "
            "or choose another --out."
        )


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
    from racer.artifact import save_artifact
    from racer.estimator import RACER
    from racer.evaluation.certified import certify_for_artifact
    from racer.evaluation.task import align_models
    from racer.routers import make_router

    _QUIET["on"] = quiet or as_json
    with _user_errors():
        if not 0.0 < alpha < 1.0:
            raise UserError(f"--alpha must lie strictly between 0 and 1; got {alpha}.")
        if not 0.0 < delta < 1.0:
            raise UserError(f"--delta must lie strictly between 0 and 1; got {delta}.")
        if abstention not in ABSTENTION_CHOICES:
            raise UserError(
                f"--abstention takes one of {list(ABSTENTION_CHOICES)}; got {abstention!r}."
            )
        _check_artifact_out(out, overwrite)
        options = _data_options(kind, pass_threshold, missing)
        train_data = _load(train, "train", options)
        cal_data = align_models(train_data, _load(calibration, "calibration", options))
        train_data = _without_leakage(train_data, cal_data, "calibration")
        prices = None
        if family == "cost":
            prices = train_data.mean_costs()
            if prices is None or not np.isfinite(prices).all():
                raise UserError(
                    "--family cost needs per-model prices in the --train data (for example "
                    "RouterBench's <model>|total_cost columns, or a cost column in a table); "
                    f"{train_data.name} has none for every model. Use --family threshold."
                )
        with _progress("Training the base router") as step:
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
        with _warnings_as_notes("calibration"):
            estimator.fit(cal_scores, cal_data.labels, model_names=list(cal_data.model_names))
        policy = certify_for_artifact(
            objective, reference, train_data, cal_data, alpha=alpha, delta=delta, method=fwer
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
        str,
        typer.Option(
            "--input",
            help='Queries: a file, or - for stdin; one query per line, or JSONL {"query": ...}. '
            "Output line i answers input line i; a blank line gets a record with "
            '"skipped": "blank line".',
        ),
    ] = "-",
    output: Annotated[str, typer.Option(help="JSONL file to write, or - for stdout.")] = "-",
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Write one JSON document (a list of records), not JSONL."),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Route plain-text queries with a saved artifact; write JSONL (racer.cli_batch.route)."""
    _QUIET["on"] = quiet
    with _user_errors():
        if not artifact.is_dir():
            raise UserError(f"The artifact folder {str(artifact)!r} does not exist.")
        from racer.artifact import load_artifact

        lines = _read_queries(input)
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
            _note(f"Routed {len(queries)} queries -> {output}")


def _register_gateway_commands() -> None:
    """``racer serve`` and ``racer replay-server`` live with the gateway (racer.serve)."""
    try:
        from racer.serve.cli import register
    except ImportError:
        return
    register(app)


def _register_batch_commands() -> None:
    """``racer route`` (plain text goes to :func:`route`) and ``racer replay``: racer.cli_batch."""
    from racer.cli_batch import register

    register(app)


_register_gateway_commands()
__import__("racer.cli_data", fromlist=["register"]).register(app)  # collect, grade, dataset
_register_batch_commands()


if __name__ == "__main__":
    app()
