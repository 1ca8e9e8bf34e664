"""Input checks with messages that say what was expected, what came, and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def check_level(name: str, value: Any) -> float:
    """Return ``value`` as a float strictly between 0 and 1, or raise.

    Only real numbers are accepted: a string such as ``"0.1"`` (often a value read from
    a config file or the command line and never converted) or a bool is refused rather
    than silently converted.
    """
    if isinstance(value, str | bytes | bool | np.bool_):
        raise ValueError(
            f"{name} must be a number in (0, 1), got {type(value).__name__} {value!r}; "
            f"convert it first, e.g. {name}=float(value)."
        )
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.") from None
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}.")
    return level


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, or raise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def column_names(values: Any) -> list[str] | None:
    """Column names of a data frame (pandas, polars, ...), else None."""
    columns = getattr(values, "columns", None)
    return None if columns is None else [str(c) for c in columns]


def check_matrix(values: Any, name: str) -> np.ndarray:
    """Return a 2-D float array, or raise with a reshape hint."""
    try:
        matrix = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got values of type {type(values)}.") from None
    if matrix.ndim != 2:
        raise ValueError(
            f"Expected a 2D array of {name} with shape (n_queries, n_models), got a "
            f"{matrix.ndim}D array of shape {matrix.shape} instead. For a single query use "
            "array.reshape(1, -1)."
        )
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {matrix.shape}); at least one row and model.")
    return matrix


def check_scores(values: Any, name: str = "scores") -> np.ndarray:
    """Router scores: a finite 2-D array in [0, 1]."""
    scores = check_matrix(values, name)
    low, high = scores.min(), scores.max()  # NaN propagates into both
    if not (low >= 0 and high <= 1):
        bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} must be finite numbers in [0, 1]; found {int(bad.sum())} invalid "
            f"value(s), first {float(scores[row, col])} at row {row}, column {col}. Pass "
            "probabilities (for example predict_proba output), not logits or NaN."
        )
    return scores


@dataclass(frozen=True)
class CheckedLabels:
    """A checked label matrix and what the checks learned about it.

    Attributes
    ----------
    values : numpy.ndarray, shape (n, M)
        The labels (not copied when they were a float64 array already).
    binary : bool
        Whether every known value is exactly 0 or 1.
    has_unknown : bool
        Whether some label is NaN.
    """

    values: np.ndarray
    binary: bool
    has_unknown: bool


def checked_labels(values: Any, shape: tuple[int, int]) -> CheckedLabels:
    """Labels: 0/1 or graded quality in [0, 1], NaN meaning unknown.

    0/1 labels without NaN (the common case) are recognised by two counts; only other
    labels pay for the range and NaN checks.
    """
    labels = check_matrix(values, "labels")
    if labels.shape != shape:
        raise ValueError(
            f"labels have shape {labels.shape} but scores have shape {shape}; "
            "both need one row per query and one column per model, in the same order."
        )
    zero_or_one = int(np.count_nonzero(labels == 0)) + int(np.count_nonzero(labels == 1))
    if zero_or_one == labels.size:
        return CheckedLabels(labels, binary=True, has_unknown=False)
    low, high = np.fmin.reduce(labels, axis=None), np.fmax.reduce(labels, axis=None)
    if low < 0 or high > 1:
        outside = labels[(labels < 0) | (labels > 1)]
        raise ValueError(
            "labels must be 0/1 (or a graded quality in [0, 1]) with NaN for unknown; "
            f"found {outside.size} value(s) outside [0, 1], e.g. {outside[:3]}."
        )
    n_unknown = int(np.count_nonzero(np.isnan(labels)))
    return CheckedLabels(
        labels, binary=zero_or_one == labels.size - n_unknown, has_unknown=n_unknown > 0
    )


def check_labels(values: Any, shape: tuple[int, int]) -> np.ndarray:
    """Labels: 0/1 or graded quality in [0, 1], NaN meaning unknown (:func:`checked_labels`)."""
    return checked_labels(values, shape).values


def check_vector(values: Any, name: str, length: int, low: float, high: float) -> np.ndarray:
    """A finite 1-D array of ``length`` values within [low, high]."""
    vector = np.asarray(values, dtype=float)
    if vector.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {vector.shape}.")
    if not np.all(np.isfinite(vector)) or np.any((vector < low) | (vector > high)):
        raise ValueError(f"{name} must be finite numbers in [{low}, {high}].")
    return vector


def check_model_names(expected: Sequence[str] | None, given: Sequence[str] | None) -> None:
    """Refuse model names at predict time that differ from those seen at fit time."""
    if expected is None or given is None:
        return
    if list(expected) != list(given):
        missing = [m for m in expected if m not in given]
        extra = [m for m in given if m not in expected]
        detail = f" Missing: {missing}; unexpected: {extra}." if missing or extra else ""
        raise ValueError(
            f"Model names differ from those seen at fit: expected {list(expected)}, got "
            f"{list(given)}.{detail} Reorder or select the columns to match."
        )
