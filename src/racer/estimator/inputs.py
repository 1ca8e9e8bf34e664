"""The calibration inputs of a fit, checked once on the raw arrays.

Scores and labels are validated without copies (a float64 array is used as given), and
what the checks learn (0/1 or graded labels, unknown labels, which rows are complete) is
kept, so that no later step of the fit scans the labels again for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from racer._validation import (
    check_model_names,
    check_scores,
    check_vector,
    checked_labels,
    column_names,
)
from racer.groups import encode_groups


@dataclass(frozen=True)
class CalibrationInputs:
    """Checked calibration data (rows with unknown labels left out with ``"drop"``).

    Attributes
    ----------
    scores, labels : numpy.ndarray, shape (n, M)
        Router scores in [0, 1]; 0/1 labels or graded quality, NaN = unknown.
    binary : bool
        Whether every known label is 0 or 1.
    known : numpy.ndarray of bool, shape (n,), or None
        Rows whose every label is known; None when all are.
    n_unknown : int
        Rows with an unknown label (before any was dropped).
    abstain_scores : numpy.ndarray, shape (n,), or None
        Given abstain scores.
    group_names : tuple of str or None
        The groups, sorted (None without ``groups``).
    group_codes : numpy.ndarray of int, shape (n,), or None
        Each row's position in ``group_names``.
    model_names : list of str or None
        Column names, if any.
    """

    scores: np.ndarray
    labels: np.ndarray
    binary: bool
    known: np.ndarray | None
    n_unknown: int
    abstain_scores: np.ndarray | None
    group_names: tuple[str, ...] | None
    group_codes: np.ndarray | None
    model_names: list[str] | None


def known_rows(labels: np.ndarray) -> np.ndarray:
    """Rows whose every label is known (one NaN-propagating sum first: no per-row pass
    unless some label is NaN)."""
    if not np.isnan(np.sum(labels)):
        return np.ones(len(labels), dtype=bool)
    return ~np.isnan(labels).any(axis=1)


def checked_abstain_scores(abstain_scores: Any, n: int, name: str = "abstain_scores") -> Any:
    """Given abstain scores as a checked vector of ``n`` values in [0, 1]; None stays None."""
    return None if abstain_scores is None else check_vector(abstain_scores, name, n, 0, 1)


def require_abstain_scores(abstain_score: str, abstain_scores: Any) -> None:
    """``abstain_score="given"`` needs the scores; refuse a call without them."""
    if abstain_score == "given" and abstain_scores is None:
        raise ValueError('abstain_score="given" needs abstain_scores=, one per query.')


def calibration_inputs(
    scores: Any,
    labels: Any,
    *,
    groups: Any,
    abstain_scores: Any,
    model_names: Sequence[str] | None,
    missing: str,
) -> CalibrationInputs:
    """Check the calibration data once; with ``missing="drop"`` leave out unknown rows.

    Raises
    ------
    ValueError
        With a message that says what was expected and what came.
    """
    names = model_names if model_names is not None else column_names(scores)
    check_model_names(column_names(labels), names)
    score_matrix = check_scores(scores)
    checked = checked_labels(labels, score_matrix.shape)
    label_matrix = checked.values
    group_names, group_codes = (None, None)
    if groups is not None:
        group_names, group_codes = encode_groups(np.asarray(groups), len(score_matrix))
    abstain_scores = checked_abstain_scores(abstain_scores, len(score_matrix))
    known = known_rows(label_matrix) if checked.has_unknown else None
    n_unknown = 0 if known is None else len(known) - int(np.count_nonzero(known))
    if n_unknown == len(label_matrix):
        raise ValueError(
            f"All {n_unknown} calibration rows have an unknown (NaN) label; RACER "
            "needs queries whose outcome is known for at least some rows."
        )
    binary = checked.binary
    if missing == "drop" and known is not None and n_unknown:
        warnings.warn(
            f"Left out {n_unknown} of {len(known)} calibration rows with an unknown (NaN) "
            'label (missing="drop"): the guarantee now assumes labels are missing at '
            'random. missing="worst_case" (the default) keeps it whatever the reason.',
            UserWarning,
            stacklevel=3,
        )
        score_matrix, label_matrix = score_matrix[known], label_matrix[known]
        abstain_scores = None if abstain_scores is None else abstain_scores[known]
        group_codes = None if group_codes is None else group_codes[known]
        binary = checked_labels(label_matrix, label_matrix.shape).binary
        known = None
    return CalibrationInputs(
        scores=score_matrix,
        labels=label_matrix,
        binary=binary,
        known=known,
        n_unknown=n_unknown,
        abstain_scores=abstain_scores,
        group_names=group_names,
        group_codes=group_codes,
        model_names=None if names is None else [str(m) for m in names],
    )
