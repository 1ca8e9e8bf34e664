"""Per-slice risk and what users receive, per abstention mode, over split trials.

What ``racer evaluate`` reports next to the marginal certificate (METHOD.md sections 5d
and 5e): for each alpha, each abstention mode asked for (``--abstention flag,strict,off``)
and each calibration (marginal; per group with ``--group-by``), :class:`racer.RACER` is
fitted on the calibration rows of the first split trials and serves their test rows.
The served losses, groups and decisions of those test rows, pooled over the trials, give

- the per-group risk table (:func:`racer.groups.group_risk_table`): a group above alpha
  under the marginal certificate is named;
- the four served rates (:func:`racer.diagnostics.served_rates`): refusal rate,
  queries without a right answer, flag rate and flag precision.

A trial whose calibration cannot certify alpha is counted and left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from racer.diagnostics import served_rates
from racer.estimator import RACER
from racer.evaluation.trials import TrialPlan
from racer.exceptions import InfeasibleCalibrationError
from racer.groups import group_risk_table

ABSTENTION_MODES = ("flag", "strict", "off")
#: The split trials the slices are measured on (each fits RACER once per setting).
SLICE_TRIALS = 20


@dataclass(frozen=True)
class SliceSettings:
    """What the slice comparison runs.

    Attributes
    ----------
    modes : tuple of str
        Abstention modes to compare (``"flag"``, ``"strict"``, ``"off"``).
    group_by : str or None
        The name of the groups' source (reported); None: no groups.
    group_guarantee, small_groups : str
        Passed to :class:`racer.RACER` for the per-group calibration.
    n_trials : int
        Split trials measured (at most the evaluation's).
    """

    modes: tuple[str, ...] = ("flag",)
    group_by: str | None = None
    group_guarantee: str = "each"
    small_groups: str = "raise"
    n_trials: int = SLICE_TRIALS


def served_trials(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    plan: TrialPlan,
    n_trials: int,
    fit: Callable[[np.ndarray], RACER | None],
    per_group: bool,
) -> dict[str, Any]:
    """Test rows served over the first ``n_trials`` split trials, pooled.

    ``fit(rows)`` returns RACER calibrated on ``rows`` (None when it cannot certify).

    Returns
    -------
    dict
        ``losses``, ``groups`` (or None), ``decision`` (n, M + 1), ``labels`` of the
        pooled test rows, and ``certified`` (trials whose calibration certified).
    """
    cal_rows, test_rows = plan.split_rows()
    losses, served_groups, decisions, served_labels = [], [], [], []
    certified = 0
    for t in range(min(n_trials, plan.n_trials)):
        estimator = fit(cal_rows[t])
        if estimator is None:
            continue
        certified += 1
        rows = test_rows[t]
        row_groups = None if groups is None or not per_group else groups[rows]
        decision = estimator.predict(scores[rows], groups=row_groups, include_abstain=True)
        losses.append(estimator.served_losses(scores[rows], labels[rows], groups=row_groups))
        decisions.append(decision)
        served_labels.append(labels[rows])
        if groups is not None:
            served_groups.append(groups[rows])
    return {
        "losses": np.concatenate(losses) if losses else np.empty(0),
        "groups": np.concatenate(served_groups) if served_groups else None,
        "decision": np.concatenate(decisions) if decisions else None,
        "labels": np.concatenate(served_labels) if served_labels else None,
        "certified": certified,
    }


def slice_record(
    served: dict[str, Any], mode: str, calibration: str, alpha: float, n_trials: int
) -> dict[str, Any]:
    """One row of the comparison: risk, sizes, served rates and the per-group table."""
    record: dict[str, Any] = {
        "alpha": alpha,
        "mode": mode,
        "calibration": calibration,
        "trials": n_trials,
        "trials_certified": served["certified"],
    }
    if served["decision"] is None:
        return {**record, "risk": None, "groups": None, "above_alpha": []}
    rates = served_rates(mode, served["decision"], served["labels"])
    invoked = served["decision"][:, 1:]
    if mode == "strict":
        invoked = invoked & ~served["decision"][:, [0]]
    record.update(
        risk=float(served["losses"].mean()),
        mean_set_size=float(invoked.sum(axis=1).mean()),
        **{k: v for k, v in rates.as_dict().items() if k != "n"},
        n_served=rates.n,
    )
    if served["groups"] is None:
        return {**record, "groups": None, "above_alpha": []}
    table = group_risk_table(served["losses"], served["groups"], alpha)
    rows = table.rows()
    return {**record, "groups": rows, "above_alpha": [r["group"] for r in rows if r["above_alpha"]]}


def fit_or_none(
    rows: np.ndarray,
    *,
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    estimator: RACER,
    train: tuple[np.ndarray | None, np.ndarray | None] | None,
) -> RACER | None:
    """``estimator`` fitted on ``rows`` (per group when ``groups``); None when infeasible."""
    train_scores, train_labels = train or (None, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the rates are reported instead
            return estimator.fit(
                scores[rows],
                labels[rows],
                groups=None if groups is None else groups[rows],
                train_scores=train_scores,
                train_labels=None if train_scores is None else train_labels,
            )
    except InfeasibleCalibrationError:
        return None


def evaluate_slices(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    plan: TrialPlan,
    *,
    alphas: tuple[float, ...],
    delta: float,
    settings: SliceSettings,
    train_scores: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    progress: Callable[..., None] | None = None,
) -> list[dict[str, Any]]:
    """Every (alpha, mode, calibration) row of the slice comparison.

    Parameters
    ----------
    scores, labels : numpy.ndarray, shape (n, M)
        The evaluation pool (rows with every label known).
    groups : numpy.ndarray of str, shape (n,), optional
        Each pool query's group; without them only marginal calibration runs and no
        per-group table is made.
    plan : TrialPlan
        The evaluation's split trials (the first ``settings.n_trials`` are used).
    alphas, delta : the evaluation's levels.
    settings : SliceSettings
    train_scores, train_labels : numpy.ndarray, optional
        Cross-fitted scores and labels of the training split: strict mode's front.
    progress : callable, optional
        Called as ``progress(message)`` before each setting.

    Returns
    -------
    list of dict
        See :func:`slice_record`.
    """
    calibrations = ("marginal",) if groups is None else ("marginal", "per group")
    records = []
    for alpha in alphas:
        for mode in settings.modes:
            for calibration in calibrations:
                if progress is not None:
                    progress(f"slices: alpha={alpha:g}, {mode}, {calibration}")
                per_group = calibration == "per group"

                fit = partial(
                    fit_or_none,
                    scores=scores,
                    labels=labels,
                    groups=groups if per_group else None,
                    estimator=RACER(
                        alpha,
                        delta,
                        abstention=False if mode == "off" else mode,
                        group_guarantee=settings.group_guarantee,
                        small_groups=settings.small_groups,
                    ),
                    train=(train_scores, train_labels) if mode == "strict" else None,
                )
                served = served_trials(
                    scores, labels, groups, plan, settings.n_trials, fit, per_group
                )
                n_trials = min(settings.n_trials, plan.n_trials)
                records.append(slice_record(served, mode, calibration, alpha, n_trials))
    return records
