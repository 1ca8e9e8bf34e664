"""Calibration speed: RACER's exact sort-based fit against a grid scan and MAPIE.

Run it through ``benchmarks/run_calibration_speed.sh``, which creates the benchmark's own
virtualenv (``benchmarks/.venv-mapie``, with MAPIE and this repository) and runs this
script there. Without MAPIE importable the MAPIE rows are skipped with a note.

On the same synthetic data (n queries, M models, alpha = delta = 0.1, threshold family
with abstention, exact binomial bound) and in the same run, it times:

1. ``RACER(alpha, delta, refusals=True, refusal_cost=0).fit(scores, labels)``: one sort of the loss
   breakpoints, on the family the grid scan and MAPIE calibrate (the abstain option may
   stand alone). Also ``predict`` throughput in (query, model) scores per second.
   Beside it, a sort-only numpy reference (entry levels, each point's breakpoint, one
   sort: the least work of any exact fit), the same RACER fit again, RACER's default fit
   (never an empty set) and a fit with 4 groups, timed in turns (runs "5 rr": round robin,
   so that a shared machine's changing load weighs on all four alike); the
   fit-to-reference ratios are printed at the end (target 1.3x).
2. A straightforward grid implementation: for each of K lambdas build the (n, M + 1)
   sets, count the misrouted points, take the Clopper-Pearson bound (scipy beta ppf),
   then scan from the largest lambda down. That is n x (M + 1) x K work.
3. MAPIE's ``BinaryClassificationController`` (Learn-then-Test) on the same K lambdas,
   with the misrouting loss written as a custom ``BinaryRisk``: ``predict_function``
   returns the (n, M + 1) boolean set of a lambda, the labels are the (n, M + 1) "good
   candidate" matrix, and a point is a loss when its set holds no good candidate.
   MAPIE's binary p-value (Hoeffding / Bentkus without the factor e) is the exact
   binomial tail, so with fixed-sequence testing it certifies exactly what RACER
   certifies. The controller itself refuses fixed-sequence testing for a parameter
   given as a (K, 1) array, so it runs its default Bonferroni-Holm; the fixed-sequence
   choice is then read from the controller's own p-values with MAPIE's ``control_fwer``.

Each method runs once under ``tracemalloc`` (warm-up; its peak is the memory figure:
bytes allocated by Python and numpy during the call, inputs excluded), then ``--repeats``
more times untraced; the time is their median. A method whose warm-up takes longer than
``--slow-seconds`` is not repeated and reports the traced run. MAPIE runs at the sizes
whose predicted memory and time fit ``--mapie-max-gb`` and ``--mapie-max-seconds``, plus
the largest round size that fits; larger sizes are extrapolated linearly in n x K and
marked as such.

Targets (issue 2): fit with n = 1,000,000 and M = 11 under 0.5 s; predict at least 20
million scores per second. A missed target prints FAIL but does not change the exit code.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
from scipy import stats

from racer import RACER

FIT_TARGET_SECONDS = 0.5
PREDICT_TARGET_SCORES_PER_SECOND = 20e6
TARGET_N = 1_000_000
TARGET_MODELS = 11
MAPIE_BYTES_PER_CELL_GUESS = 9.0  # boolean sets, stacked and checked: ~9 bytes per (n, M+1, K)


def make_routing_data(
    n: int, n_models: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic router scores and 0/1 labels with a realistic spread of difficulty.

    Each query has a difficulty, each model a skill; a model answers well with
    probability ``sigmoid(skill - difficulty)`` and the router's score is that
    probability seen through logit noise.

    Returns
    -------
    scores, labels : numpy.ndarray, shape (n, n_models)
        Scores in [0, 1] and labels in {0.0, 1.0}.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.5, size=(n, 1))
    skill = np.linspace(-1.0, 1.5, n_models)
    logit = skill - difficulty
    labels = (rng.uniform(size=(n, n_models)) < 1.0 / (1.0 + np.exp(-logit))).astype(float)
    scores = 1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, 0.5, size=(n, n_models)))))
    return scores, labels


def entry_and_good(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The threshold family with abstention, written out without racer's helpers.

    Candidate 0 abstains (score ``1 - max s``); candidate k joins the set at lambda once
    ``1 - score_k <= lambda``. Abstaining is the good candidate iff no model is good.

    Returns
    -------
    entry : numpy.ndarray of float, shape (n, M + 1)
        Lambda at which each candidate joins.
    good : numpy.ndarray of bool, shape (n, M + 1)
        Which candidates count as a correct routing.
    """
    n, n_models = scores.shape
    entry = np.empty((n, n_models + 1))
    entry[:, 0] = 1.0 - (1.0 - scores.max(axis=1))
    entry[:, 1:] = 1.0 - scores
    good = np.empty((n, n_models + 1), dtype=bool)
    good[:, 1:] = labels == 1
    good[:, 0] = ~good[:, 1:].any(axis=1)
    return entry, good


