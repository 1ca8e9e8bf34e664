"""The loss of what is served, for each abstention mode.

What RACER certifies must be what the user receives, so calibration, evaluation, the
gateway's feedback and its monitor all use :func:`served_losses`.

- ``"flag"`` (the paper's augmented set): serves the answer of C plus ``abstain_flag`` =
  1{0 in C+}; an empty C is a refusal. Loss 1{C+ and Y+ disjoint}.
- ``"strict"``: abstains (no model called) iff s_0 >= tau, otherwise serves C. Loss
  1{abstained and Y* non-empty} + 1{not abstained and C misses Y*}.
- ``"off"``: serves C, never empty. Loss 1{Y* non-empty and C misses Y*}.

``Y*`` is the set of good models, ``Y+ = Y*`` or ``{0}`` when ``Y*`` is empty. Graded
quality ``q`` in [0, 1]: "C misses" becomes ``1 - max_{m in C} q_m``, and "Y* non-empty"
becomes "some q > 0".

Unknown labels (NaN) count at their worst completion, the largest loss over every way
of filling them in (0 or 1 for 0/1 labels; any value in [0, 1] for graded quality). The
true loss is never larger, so a bound on these losses still bounds the true risk,
whatever the reason the labels are missing. For 0/1 labels that means: an unknown
invoked model is wrong, and a query is "possibly unanswerable" (which a flag or the
off mode forgives) only when every known label is 0 and every unknown one is invoked.
For graded quality an unknown value can be arbitrarily small but positive, so a query
with any unknown is never forgiven as unanswerable.

Examples
--------
>>> import numpy as np
>>> from racer.losses import served_losses
>>> decision = np.array([[True, True, True]])     # flag raised, both models called
>>> quality = np.array([[0.0, 0.0]])               # no model can answer
>>> served_losses("flag", decision, quality).tolist()
[0.0]
>>> served_losses("strict", np.array([[False, True, True]]), quality).tolist()
[1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

ABSTENTION_MODES = ("flag", "strict", "off")


def abstention_mode(value: Any) -> str:
    """The mode named by an ``abstention`` parameter: True is "flag", False is "off"."""
    if value is True or value is np.True_:
        return "flag"
    if value is False or value is np.False_ or value is None:
        return "off"
    if isinstance(value, str) and value in ABSTENTION_MODES:
        return value
    raise ValueError(
        f"abstention must be one of 'flag', 'strict', True (= 'flag') or False (= 'off'); "
        f"got {value!r}."
    )


def is_binary(quality: np.ndarray) -> bool:
    """Whether every known value is exactly 0 or 1 (NaN marks an unknown label)."""
    known = quality.size - int(np.count_nonzero(np.isnan(quality)))
    return int(np.count_nonzero(quality == 0)) + int(np.count_nonzero(quality == 1)) == known


def worst_case_quality(quality: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model quality with unknowns at 0, and the unknown and all-known-zero masks.

    Returns
    -------
    model_quality : numpy.ndarray, shape (n, M)
        ``quality`` with NaN replaced by 0 (the worst value for an invoked model).
    unknown : numpy.ndarray of bool, shape (n, M)
        Where the label is NaN.
    known_zero : numpy.ndarray of bool, shape (n,)
        True when every *known* label of the query is 0.
    """
    q = np.asarray(quality, dtype=float)
    unknown = np.isnan(q)
    model_quality = np.where(unknown, 0.0, q)
    known_zero = np.all((q == 0) | unknown, axis=1)
    return model_quality, unknown, known_zero


def unanswerable(quality: np.ndarray) -> np.ndarray:
    """Queries that no model answers under every completion of their unknown labels.

    A query counts only when all its labels are known and none is good (every value 0):
    with an unknown label the worst completion makes the query answerable by a model that
    is not called, so abstaining or flagging it is a loss whatever is done.

    Parameters
    ----------
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality; NaN = unknown.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
    """
    # NaN != 0, so a row with an unknown label is never all-zero
    return ~np.any(np.asarray(quality) != 0, axis=1)


def best_quality_steps(entry: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's entry levels in increasing order and its best quality so far.

    Parameters
    ----------
    entry : numpy.ndarray, shape (n, K)
        Entry levels of the candidates as the loss sees them.
    quality : numpy.ndarray, shape (n, K)
        Quality of each candidate (no NaN).

    Returns
    -------
    sorted_levels, running_best : numpy.ndarray, shape (n, K)
    """
    order = np.argsort(entry, axis=1, kind="stable")
    sorted_levels = np.take_along_axis(entry, order, 1)
    running_best = np.maximum.accumulate(np.take_along_axis(quality, order, 1), axis=1)
    return sorted_levels, running_best


def losses_on_grid(
    sorted_levels: np.ndarray, running_best: np.ndarray, lams: np.ndarray
) -> np.ndarray:
    """Losses ``1 - best quality in the set`` of every point (rows) at several lambdas
    (columns), from :func:`best_quality_steps`."""
    joined = (sorted_levels[:, :, None] <= lams[None, None, :]).sum(axis=1)
    best = np.take_along_axis(running_best, np.maximum(joined - 1, 0), axis=1)
    return 1.0 - np.where(joined > 0, best, 0.0)


def served_losses(
    mode: str, decision: np.ndarray, quality: np.ndarray, *, binary: bool | None = None
) -> np.ndarray:
    """Loss of every query's served decision under ``mode`` (see the module docstring).

    Parameters
    ----------
    mode : {"flag", "strict", "off"}
        The abstention mode.
    decision : numpy.ndarray of bool, shape (n, M + 1)
        Column 0: the abstain flag (flag), the abstain decision (strict; then no model
        is called, whatever the other columns say), ignored (off). Columns 1..M: the
        models invoked.
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality in [0, 1]; NaN = unknown (worst completion).
    binary : bool, optional
        Whether the known labels are 0/1 (completions in {0, 1}); inferred when None.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Losses in [0, 1].
    """
    decision = np.asarray(decision, dtype=bool)
    model_quality = np.asarray(quality, dtype=float)
    expected = (model_quality.shape[0], model_quality.shape[1] + 1)
    if decision.shape != expected:
        raise ValueError(
            f"decision must have shape (n, M + 1) = {expected} for quality of shape "
            f"{model_quality.shape}; got {decision.shape}."
        )
    mode = abstention_mode(mode)
    invoked = decision[:, 1:]
    if mode == "strict":
        invoked = invoked & ~decision[:, [0]]
    if np.isnan(np.sum(model_quality)):  # worst-case masks only when some label is unknown
        binary = is_binary(model_quality) if binary is None else binary
        model_quality, unknown, known_zero = worst_case_quality(model_quality)
        # unknowns that can still be set to "good" without being invoked make the query
        # answerable
        free_unknown = unknown & ~invoked if binary else unknown
        no_good = known_zero & ~free_unknown.any(axis=1)
    else:
        no_good = unanswerable(model_quality)
    best_invoked = np.max(model_quality, axis=1, where=invoked, initial=0.0)
    if mode == "flag":
        return 1.0 - np.maximum(best_invoked, decision[:, 0] & no_good)
    if mode == "strict":
        return np.where(decision[:, 0], (~no_good).astype(float), 1.0 - best_invoked)
    return np.where(no_good, 0.0, 1.0 - best_invoked)
