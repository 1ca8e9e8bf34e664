"""One vocabulary for what a served decision says, and why a query was refused.

Every tool (the gateway, ``racer route``, ``racer replay``, the reports) describes a
decision with the same two words (``docs/method.md`` section 3, "One vocabulary"):

- **refused**: no model is called. In mode ``flag`` the calibrated set is empty; in mode
  ``strict`` the abstain score reached the abstention threshold tau. Mode ``off`` never
  refuses.
- **flagged**: an answer is served and the abstain flag is raised ("possibly no model can
  answer this"): mode ``flag`` only, when the set holds the abstain option and models.

A refusal states its actual reason (the calibrated level and the best model's score),
never a guess about the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from racer.sets import augmented_scores

__all__ = ["decision_outcomes", "refusal_reason", "refusal_reasons"]


def decision_outcomes(decision: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of a served decision are refused, and which are flagged answers.

    Parameters
    ----------
    decision : numpy.ndarray of bool, shape (n, M + 1)
        ``RACER.predict(..., include_abstain=True)``: column 0 the flag or the abstention,
        columns 1..M the models called.
    mode : {"flag", "strict", "off"}
        The abstention mode the decision was calibrated for.

    Returns
    -------
    refused, flagged : numpy.ndarray of bool, shape (n,)
        ``refused``: no model is called. ``flagged``: models are called and the flag is
        raised (mode ``flag`` only); never both.
    """
    decision = np.asarray(decision, dtype=bool)
    refused = ~decision[:, 1:].any(axis=1)
    flagged = decision[:, 0] & ~refused if mode == "flag" else np.zeros(len(decision), bool)
    return refused, flagged


def _pair(value: float, level: float) -> tuple[str, str]:
    """Both numbers with the fewest decimals (at least 3) that tell them apart."""
    for digits in range(3, 8):
        if round(value, digits) != round(level, digits):
            break
    return f"{value:.{digits}f}", f"{level:.{digits}f}"


def refusal_reason(
    scores: Sequence[float],
    model_names: Sequence[str],
    *,
    mode: str,
    threshold: float,
    family: str = "threshold",
    abstain_threshold: float | None = None,
    abstain_score: float | None = None,
) -> str:
    """Why one query was refused, in words, with the numbers that decided it.

    Parameters
    ----------
    scores : sequence of float, length M
        The router's score of each model for the query.
    model_names : sequence of str, length M
        The models, in the order of ``scores``.
    mode : {"flag", "strict"}
        The abstention mode (mode ``off`` never refuses).
    threshold : float
        The calibrated lambda.
    family : str, default="threshold"
        The nested set family; for ``threshold`` a model enters the set when its score is
        at least ``1 - lambda``.
    abstain_threshold, abstain_score : float, optional
        tau and the query's abstain score ``s_0`` (mode ``strict``).

    Examples
    --------
    >>> refusal_reason([0.92, 0.4], ["gpt-4", "small"], mode="flag", threshold=0.0791)
    "no model's score cleared the calibrated threshold 0.921 (best: gpt-4 0.920)"
    """
    best = int(np.argmax(scores))
    best_score = float(scores[best])
    if mode == "strict":
        tau = float("nan") if abstain_threshold is None else float(abstain_threshold)
        if abstain_score is None:
            return (
                f"the abstain score reached the calibrated abstention threshold {tau:.3f} "
                f"(best: {model_names[best]} {best_score:.3f})"
            )
        s0, level = _pair(float(abstain_score), tau)
        return (
            f"the abstain score {s0} reached the calibrated abstention threshold {level} "
            f"(best: {model_names[best]} {best_score:.3f})"
        )
    if family == "threshold":
        score, level = _pair(best_score, 1.0 - float(threshold))
        return (
            f"no model's score cleared the calibrated threshold {level} "
            f"(best: {model_names[best]} {score})"
        )
    return (
        f"no model entered the calibrated {family} set at lambda = {float(threshold):.4f} "
        f"(best: {model_names[best]} {best_score:.3f})"
    )


def refusal_reasons(
    calibration: Any,
    scores: np.ndarray,
    model_names: Sequence[str],
    refused: np.ndarray,
    abstain_scores: np.ndarray | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
) -> list[str | None]:
    """:func:`refusal_reason` for each refused row; None for the others.

    Parameters
    ----------
    calibration : RACER
        The fitted estimator (``abstention_mode_``, ``threshold_``, ``family``,
        ``abstain_threshold_``, ``abstain_score``; missing attributes take the defaults).
    scores : numpy.ndarray, shape (n, M)
        The router's scores.
    model_names : sequence of str
        The M models.
    refused : numpy.ndarray of bool, shape (n,)
        From :func:`decision_outcomes`.
    abstain_scores : numpy.ndarray, shape (n,), optional
        The learned abstain scores, when the calibration uses them.
    groups : sequence of str, optional
        Each row's group, for a per-group calibration: the levels in the reason are the
        group's own (``RACER.thresholds_for``).
    """
    scores = np.asarray(scores, dtype=float)
    mode = str(getattr(calibration, "abstention_mode_", "flag"))
    s0 = abstain_scores
    kind = getattr(calibration, "abstain_score", "max")
    if s0 is None and kind in ("max", "product") and len(scores):
        s0 = augmented_scores(scores, kind)[:, 0]
    if getattr(calibration, "groups_", None) is None:
        lambdas = np.full(len(scores), float(calibration.threshold_))
        tau = getattr(calibration, "abstain_threshold_", None)
        taus = None if tau is None else np.full(len(scores), float(tau))
    else:
        lambdas, taus = calibration.thresholds_for(len(scores), groups)
    return [
        refusal_reason(
            scores[i],
            model_names,
            mode=mode,
            threshold=float(lambdas[i]),
            family=str(getattr(calibration, "family", "threshold")),
            abstain_threshold=None if taus is None else float(taus[i]),
            abstain_score=None if s0 is None else float(s0[i]),
        )
        if is_refused
        else None
        for i, is_refused in enumerate(np.asarray(refused, dtype=bool))
    ]