def binomial_ucb(losses: np.ndarray, n: int, delta: float) -> np.ndarray:
    """Clopper-Pearson upper bound: the Beta(k + 1, n - k) quantile at 1 - delta (1 if k = n)."""
    losses = np.asarray(losses, dtype=np.int64)
    below_n = losses < n
    safe = np.where(below_n, losses, n - 1)
    return np.where(below_n, stats.beta.ppf(1 - delta, safe + 1, n - safe), 1.0)


@dataclass(frozen=True)
class GridFit:
    """Result of a grid calibration.

    Attributes
    ----------
    index : int or None
        Index into the grid of the chosen lambda (None: no lambda certified).
    loss_counts : numpy.ndarray
        Misrouted points at every grid lambda.
    """

    index: int | None
    loss_counts: np.ndarray


def naive_grid_fit(
    scores: np.ndarray, labels: np.ndarray, alpha: float, delta: float, grid: np.ndarray
) -> GridFit:
    """The straightforward calibration: sets, losses and a bound at every grid lambda.

    Builds the (n, M + 1) boolean sets for each of the K lambdas, counts the points whose
    set holds no good candidate, bounds each count with Clopper-Pearson, and scans from
    the largest lambda down, stopping before the first lambda whose bound exceeds alpha.
    """
    entry, good = entry_and_good(scores, labels)
    n = entry.shape[0]
    loss_counts = np.empty(grid.size, dtype=np.int64)
    for j, lam in enumerate(grid):
        sets = entry <= lam
        misrouted = ~np.any(sets & good, axis=1)
        loss_counts[j] = np.count_nonzero(misrouted)
    upper = binomial_ucb(loss_counts, n, delta)
    index = None
    for j in range(grid.size - 1, -1, -1):
        if upper[j] > alpha:
            break
        index = j
    return GridFit(index=index, loss_counts=loss_counts)


@dataclass(frozen=True)
class MapieFit:
    """MAPIE's choices on the grid: its default (Bonferroni-Holm) and fixed sequence."""

    holm_lambda: float | None
    fixed_sequence_lambda: float | None


def mapie_fit(
    scores: np.ndarray, labels: np.ndarray, alpha: float, delta: float, grid: np.ndarray
) -> MapieFit:
    """Calibrate the misrouting risk with MAPIE's Learn-then-Test controller."""
    from mapie.risk_control import BinaryClassificationController, BinaryRisk, control_fwer

    entry, good = entry_and_good(scores, labels)
    misrouting = BinaryRisk(
        risk_occurrence=lambda good_sets, sets: ~(good_sets.astype(bool) & sets).any(axis=1),
        risk_condition=lambda good_sets, sets: np.ones(len(good_sets), dtype=bool),
        higher_is_better=False,
    )
    controller = BinaryClassificationController(
        predict_function=lambda entry_levels, lam: entry_levels <= lam,
        risk=misrouting,
        target_level=alpha,
        confidence_level=1 - delta,
        best_predict_param_choice="predicted_positive_fraction",  # smallest mean set size
        list_predict_params=grid[:, None],
    )
    controller.calibrate(entry, good)
    holm = controller.best_predict_param
    descending = grid[::-1]
    passed = control_fwer(controller.p_values[::-1, 0], delta, fwer_method="fixed_sequence")
    return MapieFit(
        holm_lambda=None if holm is None else float(holm[0]),
        fixed_sequence_lambda=float(descending[passed].min()) if passed.size else None,
    )


