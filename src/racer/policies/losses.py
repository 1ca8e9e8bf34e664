"""Answer-level losses: the loss of what the user receives (METHOD.md section 8).

Pure functions of the served model per query, the models invoked, and the per-model
labels (or graded quality). Unknown outcomes (NaN) count worst case, so a bound on
these losses stays valid whatever the unknown outcomes were (METHOD.md section 5c).

- ``"error"``: 1{the served answer is wrong}; nothing served (refusal) is wrong.
- ``"regret"``: 1{served answer wrong and the reference's answer right}. Since
  acc(reference) - acc(system) <= regret risk, certifying regret <= alpha certifies at
  most alpha accuracy lost against the reference.
- ``"set"``: the misrouting loss of the invoked set: some model is right and no invoked
  model is. This is main's one definition, :func:`racer.losses.served_losses` in mode
  ``"off"`` (policies escalate instead of refusing), worst completion included.

With graded quality q in [0, 1] the losses are ``1 - q_served`` (error) and
``max(q_reference - q_served, 0)`` (regret), still upper bounds of the accuracy gap.

Unknowns, worst completion (the largest loss over every way of filling them in):
error counts an unknown served label as wrong; regret counts "served wrong and
reference right", so an unknown reference label counts as right and an unknown served
label as wrong, except when the served model *is* the reference, whose regret is 0
whatever its label.
"""

from __future__ import annotations

import numpy as np

from racer.losses import is_binary, served_losses

OBJECTIVES = ("set", "error", "regret")


def check_objective(objective: str, reference: int | None) -> None:
    """Raise a ValueError for an unknown objective or a regret without reference."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    if objective == "regret" and reference is None:
        raise ValueError('objective="regret" needs a reference model (the one not to fall below).')


def served_quality(served: np.ndarray, quality: np.ndarray, worst: float = 0.0) -> np.ndarray:
    """Quality of the served answer per query: ``worst`` where nothing or an unknown is served."""
    served = np.asarray(served)
    quality = np.asarray(quality, dtype=float)
    picked = quality[np.arange(quality.shape[0]), np.maximum(served, 0)]
    return np.where((served >= 0) & ~np.isnan(picked), picked, worst)


def answer_losses(
    objective: str,
    served: np.ndarray,
    invoked: np.ndarray,
    quality: np.ndarray,
    reference: int | None = None,
) -> np.ndarray:
    """Loss of each query's served answer under an answer-level objective.

    Parameters
    ----------
    objective : {"set", "error", "regret"}
        See the module docstring.
    served : array-like of int, shape (n,) or (n, K)
        The model column whose answer is returned, -1 for nothing (a refusal);
        a second axis holds K policies.
    invoked : array-like of bool, shape (n, M) or (n, K, M)
        The models called (only ``"set"`` reads it).
    quality : array-like of float, shape (n, M)
        0/1 labels or graded quality in [0, 1]; NaN = unknown (worst case).
    reference : int, optional
        The reference model's column, required by ``"regret"``.

    Returns
    -------
    numpy.ndarray of float in [0, 1], shape of ``served``

    Examples
    --------
    >>> labels = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> answer_losses("regret", np.array([1, 0, 0]), None, labels, reference=0)
    array([1., 1., 0.])
    """
    check_objective(objective, reference)
    quality = np.asarray(quality, dtype=float)
    served = np.asarray(served)
    columns = served if served.ndim == 2 else served[:, None]
    if objective == "set":
        invoked = np.asarray(invoked, dtype=bool)
        invoked = invoked if invoked.ndim == 3 else invoked[:, None, :]
        losses = _set_losses(invoked, quality)
    else:
        q_served = np.stack(
            [served_quality(columns[:, k], quality) for k in range(columns.shape[1])], axis=1
        )
        if objective == "error":
            losses = 1.0 - q_served
        else:
            q_reference = np.nan_to_num(quality[:, reference], nan=1.0)
            losses = np.maximum(q_reference[:, None] - q_served, 0.0)
            # Serving the reference itself loses nothing against it, whatever its label.
            losses = np.where(columns == reference, 0.0, losses)
    return losses if served.ndim == 2 else losses[:, 0]


def _set_losses(invoked: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Misrouting of invoked sets (n, K, M) by :func:`racer.losses.served_losses`, mode "off".

    One loss definition for the whole project: the worst completion of unknown labels
    is main's (an unknown the set itself called cannot make the query answerable
    while the set misses it).
    """
    n, k, m = invoked.shape
    decision = np.zeros((n * k, m + 1), dtype=bool)
    decision[:, 1:] = invoked.reshape(n * k, m)
    tiled = np.repeat(quality, k, axis=0)
    losses = served_losses("off", decision, tiled, binary=is_binary(quality))
    return losses.reshape(n, k)
