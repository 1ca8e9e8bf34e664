"""Family-wise error control for Learn-then-Test: which hypotheses may be rejected.

Each configuration ``j`` of a finite, pre-specified grid has a p-value ``p_j`` for the
null hypothesis ``H_j: risk(theta_j) > alpha``. A procedure here rejects a subset of the
nulls such that the probability of rejecting *any* true null is at most ``delta``; every
rejected configuration is then certified, simultaneously. Each procedure is a small
pure function returning a boolean mask; :func:`control_fwer` dispatches by name.

- Bonferroni: reject ``p_j <= delta / K``.
- Holm: sort the p-values increasingly; reject the ``i``-th smallest while
  ``p_(i) <= delta / (K - i)`` (0-based), stop at the first failure. Uniformly more
  powerful than Bonferroni, valid under any dependence.
- Fixed sequence: test along an order fixed in advance, each at level ``delta``,
  and stop at the first p-value above it. With several chains (a list of orders), each
  chain gets ``delta / len(chains)`` (Bonferroni across chains, fixed sequence within).
  Valid because the first true null met on a chain is tested at its full share, and a
  chain rejects a true null only if that first one is rejected. The order must not
  depend on the calibration data (take it from the grid or the training split).

Examples
--------
>>> import numpy as np
>>> from racer.fwer import control_fwer
>>> p = np.array([0.001, 0.04, 0.2, 0.02])
>>> control_fwer(p, 0.1, "bonferroni").astype(int)
array([1, 0, 0, 1])
>>> control_fwer(p, 0.1, "fixed_sequence").astype(int)
array([1, 1, 0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FWER_METHODS = ("fixed_sequence", "bonferroni", "holm")


def bonferroni(p_values: np.ndarray, delta: float) -> np.ndarray:
    """Reject every hypothesis with ``p <= delta / K``."""
    p = np.asarray(p_values, dtype=float)
    return p <= delta / max(p.size, 1)


def holm(p_values: np.ndarray, delta: float) -> np.ndarray:
    """Holm's step-down procedure (ties broken by index)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    levels = delta / (p.size - np.arange(p.size))
    failing = np.flatnonzero(p[order] > levels)
    n_rejected = failing[0] if failing.size else p.size
    rejected = np.zeros(p.size, dtype=bool)
    rejected[order[:n_rejected]] = True
    return rejected


def _as_chains(order: np.ndarray | Sequence[np.ndarray] | None, size: int) -> list[np.ndarray]:
    if order is None:
        return [np.arange(size)]
    if isinstance(order, np.ndarray) and order.ndim == 1:
        return [order.astype(np.intp)]
    if isinstance(order, np.ndarray) and order.ndim == 2:
        return [row.astype(np.intp) for row in order]
    chains = [np.asarray(chain, dtype=np.intp) for chain in order]
    if chains and all(chain.ndim == 0 for chain in chains):
        return [np.asarray(order, dtype=np.intp)]
    return chains


def fixed_sequence(
    p_values: np.ndarray,
    delta: float,
    order: np.ndarray | Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Fixed-sequence testing along one order, or along several chains sharing ``delta``.

    Parameters
    ----------
    p_values : numpy.ndarray, shape (K,)
        One p-value per configuration.
    delta : float
        Family-wise error level.
    order : array of int, list of arrays of int, or None
        The testing order (indices into ``p_values``), or several chains, each tested
        at ``delta / len(chains)``. ``None`` tests in index order. Indices left out of
        every chain are never rejected.

    Returns
    -------
    numpy.ndarray of bool, shape (K,)
    """
    p = np.asarray(p_values, dtype=float)
    chains = _as_chains(order, p.size)
    level = delta / max(len(chains), 1)
    rejected = np.zeros(p.size, dtype=bool)
    for chain in chains:
        if chain.size and (chain.min() < 0 or chain.max() >= p.size):
            raise ValueError(f"order holds indices outside [0, {p.size}).")
        failing = np.flatnonzero(p[chain] > level)
        rejected[chain[: failing[0] if failing.size else chain.size]] = True
    return rejected


def control_fwer(
    p_values: np.ndarray,
    delta: float,
    method: str = "fixed_sequence",
    order: np.ndarray | Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Reject hypotheses with family-wise error at most ``delta``.

    Parameters
    ----------
    p_values : numpy.ndarray, shape (K,)
        P-values of ``H_j: risk(theta_j) > alpha``.
    delta : float
        Family-wise error level, in (0, 1).
    method : {"fixed_sequence", "bonferroni", "holm"}
        The procedure.
    order : array of int or list of arrays, optional
        The testing order(s) of ``"fixed_sequence"`` (see :func:`fixed_sequence`);
        ignored by the others. Never derive it from the calibration data.

    Returns
    -------
    numpy.ndarray of bool, shape (K,)
        True where the configuration is certified.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}.")
    if method == "fixed_sequence":
        return fixed_sequence(p_values, delta, order)
    if method == "bonferroni":
        return bonferroni(p_values, delta)
    if method == "holm":
        return holm(p_values, delta)
    raise ValueError(f"method must be one of {FWER_METHODS}, got {method!r}.")