@dataclass(frozen=True)
class Timing:
    """Median wall time, how many runs it is the median of, and the traced peak memory."""

    seconds: float
    runs: int
    peak_bytes: int
    result: Any


def measure(run: Callable[[], Any], repeats: int, slow_seconds: float) -> Timing:
    """Run once under tracemalloc (warm-up and memory), then time ``repeats`` more runs."""
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    result = run()
    traced_seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if traced_seconds > slow_seconds or repeats < 1:
        return Timing(seconds=traced_seconds, runs=1, peak_bytes=peak, result=result)
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return Timing(seconds=statistics.median(times), runs=repeats, peak_bytes=peak, result=result)


@dataclass
class Row:
    """One line of the printed table."""

    n: int
    method: str
    grid_size: str
    runs: str
    seconds: float
    peak_bytes: float
    threshold: float | None = None
    risk: float | None = None
    bound: float | None = None
    agrees: str = ""
    extrapolated: bool = False


def in_bracket(grid: np.ndarray, index: int, lam: float) -> bool:
    """Whether ``grid[index - 1] < lam <= grid[index]``: the grid choice is lam rounded up."""
    above_previous = index == 0 or grid[index - 1] < lam
    return bool(above_previous and lam <= grid[index])


def round_size_below(limit: float) -> int:
    """Largest 1, 2 or 5 times a power of ten that is at most ``limit``."""
    exponent = int(math.floor(math.log10(max(limit, 1.0))))
    for mantissa in (5, 2, 1):
        if mantissa * 10**exponent <= limit:
            return mantissa * 10**exponent
    return 10 ** (exponent - 1) * 5


class MapiePlanner:
    """Decides at which n MAPIE runs, from the per-cell cost of its largest run so far."""

    def __init__(self, n_models: int, grid_size: int, max_bytes: float, max_seconds: float):
        self.cells_per_n = (n_models + 1) * grid_size
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.bytes_per_cell = MAPIE_BYTES_PER_CELL_GUESS
        self.seconds_per_cell: float | None = None
        self.measured_n = 0

    def fits(self, n: int) -> bool:
        """Whether a run at ``n`` is predicted to stay within the memory and time limits."""
        cells = n * self.cells_per_n
        if cells * self.bytes_per_cell > self.max_bytes:
            return False
        return self.seconds_per_cell is None or cells * self.seconds_per_cell <= self.max_seconds

    def largest_fitting(self) -> int:
        """The largest round n predicted to fit."""
        limit = self.max_bytes / (self.bytes_per_cell * self.cells_per_n)
        if self.seconds_per_cell is not None:
            limit = min(limit, self.max_seconds / (self.seconds_per_cell * self.cells_per_n))
        return round_size_below(limit)

    def record(self, n: int, timing: Timing) -> None:
        """Learn the per-cell cost from a measured run."""
        cells = n * self.cells_per_n
        self.bytes_per_cell = timing.peak_bytes / cells
        self.seconds_per_cell = timing.seconds / cells
        self.measured_n = n

    def extrapolate(self, n: int) -> tuple[float, float]:
        """Predicted (seconds, bytes) at ``n``, linear in n x K from the largest run."""
        cells = n * self.cells_per_n
        return cells * (self.seconds_per_cell or math.nan), cells * self.bytes_per_cell


def racer_rows(
    n: int, scores: np.ndarray, labels: np.ndarray, args: argparse.Namespace
) -> tuple[Row, RACER, float]:
    """Time RACER's fit and predict; returns its row, the fitted model and the throughput."""
    # the family the grid scan and MAPIE calibrate: the abstain option may stand alone, and
    # the smallest certified lambda is chosen (refusals free)
    fit = measure(
        lambda: RACER(args.alpha, args.delta, refusals=True, refusal_cost=0.0).fit(scores, labels),
        args.repeats,
        1e9,
    )
    model = fit.result
    predict = measure(lambda: model.predict(scores), args.repeats, 1e9)
    throughput = scores.size / predict.seconds
    row = Row(
        n=n,
        method="RACER fit (exact, sort)",
        grid_size="exact",
        runs=str(fit.runs),
        seconds=fit.seconds,
        peak_bytes=fit.peak_bytes,
        threshold=model.threshold_,
        risk=model.empirical_risk_,
        bound=model.risk_bound_,
        agrees="(reference)",
    )
    return row, model, throughput


