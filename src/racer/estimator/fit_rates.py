"""What the calibration queries receive at the fitted thresholds (the fit's diagnostics).

Read from the levels the fit already built (:mod:`racer.estimator.levels`) instead of
predicting the calibration set again: with 0/1 labels in flag and off modes a query's
served models hold a right answer iff its first good model has joined
(``first_good <= lambda``), and the set sizes are one comparison of the entry levels. The
rates are those of :mod:`racer.diagnostics`, equal to
``served_rates(mode, decision, labels)`` of the served decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from racer.calibration import StrictSplit
from racer.diagnostics import ServedRates, rates_of_outcomes, served_rates
from racer.estimator.levels import SetLevels
from racer.losses import unanswerable


@dataclass(frozen=True)
class FitRates:
    """Set sizes and served rates of the calibration queries.

    Attributes
    ----------
    mean_set_size : float
        Mean number of models called per query.
    rates : ServedRates
        Refusal rate, share without a right answer, flag rate, flag precision.
    unanswerable_share : float
        Share of queries no model answers under every completion of unknown labels.
    """

    mean_set_size: float
    rates: ServedRates
    unanswerable_share: float


def _per_row(values: Any) -> Any:
    """A per-row threshold as a column (broadcasts over the candidates); a scalar as is."""
    return np.reshape(values, (-1, 1)) if np.ndim(values) else values


def calibration_rates(
    mode: str,
    levels: SetLevels | StrictSplit,
    labels: np.ndarray,
    known: np.ndarray | None,
    thresholds: Any,
    taus: Any = None,
    *,
    never_empty: bool = False,
) -> FitRates:
    """The rates of the served decisions at ``thresholds`` (one lambda, or one per row).

    Parameters
    ----------
    mode : {"flag", "strict", "off"}
        The abstention mode.
    levels : SetLevels or StrictSplit
        The fit's levels of the calibration rows.
    labels : numpy.ndarray, shape (n, M)
        Their labels (NaN = unknown).
    known : numpy.ndarray of bool, shape (n,), or None
        Rows whose every label is known (None: all).
    thresholds, taus : float or numpy.ndarray of shape (n,)
        The lambda (and strict mode's tau) of every row.
    never_empty : bool
        Whether every set holds a model (off mode, flag mode without refusals).

    Returns
    -------
    FitRates
    """
    if isinstance(levels, StrictSplit) or levels.first_good is None:
        decision = _decision(levels, thresholds, taus)
        return FitRates(
            mean_set_size=np.count_nonzero(decision[:, 1:]) / len(decision),
            rates=served_rates(mode, decision, labels),
            unanswerable_share=float(np.mean(unanswerable(labels))),
        )
    lam = _per_row(thresholds)
    inside = levels.entry <= lam  # contiguous: faster than comparing the model columns alone
    flag_raised = inside[:, 0]  # column 0 is +inf in off mode
    n = len(inside)
    n_invoked = np.count_nonzero(inside) - np.count_nonzero(flag_raised)
    # never-empty sets hold the top model at level -inf: every query is answered
    answered = np.ones(n, dtype=bool) if never_empty else inside[:, 1:].any(axis=1)
    flagged = flag_raised & answered if mode == "flag" else np.zeros(n, dtype=bool)
    no_good = levels.first_good == np.inf
    return FitRates(
        mean_set_size=n_invoked / n,
        rates=rates_of_outcomes(answered, flagged, levels.first_good > np.ravel(lam)),
        unanswerable_share=float(np.mean(no_good if known is None else no_good & known)),
    )


def _decision(levels: SetLevels | StrictSplit, thresholds: Any, taus: Any) -> np.ndarray:
    """The served decisions of the calibration rows, from their entry levels."""
    lam = _per_row(thresholds)
    if isinstance(levels, StrictSplit):
        abstained = levels.abstain_score >= taus
        models = (levels.model_entry <= lam) & ~abstained[:, None]
        return np.column_stack([abstained, models])
    return levels.entry <= lam
