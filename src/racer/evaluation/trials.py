"""Repeated calibration trials: random splits, and the exact validity check.

Two kinds of trial run over the same pool of labelled queries (racer/method.md section 9):

- **split trials**: trial ``t`` shuffles the pool, calibrates on the first ``n_cal``
  rows and measures everything on the rest (risk, set size, cost, accuracy);
- **validity trials**: trial ``t`` calibrates on ``n_cal`` rows drawn from the pool
  i.i.d. *with replacement* and measures the risk on the *whole pool*, which is the
  true risk of that population; the share of trials above alpha is the violation rate.

Calibration is vectorised over trials: a method's loss breakpoints are computed once
for the pool, and for the count-based bounds the largest admissible loss count
depends only on (n, alpha, delta), so each trial's lambda is one order statistic of
its breakpoints. WSR, whose test depends on the order of the points, calls
:func:`racer.calibration.calibrate` trial by trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from racer.calibration import calibrate, max_admissible_losses
from racer.evaluation.baselines import Method
from racer.evaluation.metrics import OUTCOMES, Pool, outcomes
from racer.exceptions import InfeasibleCalibrationError
from racer.sets import lambda_range


@dataclass(frozen=True)
class TrialPlan:
    """Which rows each trial calibrates on and tests on, reproducible from a seed.

    Split trial ``t`` uses ``numpy.random.default_rng([seed, t]).permutation(n_pool)``:
    the first ``n_cal`` rows calibrate, the others test. Validity trial ``t`` calibrates
    on ``numpy.random.default_rng([seed, t, 1]).integers(n_pool, size=n_cal)``.
    """

    n_pool: int
    n_cal: int
    n_trials: int
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.n_cal < self.n_pool:
            raise ValueError(
                f"The calibration split must hold between 1 and {self.n_pool - 1} of the "
                f"{self.n_pool} pool queries, got {self.n_cal}."
            )
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be at least 1, got {self.n_trials}.")

    @property
    def n_test(self) -> int:
        """Test rows per split trial."""
        return self.n_pool - self.n_cal

    def split_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Calibration rows (T, n_cal) and test rows (T, n_test) of every split trial."""
        perms = np.stack(
            [
                np.random.default_rng([self.seed, t]).permutation(self.n_pool)
                for t in range(self.n_trials)
            ]
        )
        return perms[:, : self.n_cal], perms[:, self.n_cal :]

    def resample_rows(self) -> np.ndarray:
        """Calibration rows (T, n_cal) of every validity trial (with replacement)."""
        return np.stack(
            [
                np.random.default_rng([self.seed, t, 1]).integers(self.n_pool, size=self.n_cal)
                for t in range(self.n_trials)
            ]
        )


@lru_cache(maxsize=4096)
def loss_budget(rule: str, bound: str | None, n: int, alpha: float, delta: float) -> int:
    """Largest number of calibration losses out of ``n`` that a rule accepts (-1: none).

    ``"pac"`` asks ``bound`` (:func:`racer.calibration.max_admissible_losses`);
    ``"crc"`` and ``"conformal"`` accept ``(k + 1) / (n + 1) <= alpha``; ``"empirical"``
    and ``"hindsight"`` accept ``k / n <= alpha``.
    """
    if rule in ("empirical", "hindsight"):
        return int(np.flatnonzero(np.arange(n + 1) / n <= alpha)[-1])
    return max_admissible_losses(bound if rule == "pac" else "crc", n, alpha, delta)


def _budget_thresholds(breakpoints: np.ndarray, budgets: np.ndarray, lower: float) -> np.ndarray:
    """Smallest lambda >= lower with at most ``budgets[t]`` breakpoints above it (NaN: none)."""
    n = breakpoints.shape[1]
    descending = -np.sort(-breakpoints, axis=1)
    index = np.clip(budgets, 0, n - 1)[:, None]
    order_statistic = np.take_along_axis(descending, index, axis=1)[:, 0]
    lambdas = np.where(budgets >= n, lower, np.maximum(order_statistic, lower))
    return np.where((budgets < 0) | ~np.isfinite(lambdas), np.nan, lambdas)


def _wsr_thresholds(
    method: Method, pool: Pool, rows: np.ndarray, alpha: float, delta: float
) -> np.ndarray:
    lambdas = np.full(rows.shape[0], np.nan)
    for t, trial_rows in enumerate(rows):
        try:
            lambdas[t] = calibrate(
                method.entry[trial_rows],
                pool.labels[trial_rows],
                alpha=alpha,
                delta=delta,
                bound="wsr",
                lambda_range=lambda_range(method.family, method.cost_weight),
                random_state=t,
            ).threshold
        except InfeasibleCalibrationError:
            pass
    return lambdas


def thresholds(
    method: Method, pool: Pool, rows: np.ndarray, alpha: float, delta: float
) -> np.ndarray:
    """The lambda ``method`` picks in each trial from the pool rows ``rows`` (T, n).

    Returns NaN where the rule cannot certify alpha (RACER and conformal risk control
    refuse rather than return an unguaranteed lambda). Split conformal with too few
    points returns the lambda of the largest sets (all models), as split conformal
    prediction does. An infinite entry level never joins a set.
    """
    n_trials, n = rows.shape
    if method.rule == "fixed":
        return np.full(n_trials, method.fixed_lambda)
    if method.rule == "pac" and method.bound == "wsr":
        return _wsr_thresholds(method, pool, rows, alpha, delta)
    breakpoints = method.calibration_breakpoints[rows]
    if method.rule == "conformal":  # calibrated on the queries some model answers
        sizes = (pool.labels[rows] == 1).any(axis=2).sum(axis=1)
    else:
        sizes = np.full(n_trials, n)
    budgets = np.array(
        [
            loss_budget(method.rule, method.bound, int(size), alpha, delta) if size else -1
            for size in sizes
        ]
    )
    lower, upper = lambda_range(method.family, method.cost_weight)
    lambdas = _budget_thresholds(breakpoints, budgets, lower)
    if method.rule == "conformal":
        return np.where(np.isnan(lambdas), upper, lambdas)
    return lambdas


def outcome_means(
    method: Method, pool: Pool, lambdas: np.ndarray, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Mean of every outcome over ``rows[t]`` at ``lambdas[t]``, per trial (NaN lambda: NaN).

    A query's set at lambda is the first ``j`` of its candidates in entry order, ``j``
    being the number of its entry levels <= lambda. Outcomes are computed once per
    ``j`` that occurs (at most M + 2 values) over the whole pool, then read per trial.
    """
    feasible = np.flatnonzero(~np.isnan(lambdas))
    means = {name: np.full(lambdas.shape, np.nan) for name in OUTCOMES}
    if not feasible.size:
        return means
    joined = np.stack([(method.entry[rows[t]] <= lambdas[t]).sum(axis=1) for t in feasible])
    order = np.argsort(method.entry, axis=1, kind="stable")
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(order.shape[1])[None, :], axis=1)
    sorted_levels = np.take_along_axis(method.entry, order, axis=1)
    table = {name: np.full((pool.n, order.shape[1] + 1), np.nan) for name in OUTCOMES}
    for j in np.unique(joined):
        # a point's loss is 0 once its breakpoint (one of its entry levels) has joined
        last_joined = sorted_levels[:, j - 1] if j > 0 else np.full(pool.n, -np.inf)
        values = outcomes(position < j, method.evaluation_breakpoints > last_joined, pool)
        for name in OUTCOMES:
            table[name][:, j] = values[name]
    for name in OUTCOMES:
        means[name][feasible] = table[name][rows[feasible], joined].mean(axis=1)
    return means
