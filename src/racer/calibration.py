"""Risk curves and the choice of lambda (RCPS / fixed-sequence LTT / CRC).

Strict abstention's (tau, lambda) pairs are certified in :mod:`racer.calibration_strict`;
its public names are re-exported here.

Each calibration point's loss is a non-increasing step function of lambda, so the
empirical risk for *every* lambda comes from one sort of the points' breakpoints; no
grid scan over (n, M, lambdas) is needed. Losses of 0/1 labels are counted as integers.

Examples
--------
>>> import numpy as np
>>> from racer.calibration import calibrate
>>> from racer.sets import augmented_scores, entry_levels
>>> rng = np.random.default_rng(0)
>>> scores = rng.uniform(size=(500, 3))
>>> labels = (rng.uniform(size=(500, 3)) < scores).astype(float)
>>> result = calibrate(entry_levels(augmented_scores(scores)), labels, alpha=0.1, delta=0.1)
>>> bool(result.risk_bound <= 0.1)
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from racer import bounds
from racer.calibration_strict import (
    StrictCalibrationResult,
    StrictSplit,
    calibrate_strict,
    strict_grids,
    strict_losses,
)
from racer.exceptions import InfeasibleCalibrationError
from racer.fwer import FWER_METHODS, control_fwer
from racer.losses import (
    best_quality_steps,
    is_binary,
    losses_on_grid,
    served_losses,
    unanswerable,
)
from racer.ltt import LTTResult, binomial_pvalues, learn_then_test, ltt_certify, ltt_pvalues

__all__ = [
    "BOUNDS",
    "FWER_METHODS",
    "GUARANTEES",
    "CalibrationResult",
    "LTTResult",
    "RiskCurve",
    "StrictCalibrationResult",
    "StrictSplit",
    "admissible",
    "binomial_pvalues",
    "calibrate",
    "calibrate_breakpoints",
    "calibrate_strict",
    "control_fwer",
    "first_good_level",
    "learn_then_test",
    "loss_breakpoints",
    "ltt_certify",
    "ltt_pvalues",
    "max_admissible_losses",
    "point_losses",
    "priced_threshold",
    "risk_curve",
    "strict_grids",
    "strict_losses",
    "upper_bound",
]

GUARANTEES = ("pac", "expectation")
BOUNDS = ("binomial", "hb", "hoeffding", "wsr")


def _abstain_candidate(
    entry: np.ndarray,
    quality: np.ndarray,
    abstention: bool,
    binary: bool,
    no_good: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """When the abstain candidate joins as seen by the loss, and whether it is right.

    Abstaining (or, without abstention, the forgiveness of a query no model answers) is
    right when no model is good. With unknown labels, worst completion
    (:mod:`racer.losses`): for 0/1 labels the query counts as unanswerable only once every
    unknown model has joined too (an unknown outside the set could be the good one); for
    graded quality never. Without abstention the candidate is always present (-inf).
    ``no_good``: for 0/1 labels, the points with no label 1 when the caller has them
    (then exactly the points whose known labels are all 0).
    """
    join = entry[:, 0] if abstention else np.full(entry.shape[0], -np.inf)
    if not np.isnan(np.sum(quality)):  # no unknown label: one pass, no masks
        return join, unanswerable(quality) if no_good is None else no_good
    unknown = np.isnan(quality)
    known_zero = np.all((quality == 0) | unknown, axis=1) if no_good is None else no_good
    if binary:
        unknown_join = np.max(entry[:, 1:], axis=1, where=unknown, initial=-np.inf)
        return np.maximum(join, unknown_join), known_zero
    return join, known_zero & ~unknown.any(axis=1)


def point_losses(
    entry: np.ndarray, quality: np.ndarray, lam: float, abstention: bool = True
) -> np.ndarray:
    """Served loss (:func:`racer.losses.served_losses`) of every point's set at one lambda.

    ``abstention`` True is the flag mode, False the off mode.
    """
    return served_losses("flag" if abstention else "off", entry <= lam, quality)


def first_good_level(entry: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For 0/1 labels: the level at which each point's first known good model joins.

    ``+inf`` when no label is 1 (model entry levels are never ``+inf``). Unknown (NaN)
    labels are not good.
    """
    return np.min(entry[:, 1:], axis=1, where=labels == 1, initial=np.inf)


