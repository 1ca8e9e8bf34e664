"""One certificate per calibration: marginal, or one per group (Mondrian risk control).

Each certificate is the marginal one applied to its rows (METHOD.md section 5d): the
threshold the bound certifies on those rows alone, so a group's certificate depends on no
other group's data. With 0/1 labels in flag and off modes a group's certificate is read
from its rows' loss breakpoints, computed once for the whole fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from racer import bounds as bounds_module
from racer.calibration import (
    CalibrationResult,
    RiskCurve,
    StrictSplit,
    calibrate,
    calibrate_breakpoints,
    calibrate_strict,
    priced_threshold,
    upper_bound,
)
from racer.estimator.levels import SetLevels
from racer.estimator.params import FitSettings
from racer.exceptions import InfeasibleCalibrationError
from racer.groups import (
    POOLED,
    encode_groups,
    group_delta,
    pool_small_groups,
    small_groups_message,
    too_small,
)
from racer.sets import lambda_range


@dataclass(frozen=True)
class GroupCalibration:
    """One group's certificate (per-group calibration).

    Attributes
    ----------
    name : str
        The group (:data:`racer.groups.POOLED` for the pooled small groups).
    n : int
        Its calibration points.
    threshold : float
        Its calibrated lambda.
    abstain_threshold : float or None
        Strict mode: its tau; None otherwise.
    empirical_risk, risk_bound : float
        Its calibration risk and the bound's value at its thresholds.
    delta : float
        The level it was certified at (``delta / G`` with ``group_guarantee="all"``).
    members : tuple of str
        The groups pooled into it (empty for an ordinary group).
    """

    name: str
    n: int
    threshold: float
    abstain_threshold: float | None
    empirical_risk: float
    risk_bound: float
    delta: float
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Certificate:
    """What one calibration (marginal or one group's) returns to the estimator."""

    threshold: float
    abstain_threshold: float | None
    empirical_risk: float
    risk_bound: float
    bound: str
    curve: RiskCurve | None


def certify(
    levels: SetLevels | StrictSplit,
    labels: np.ndarray,
    rows: Any,
    delta: float,
    settings: FitSettings,
    bound: str,
    training: StrictSplit | None,
) -> Certificate:
    """One certificate on the calibration ``rows`` (all, or one group's), at ``delta``."""
    family_range = lambda_range(settings.family, settings.cost_weight)
    if isinstance(levels, StrictSplit):
        strict = calibrate_strict(
            levels.model_entry[rows],
            levels.abstain_score[rows],
            labels[rows],
            alpha=settings.alpha,
            delta=delta,
            bound=bound,
            lambda_range=family_range,
            lambda_grid_size=settings.lambda_grid_size,
            abstain_grid_size=settings.abstain_grid_size,
            training=training,
            model_costs=settings.costs,
            refusal_cost=settings.refusal_cost,
            random_state=settings.random_state,
        )
        return Certificate(
            strict.threshold,
            strict.abstain_threshold,
            strict.empirical_risk,
            strict.risk_bound,
            bound,
            None,
        )
    if levels.breakpoints is not None and bound != "wsr":
        result = calibrate_breakpoints(
            levels.breakpoints[rows],
            alpha=settings.alpha,
            delta=delta,
            bound=bound,
            guarantee=settings.guarantee,
            lower=family_range[0],
        )
    else:
        result = calibrate(
            levels.entry[rows],
            labels[rows],
            alpha=settings.alpha,
            delta=delta,
            bound=bound,
            guarantee=settings.guarantee,
            abstention=settings.mode == "flag",
            lambda_range=family_range,
            random_state=settings.random_state,
            binary=levels.breakpoints is not None,
        )
    if settings.mode == "flag" and settings.refusals and settings.refusal_cost != 0:
        return _priced(levels.entry[rows], result, delta, settings)
    return Certificate(
        result.threshold,
        None,
        result.empirical_risk,
        result.risk_bound,
        result.bound,
        result.curve,
    )


def _priced(
    entry: np.ndarray, result: CalibrationResult, delta: float, settings: FitSettings
) -> Certificate:
    """Flag mode with refusals: the certified lambda of lowest cost, refusals priced
    (:func:`racer.calibration.priced_threshold`)."""
    lam = priced_threshold(
        entry, result.threshold, model_costs=settings.costs, refusal_cost=settings.refusal_cost
    )
    curve = result.curve
    loss_total = curve.loss_total_at(lam)
    risk_bound = (
        result.risk_bound  # R(lam) <= R(RCPS lambda), so its bound still holds
        if result.bound == "wsr"
        else float(upper_bound(result.bound, loss_total, curve.n, delta))
    )
    return Certificate(lam, None, loss_total / curve.n, risk_bound, result.bound, curve)


def rows_by_group(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Each group's rows in increasing order (one stable sort of the codes)."""
    narrow = codes.astype(np.int16) if n_groups <= np.iinfo(np.int16).max else codes
    counts = np.bincount(codes, minlength=n_groups)
    return np.split(np.argsort(narrow, kind="stable"), np.cumsum(counts)[:-1])


def certify_groups(
    names: tuple[str, ...],
    codes: np.ndarray,
    settings: FitSettings,
    bound: str,
    certify_rows: Callable[[np.ndarray, float], Certificate],
) -> tuple[dict[str, GroupCalibration], np.ndarray]:
    """One certificate per group (small groups raised or pooled); rows' group codes.

    ``certify_rows(rows, delta)`` certifies one group's rows at its level.
    """
    alpha, delta = settings.alpha, settings.delta
    counts = np.bincount(codes, minlength=len(names))
    level = group_delta(delta, len(names), settings.group_guarantee)
    bound_name = "crc" if settings.guarantee == "expectation" else bound
    needed = bounds_module.n_needed(bound_name, alpha, level)
    small = too_small(counts, needed)
    pooled: tuple[str, ...] = ()
    if small.any():
        if settings.small_groups == "raise":
            small_names = [str(name) for name in np.asarray(names)[small]]
            raise InfeasibleCalibrationError(
                small_groups_message(small_names, counts[small], needed, alpha, level)
            )
        names, codes, pooled = pool_small_groups(names, codes, small)
        level = group_delta(delta, len(names), settings.group_guarantee)
    table: dict[str, GroupCalibration] = {}
    for name, rows in zip(names, rows_by_group(codes, len(names)), strict=True):
        try:
            certificate = certify_rows(rows, level)
        except InfeasibleCalibrationError as error:
            raise InfeasibleCalibrationError(f"Group {name!r} (n={rows.size}): {error}") from None
        table[name] = GroupCalibration(
            name=name,
            n=int(rows.size),
            threshold=certificate.threshold,
            abstain_threshold=certificate.abstain_threshold,
            empirical_risk=certificate.empirical_risk,
            risk_bound=certificate.risk_bound,
            delta=level,
            members=pooled if name == POOLED else (),
        )
    return table, codes


def group_thresholds(
    table: dict[str, GroupCalibration], groups: Any, n: int, strict: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each query's lambda (and, in strict mode, tau) from its group's certificate."""
    if groups is None:
        raise ValueError(
            f"This RACER was calibrated per group ({len(table)} groups); pass "
            "groups=, one group per query, to predict and risk."
        )
    names, codes = encode_groups(groups, n)
    unseen = [name for name in names if name not in table]
    if unseen and POOLED not in table:
        raise ValueError(
            f"Groups {unseen} were not seen at fit and there is no pooled certificate to "
            f"serve them (groups seen: {sorted(table)}). Refit with calibration data "
            "for them, or with small_groups='pool' and at least one small group."
        )
    certificates = [table.get(name, table.get(POOLED)) for name in names]
    thresholds = np.array([c.threshold for c in certificates if c is not None])[codes]
    if not strict:
        return thresholds, None
    taus = np.array([c.abstain_threshold for c in certificates if c is not None], dtype=float)
    return thresholds, taus[codes]