def sort_reference(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The least work of any exact fit, in plain numpy: entry levels, each point's loss
    breakpoint (its first good model, else the abstain option), and one sort."""
    entry = 1.0 - scores
    abstain_entry = scores.max(axis=1)  # 1 - s_0 with s_0 = 1 - max s
    first_good = np.where(labels == 1, entry, np.inf).min(axis=1)
    return np.sort(np.where(np.isinf(first_good), abstain_entry, first_good))


def reference_rows(
    n: int, scores: np.ndarray, labels: np.ndarray, args: argparse.Namespace
) -> list[Row]:
    """The sort-only numpy reference, RACER's fit on MAPIE's family, its default fit and a
    fit with 4 groups, timed in turns (round robin) so that a load that changes during the
    run weighs on all four alike; each time is the median of its ``--repeats`` turns."""
    groups = np.arange(n) % 4
    runs = {
        "sort-only numpy reference": lambda: sort_reference(scores, labels),
        "RACER fit, MAPIE's family": lambda: RACER(
            args.alpha, args.delta, refusals=True, refusal_cost=0.0
        ).fit(scores, labels),
        "RACER fit (default)": lambda: RACER(args.alpha, args.delta).fit(scores, labels),
        "RACER fit, 4 groups": lambda: RACER(args.alpha, args.delta).fit(
            scores, labels, groups=groups
        ),
    }
    peaks = {method: measure(run, 0, 0.0).peak_bytes for method, run in runs.items()}
    times: dict[str, list[float]] = {method: [] for method in runs}
    for _ in range(max(args.repeats, 1)):
        for method, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run()
            times[method].append(time.perf_counter() - start)
    return [
        Row(n, method, "exact", f"{len(times[method])} rr", statistics.median(times[method]),
            peaks[method], agrees="-")
        for method in runs
    ]


def risk_and_bound(model: RACER, lam: float, delta: float) -> tuple[float, float]:
    """Empirical risk (from RACER's risk curve) and Clopper-Pearson bound at any lambda."""
    n = model.n_calibration_
    losses = int(model.risk_curve_.loss_total_at(lam))
    return losses / n, float(binomial_ucb(np.array(losses), n, delta))


def grid_row(
    n: int,
    scores: np.ndarray,
    labels: np.ndarray,
    model: RACER,
    grid: np.ndarray,
    args: argparse.Namespace,
) -> Row:
    """Time the naive grid and check its choice against RACER's exact lambda."""
    timing = measure(
        lambda: naive_grid_fit(scores, labels, args.alpha, args.delta, grid),
        args.repeats,
        args.slow_seconds,
    )
    fit: GridFit = timing.result
    row = Row(n, "grid scan (n x M x K)", str(grid.size), str(timing.runs), timing.seconds,
              timing.peak_bytes)
    if fit.index is None:
        row.agrees = "no: grid certified nothing"
        return row
    lam = float(grid[fit.index])
    losses = int(fit.loss_counts[fit.index])
    row.threshold, row.risk = lam, losses / n
    row.bound = float(binomial_ucb(np.array(losses), n, args.delta))
    curve_matches = losses == int(model.risk_curve_.loss_total_at(lam))
    bracketed = in_bracket(grid, fit.index, model.threshold_)
    row.agrees = "yes" if bracketed and curve_matches else "NO"
    if not curve_matches:
        row.agrees += " (loss count differs from RACER's curve)"
    return row


def mapie_rows(
    n: int,
    scores: np.ndarray,
    labels: np.ndarray,
    model: RACER,
    grid: np.ndarray,
    args: argparse.Namespace,
) -> tuple[list[Row], Timing]:
    """Time MAPIE's controller and compare both of its choices with RACER's lambda."""
    timing = measure(
        lambda: mapie_fit(scores, labels, args.alpha, args.delta, grid),
        args.repeats,
        args.slow_seconds,
    )
    fit: MapieFit = timing.result
    rows = []
    for label, lam in (
        ("MAPIE LTT, Bonferroni-Holm", fit.holm_lambda),
        ("  same p-values, fixed seq.", fit.fixed_sequence_lambda),
    ):
        row = Row(n, label, str(grid.size), str(timing.runs), timing.seconds, timing.peak_bytes)
        if lam is None:
            row.agrees = "no: certified nothing"
        else:
            row.threshold = lam
            row.risk, row.bound = risk_and_bound(model, lam, args.delta)
            index = int(np.argmin(np.abs(grid - lam)))
            if in_bracket(grid, index, model.threshold_):
                row.agrees = "yes"
            else:
                row.agrees = f"no: lambda {lam - model.threshold_:+.4f} from RACER's"
        rows.append(row)
    return rows, timing


def format_row(row: Row, reference: Row) -> str:
    """One table line, with time and memory also as ratios to RACER's fit at the same n."""
    mark = "~" if row.extrapolated else " "
    mib = row.peak_bytes / 2**20
    time_ratio = row.seconds / reference.seconds
    memory_ratio = row.peak_bytes / reference.peak_bytes
    lam = "-" if row.threshold is None else f"{row.threshold:.5f}"
    risk = "-" if row.risk is None else f"{row.risk:.5f}"
    bound = "-" if row.bound is None else f"{row.bound:.5f}"
    return (
        f"{row.n:>9,d}  {row.method:<28s} {row.grid_size:>5s} {row.runs:>8s} "
        f"{mark}{row.seconds:>9.3f} {mark}{time_ratio:>8.1f}x {mark}{mib:>9.1f} "
        f"{mark}{memory_ratio:>7.1f}x  {lam:>8s} {risk:>8s} {bound:>8s}  {row.agrees}"
    )


HEADER = (
    f"{'n':>9s}  {'method':<28s} {'K':>5s} {'runs':>8s} {'time [s]':>10s} "
    f"{'vs RACER':>10s} {'peak [MiB]':>10s} {'vs RACER':>9s}  {'lambda':>8s} "
    f"{'risk':>8s} {'UCB':>8s}  agrees with RACER's lambda"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the issue's setting)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--models", type=int, default=TARGET_MODELS)
    parser.add_argument("--grid-size", type=int, default=1000, help="K, for grid and MAPIE")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--slow-seconds", type=float, default=10.0,
                        help="no repeats for a method whose warm-up takes longer")
    parser.add_argument("--mapie-max-gb", type=float, default=10.0)
    parser.add_argument("--mapie-max-seconds", type=float, default=300.0)
    parser.add_argument("--no-mapie", action="store_true", help="skip MAPIE")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def mapie_version() -> str | None:
    """MAPIE's version, or None when it is not importable here."""
    if importlib.util.find_spec("mapie") is None:
        return None
    import mapie

    return str(getattr(mapie, "__version__", "unknown"))


def print_targets(fit_row: Row | None, throughput: float | None) -> None:
    """PASS/FAIL against the issue's targets (n = 1e6, M = 11)."""
    print(f"\nTargets (n = {TARGET_N:,d}, M = {TARGET_MODELS}):")
    if fit_row is None or throughput is None:
        print("  not measured: run with --sizes including 1000000 and --models 11")
        return
    fit_ok = fit_row.seconds < FIT_TARGET_SECONDS
    predict_ok = throughput >= PREDICT_TARGET_SCORES_PER_SECOND
    print(f"  fit     {fit_row.seconds:.3f} s   (target < {FIT_TARGET_SECONDS} s)      "
          f"{'PASS' if fit_ok else 'FAIL'}")
    print(f"  predict {throughput / 1e6:.1f} M scores/s (target >= "
          f"{PREDICT_TARGET_SCORES_PER_SECOND / 1e6:.0f} M/s)  {'PASS' if predict_ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    """Run every method at every size and print the table; 0 unless something broke."""
    args = parse_args(argv)
    version = None if args.no_mapie else mapie_version()
    grid = np.linspace(0.0, 1.0, args.grid_size)
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"MAPIE {version or 'not installed (run benchmarks/run_calibration_speed.sh)'}; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"M = {args.models} models, alpha = {args.alpha}, delta = {args.delta}, threshold "
        f"family with abstention, exact binomial bound; grid = linspace(0, 1, {args.grid_size})"
    )
    print("time: median of the untraced runs after a traced warm-up (runs = 1: the traced run "
          "only; 'rr': timed in turns with the other rr rows); peak: tracemalloc peak during "
          "the call, inputs excluded\n")
    print(HEADER)
    planner = MapiePlanner(args.models, args.grid_size, args.mapie_max_gb * 1e9,
                           args.mapie_max_seconds)
    target_fit: Row | None = None
    target_throughput: float | None = None
    predict_lines = []
    ratio_lines: list[str] = []
    mapie_extra_run_done = False
    for n in sorted(args.sizes):
        scores, labels = make_routing_data(n, args.models, args.seed)
        reference, model, throughput = racer_rows(n, scores, labels, args)
        predict_lines.append(f"  n = {n:>9,d}: {throughput / 1e6:7.1f} M scores/s")
        if n == TARGET_N and args.models == TARGET_MODELS:
            target_fit, target_throughput = reference, throughput
        extra = reference_rows(n, scores, labels, args)
        sort_only = extra[0].seconds
        ratio_lines.append(
            f"  n = {n:>9,d}: MAPIE's family {extra[1].seconds / sort_only:.2f}x, default fit "
            f"{extra[2].seconds / sort_only:.2f}x, 4 groups {extra[3].seconds / sort_only:.2f}x "
            "the sort-only reference (target <= 1.3x)"
        )
        rows = [reference, *extra, grid_row(n, scores, labels, model, grid, args)]
        if version is not None:
            if not planner.fits(n) and not mapie_extra_run_done:
                mapie_extra_run_done = True
                fit_n = planner.largest_fitting()
                if planner.measured_n < fit_n < n:
                    fit_scores, fit_labels = make_routing_data(fit_n, args.models, args.seed)
                    fit_reference, fit_model, _ = racer_rows(fit_n, fit_scores, fit_labels, args)
                    new_rows, timing = mapie_rows(fit_n, fit_scores, fit_labels, fit_model, grid,
                                                  args)
                    planner.record(fit_n, timing)
                    for row in [fit_reference, *new_rows]:
                        print(format_row(row, fit_reference))
                    print(f"{'':>11s}(n = {fit_n:,d}: the largest round n at which MAPIE is "
                          "predicted to fit the limits)\n")
            if planner.fits(n):
                new_rows, timing = mapie_rows(n, scores, labels, model, grid, args)
                planner.record(n, timing)
                rows.extend(new_rows)
            else:
                seconds, peak = planner.extrapolate(n)
                rows.append(Row(n, "MAPIE LTT (extrapolated)", str(args.grid_size),
                                f"n={planner.measured_n:,d}", seconds, peak,
                                agrees="not run: over the memory/time limit", extrapolated=True))
        for row in rows:
            print(format_row(row, reference))
        print(flush=True)
    print("RACER fit against the sort-only numpy reference, same run:")
    print("\n".join(ratio_lines))
    print("RACER predict throughput ((query, model) scores per second, median):")
    print("\n".join(predict_lines))
    print(
        "\nagrees: 'yes' when RACER's exact lambda lies in (g[j-1], g[j]] around the grid's "
        "choice g[j],\n  i.e. the grid choice is RACER's lambda rounded up to the grid (and for "
        "the grid scan, its\n  loss count at g[j] equals RACER's risk curve). Rows marked ~ are "
        "extrapolated linearly in n x K\n  from the largest MAPIE run (runs column: that n). "
        "MAPIE's binary p-value is the exact binomial\n  tail (float count ceil(n r)); its "
        "default Bonferroni-Holm tests each lambda at delta / (#untested)."
    )
    print_targets(target_fit, target_throughput)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