def loss_breakpoints(
    entry: np.ndarray,
    labels: np.ndarray,
    abstention: bool = True,
    *,
    first_good: np.ndarray | None = None,
) -> np.ndarray:
    """For 0/1 labels: the lambda at which each point's loss drops from 1 to 0.

    The loss at lambda is ``1{lambda < breakpoint}``: the breakpoint is the entry level
    of the first known good model (:func:`first_good_level`, computed unless given), or,
    for a query with no known good model, the level at which the abstain candidate joins
    (:func:`_abstain_candidate`).
    """
    first_good = first_good_level(entry, labels) if first_good is None else first_good
    no_good = first_good == np.inf
    join, _ = _abstain_candidate(entry, labels, abstention, True, no_good)
    return np.where(no_good, join, first_good)


def _per_point_steps(
    entry: np.ndarray, quality: np.ndarray, abstention: bool, binary: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each point's entry levels (as the loss sees them) in increasing order, and its
    best quality so far."""
    join, right = _abstain_candidate(entry, quality, abstention, binary)
    loss_entry = entry.copy()
    loss_entry[:, 0] = join
    quality_aug = np.empty(entry.shape, dtype=float)
    quality_aug[:, 0] = right
    quality_aug[:, 1:] = quality
    if np.isnan(np.sum(quality_aug)):
        np.nan_to_num(quality_aug, copy=False, nan=0.0)  # unknowns at their worst (in place)
    return best_quality_steps(loss_entry, quality_aug)


def _graded_loss_steps(
    sorted_levels: np.ndarray, running_best: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (level, drop) events of the graded loss of all points."""
    step_drops = np.diff(running_best, axis=1, prepend=0.0)
    levels = sorted_levels.ravel()
    level_order = np.argsort(levels, kind="stable")
    return levels[level_order], step_drops.ravel()[level_order]


@dataclass(frozen=True)
class RiskCurve:
    """The empirical risk of the calibration points as a step function of lambda.

    Attributes
    ----------
    lambdas : numpy.ndarray
        Increasing thresholds at which the risk changes (the first is the lower end
        of the family's range); between two of them the sets do not change.
    loss_totals : numpy.ndarray
        Summed loss at each lambda (integers for 0/1 labels).
    n : int
        Number of calibration points.
    binary : bool
        Whether the losses are 0/1.
    """

    lambdas: np.ndarray
    loss_totals: np.ndarray
    n: int
    binary: bool

    @property
    def empirical_risk(self) -> np.ndarray:
        """Mean loss at each lambda."""
        return self.loss_totals / self.n

    def loss_total_at(self, lam: float) -> float:
        """Summed loss of the calibration points at an arbitrary lambda."""
        index = np.searchsorted(self.lambdas, lam, side="right") - 1
        if index < 0:
            return float(self.n)
        return self.loss_totals[index]

    def upper_bounds(self, bound: str, delta: float) -> np.ndarray:
        """Upper confidence bound of the risk at every lambda (not for WSR)."""
        return upper_bound(bound, self.loss_totals, self.n, delta)


def upper_bound(bound: str, loss_total: np.ndarray | float, n: int, delta: float) -> np.ndarray:
    """The bound's value for summed loss(es) ``loss_total`` of ``n`` points (not WSR).

    For ``"crc"`` it is the adjusted risk ``(loss_total + 1) / (n + 1)``.
    """
    if bound == "binomial":
        return bounds.binomial_ucb(loss_total, n, delta)
    if bound == "hb":
        return bounds.hb_ucb(loss_total, n, delta)
    if bound == "hoeffding":
        return bounds.hoeffding_ucb(np.asarray(loss_total) / n, n, delta)
    if bound == "crc":
        return (np.asarray(loss_total) + 1.0) / (n + 1.0)
    raise ValueError(f"No closed-form upper bound for {bound!r}.")


def risk_curve(
    entry: np.ndarray,
    quality: np.ndarray,
    *,
    abstention: bool = True,
    lower: float = 0.0,
    binary: bool | None = None,
) -> RiskCurve:
    """Build the empirical risk curve from one sort of the loss breakpoints.

    Parameters
    ----------
    entry : numpy.ndarray, shape (n, M + 1)
        Entry levels of the calibration points (:func:`racer.sets.entry_levels`).
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality in [0, 1], without NaN.
    abstention : bool
        Whether the sets may abstain.
    lower : float
        Lower end of the family's lambda range.
    binary : bool, optional
        Whether ``quality`` is 0/1, when the caller already knows.

    Returns
    -------
    RiskCurve
    """
    binary = is_binary(quality) if binary is None else binary
    return _risk_curve(entry, quality, abstention, lower, binary)


def _risk_curve(
    entry: np.ndarray,
    quality: np.ndarray,
    abstention: bool,
    lower: float,
    binary: bool,
    steps: tuple[np.ndarray, np.ndarray] | None = None,
) -> RiskCurve:
    """:func:`risk_curve`, reusing per-point ``steps`` when the caller has them."""
    if binary:
        levels = np.sort(loss_breakpoints(entry, quality, abstention))
        return _curve_from_events(levels, None, entry.shape[0], lower)
    steps = _per_point_steps(entry, quality, abstention, binary) if steps is None else steps
    return _curve_from_events(*_graded_loss_steps(*steps), entry.shape[0], lower)


def _curve_from_events(
    levels: np.ndarray, drops: np.ndarray | None, n: int, lower: float
) -> RiskCurve:
    """The curve from sorted loss events: unit drops (0/1 losses) or graded ``drops``."""
    # levels are sorted: the points at or below each distinct finite level end at its
    # last occurrence, so no search is needed.
    first_finite = int(np.searchsorted(levels, -np.inf, side="right"))
    finite = levels[first_finite : int(np.searchsorted(levels, np.inf, side="left"))]
    is_last = np.append(finite[1:] != finite[:-1], True) if finite.size else finite.astype(bool)
    keep = np.flatnonzero(is_last & (finite > lower))
    lambdas = np.concatenate([[lower], finite[keep]])
    ends = np.concatenate([[np.searchsorted(levels, lower, side="right")], first_finite + keep + 1])
    if drops is None:
        totals = (n - ends).astype(np.int64)
    else:
        cumulative = np.concatenate([[0.0], np.cumsum(drops)])
        totals = np.maximum(n - cumulative[ends], 0.0)
    return RiskCurve(lambdas=lambdas, loss_totals=totals, n=n, binary=drops is None)


def _largest_passing_count(passes: Callable[[int], bool], n: int) -> int:
    """Largest k in [-1, n] with ``passes(k)``, for a test that passes for small k."""
    if not passes(0):
        return -1
    lo, hi = 0, n + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


def admissible(curve: RiskCurve, bound: str, alpha: float, delta: float) -> np.ndarray:
    """Whether the bound certifies risk <= alpha at each lambda of the curve."""
    n = curve.n
    if bound == "crc":
        return (curve.loss_totals + 1.0) / (n + 1.0) <= alpha
    if bound == "hoeffding":
        return bounds.hoeffding_ucb(curve.empirical_risk, n, delta) <= alpha
    if bound == "hb" and not curve.binary:
        return bounds.hb_pvalue_bounded(curve.loss_totals, n, alpha) <= delta
    if not curve.binary:
        raise ValueError(
            f"The {bound!r} bound holds for 0/1 labels only, but the labels are graded "
            "(values strictly between 0 and 1). Use bound='hb', 'hoeffding' or 'wsr', or "
            "threshold the quality into 0/1 labels."
        )
    return curve.loss_totals <= max_admissible_losses(bound, curve.n, alpha, delta)


def max_admissible_losses(bound: str, n: int, alpha: float, delta: float) -> int:
    """Largest number of 0/1 losses out of ``n`` that still certifies risk <= alpha.

    -1 when even zero losses do not. For ``"binomial"``, ``"hb"``, ``"hoeffding"`` and
    ``"crc"`` the test depends on the loss count alone, so one search over counts
    replaces a test at every lambda.
    """
    tests: dict[str, Callable[[int], bool]] = {
        "binomial": lambda k: bounds.binomial_pvalue(k, n, alpha) <= delta,
        "hb": lambda k: bounds.hb_pvalue(k, n, alpha) <= delta,
        "hoeffding": lambda k: bounds.hoeffding_ucb(k / n, n, delta) <= alpha,
        "crc": lambda k: (k + 1.0) / (n + 1.0) <= alpha,
    }
    if bound not in tests:
        raise ValueError(f"Unknown bound {bound!r}; choose from {BOUNDS} or 'crc'.")
    return _largest_passing_count(tests[bound], n)


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen lambda and what certifies it.

    Attributes
    ----------
    threshold : float
        The calibrated lambda.
    empirical_risk : float
        Calibration risk at ``threshold``.
    risk_bound : float
        The bound's value at ``threshold`` (the UCB; for ``"crc"`` the adjusted risk
        ``(n R + 1) / (n + 1)``).
    bound : str
        The bound used (``"crc"`` for the expectation guarantee).
    curve : RiskCurve
        The whole empirical risk curve.
    """

    threshold: float
    empirical_risk: float
    risk_bound: float
    bound: str
    curve: RiskCurve


def _wsr_threshold(
    steps: tuple[np.ndarray, np.ndarray],
    alpha: float,
    delta: float,
    grid: np.ndarray,
    random_state: int | None,
) -> tuple[float | None, np.ndarray]:
    """Fixed-sequence WSR test down a data-independent grid; returns (lambda, losses).

    ``steps`` are the per-point steps (:func:`_per_point_steps`); the wealth process runs
    over their rows in a seeded random order.
    """
    order = np.random.default_rng(random_state).permutation(steps[0].shape[0])
    sorted_levels, running_best = steps[0][order], steps[1][order]
    chunk = int(np.clip(2e7 // sorted_levels.size, 1, 64))
    passed: float | None = None
    descending = grid[::-1]
    for start in range(0, descending.size, chunk):
        lams = descending[start : start + chunk]
        losses = losses_on_grid(sorted_levels, running_best, lams)
        failures = np.flatnonzero(bounds.wsr_pvalue(losses, alpha, delta) > delta)
        stop = failures[0] if failures.size else lams.size
        if stop > 0:
            passed = float(lams[stop - 1])
        if failures.size:
            break
    final = passed if passed is not None else float(grid[-1])
    return passed, losses_on_grid(sorted_levels, running_best, np.array([final]))[:, 0]


def _infeasible_message(
    curve: RiskCurve, bound: str, alpha: float, delta: float, top_bound: float
) -> str:
    top_risk = float(curve.empirical_risk[-1])
    what = (
        f"conformal risk control at alpha={alpha}"
        if bound == "crc"
        else f"risk <= {alpha} with probability >= {1 - delta:g} using the {bound!r} bound"
    )
    message = (
        f"Cannot certify {what} on n={curve.n} calibration points: even the largest sets "
        f"have empirical risk {top_risk:.4f} and bound {top_bound:.4f} > alpha={alpha}."
    )
    if top_risk == 0:
        needed = bounds.n_needed(bound, alpha, delta)
        return message + (
            f" With no observed loss this bound needs n >= {needed} calibration points; "
            "add calibration data or raise alpha or delta."
        )
    return message + (
        " Raise alpha, or use a router or set family whose largest sets miss less often."
    )


def calibrate(
    entry: np.ndarray,
    quality: np.ndarray,
    *,
    alpha: float,
    delta: float = 0.1,
    bound: str = "binomial",
    guarantee: str = "pac",
    abstention: bool = True,
    lambda_range: tuple[float, float] = (0.0, 1.0),
    random_state: int | None = 0,
    wsr_grid_size: int = 1000,
    binary: bool | None = None,
) -> CalibrationResult:
    """Choose the smallest lambda whose sets keep the risk at most ``alpha``.

    PAC guarantee (RCPS / fixed-sequence testing from the largest sets down):
    ``lambda_hat = min{lambda : bound(lambda') <= alpha for all lambda' >= lambda}``, so
    that ``P(R(lambda_hat) <= alpha) >= 1 - delta``. Expectation guarantee (conformal
    risk control): ``min{lambda : (n R_hat(lambda) + 1) / (n + 1) <= alpha}``.

    Parameters
    ----------
    entry : numpy.ndarray, shape (n, M + 1)
        Entry levels of the calibration points (:func:`racer.sets.entry_levels`).
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality in [0, 1], without NaN.
    alpha, delta : float
        Risk level and failure probability.
    bound : {"binomial", "hb", "hoeffding", "wsr"}
        Upper confidence bound for the PAC guarantee.
    guarantee : {"pac", "expectation"}
        Which promise to calibrate for.
    abstention : bool
        Whether the sets may abstain (see :func:`point_losses`).
    lambda_range : tuple of float
        The family's range of lambdas; WSR tests a fixed grid over it.
    random_state : int or None
        Seed of the WSR order.
    wsr_grid_size : int
        Number of grid points for WSR.
    binary : bool, optional
        Whether ``quality`` is 0/1, when the caller already knows.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    InfeasibleCalibrationError
        When even the largest sets cannot be certified; the message says why and, with
        zero observed loss, the calibration size needed.
    """
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee must be one of {GUARANTEES}, got {guarantee!r}.")
    bound = "crc" if guarantee == "expectation" else bound
    binary = is_binary(quality) if binary is None else binary
    if bound == "wsr":
        steps = _per_point_steps(entry, quality, abstention, binary)
        curve = _risk_curve(entry, quality, abstention, lambda_range[0], binary, steps)
        grid = np.linspace(lambda_range[0], lambda_range[1], wsr_grid_size)
        threshold, losses = _wsr_threshold(steps, alpha, delta, grid, random_state)
        risk_bound = bounds.wsr_ucb(losses, delta)
        if threshold is None:
            raise InfeasibleCalibrationError(
                _infeasible_message(curve, bound, alpha, delta, risk_bound)
            )
        return CalibrationResult(
            threshold=threshold,
            empirical_risk=float(losses.mean()),
            risk_bound=float(risk_bound),
            bound=bound,
            curve=curve,
        )

    return _rcps_choice(
        _risk_curve(entry, quality, abstention, lambda_range[0], binary), bound, alpha, delta
    )


def calibrate_breakpoints(
    breakpoints: np.ndarray,
    *,
    alpha: float,
    delta: float = 0.1,
    bound: str = "binomial",
    guarantee: str = "pac",
    lower: float = 0.0,
) -> CalibrationResult:
    """:func:`calibrate` for 0/1 labels, from the points' loss breakpoints.

    The same choice as ``calibrate(entry, labels, ...)`` when ``breakpoints`` are
    :func:`loss_breakpoints` of those points (any order), without the entry levels: a
    caller that calibrates several subsets of the points (per group) computes the
    breakpoints once. Not for the ``"wsr"`` bound, which needs each point's losses.

    Parameters
    ----------
    breakpoints : numpy.ndarray, shape (n,)
        Each point's loss is ``1{lambda < breakpoint}``.
    alpha, delta, bound, guarantee
        As in :func:`calibrate`.
    lower : float
        Lower end of the family's lambda range.

    Returns
    -------
    CalibrationResult
    """
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee must be one of {GUARANTEES}, got {guarantee!r}.")
    bound = "crc" if guarantee == "expectation" else bound
    if bound == "wsr":
        raise ValueError("The 'wsr' bound needs each point's losses; use calibrate().")
    levels = np.sort(breakpoints)
    return _rcps_choice(_curve_from_events(levels, None, levels.size, lower), bound, alpha, delta)


def _rcps_choice(curve: RiskCurve, bound: str, alpha: float, delta: float) -> CalibrationResult:
    """The smallest lambda above which every lambda of the curve is certified."""
    ok = admissible(curve, bound, alpha, delta)
    failing = np.flatnonzero(~ok)
    if failing.size and failing[-1] == ok.size - 1:
        top_bound = float(upper_bound(bound, curve.loss_totals[-1], curve.n, delta))
        raise InfeasibleCalibrationError(_infeasible_message(curve, bound, alpha, delta, top_bound))
    chosen = failing[-1] + 1 if failing.size else 0
    return CalibrationResult(
        threshold=float(curve.lambdas[chosen]),
        empirical_risk=float(curve.empirical_risk[chosen]),
        risk_bound=float(upper_bound(bound, curve.loss_totals[chosen], curve.n, delta)),
        bound=bound,
        curve=curve,
    )


def priced_threshold(
    entry: np.ndarray,
    lowest: float,
    *,
    model_costs: np.ndarray | None = None,
    refusal_cost: float | None = None,
) -> float:
    """The certified lambda of lowest mean cost when a refusal is priced (flag mode).

    With a nested family and a loss non-increasing in lambda, every lambda at or above the
    RCPS choice ``lowest`` keeps the risk at most alpha whenever ``lowest`` does
    (R(lambda) <= R(lowest)), so choosing among them keeps the guarantee. The cost of a
    lambda is the mean cost of the models called plus ``refusal_cost`` per refusal (a set
    with the abstain option and no model); ties go to the smallest lambda.

    Parameters
    ----------
    entry : numpy.ndarray, shape (n, M + 1)
        Entry levels of the calibration points (column 0: the abstain option).
    lowest : float
        The RCPS lambda.
    model_costs : numpy.ndarray, shape (M,), optional
        Per-model costs; without them every model costs 1.
    refusal_cost : float, optional
        Cost of one refusal; default the cost of the query's first model (the top one).

    Returns
    -------
    float
    """
    models = entry[:, 1:]
    weights = np.ones(models.shape[1]) if model_costs is None else np.asarray(model_costs)
    first = np.argmin(models, axis=1)
    first_entry = models[np.arange(len(models)), first]
    refusal_costs = (
        weights[first] if refusal_cost is None else np.full(len(models), float(refusal_cost))
    )
    candidates = np.unique(np.append(first_entry[first_entry > lowest], lowest))
    order = np.argsort(models.ravel(), kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(np.tile(weights, len(models))[order])])
    model_cost = cumulative[np.searchsorted(models.ravel()[order], candidates, side="right")]
    # refused at lambda: the abstain option has joined and no model has
    refused_order = np.argsort(entry[:, 0], kind="stable")
    refused_from = entry[refused_order, 0]
    refused_until = np.maximum(entry[refused_order, 0], first_entry[refused_order])
    costs_from = np.concatenate([[0.0], np.cumsum(refusal_costs[refused_order])])
    until_order = np.argsort(refused_until, kind="stable")
    costs_until = np.concatenate([[0.0], np.cumsum(refusal_costs[refused_order][until_order])])
    refusal_total = (
        costs_from[np.searchsorted(refused_from, candidates, side="right")]
        - costs_until[np.searchsorted(refused_until[until_order], candidates, side="right")]
    )
    return float(candidates[np.argmin(model_cost + refusal_total)])
