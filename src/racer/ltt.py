"""Learn-then-Test: certify configurations of a finite, pre-specified grid.

For configurations ``theta_1..theta_K`` chosen *before* the calibration data is seen,
each with losses in [0, 1] on the ``n`` calibration points, Learn-then-Test (Angelopoulos
et al., 2021) computes a p-value for every null ``H_j: R(theta_j) > alpha`` and rejects
a subset with family-wise error at most ``delta`` (:mod:`racer.fwer`). Every rejected
configuration then satisfies ``R(theta_j) <= alpha`` simultaneously with probability at
least ``1 - delta``, so *any* choice among them (here: the cheapest on the calibration
data) keeps the guarantee. Nothing needs the loss to be monotone.

p-values (valid, i.e. ``P(p <= u) <= u`` under the null):

- ``"binomial"``: ``P(Binom(n, alpha) <= k)`` for ``k`` losses out of ``n`` (0/1 losses);
- ``"hb"``: Hoeffding-Bentkus, for losses in [0, 1];
- ``"wsr"``: Waudby-Smith-Ramdas betting, for losses in [0, 1], one wealth process over
  a seeded permutation of the points.

Examples
--------
>>> import numpy as np
>>> from racer.ltt import learn_then_test
>>> rng = np.random.default_rng(0)
>>> losses = (rng.uniform(size=(400, 3)) < [0.02, 0.05, 0.3]).astype(float)
>>> result = learn_then_test(losses, alpha=0.1, delta=0.1, config_costs=[3.0, 1.0, 0.1])
>>> result.certified.tolist(), result.chosen
([True, True, False], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from racer import bounds
from racer.fwer import control_fwer

LTT_BOUNDS = ("binomial", "hb", "wsr")


def binomial_pvalues(loss_counts: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """Exact binomial p-values ``P(Binom(n, alpha) <= k)`` of integer loss counts ``k``."""
    return np.asarray(bounds.binomial_pvalue(loss_counts, n, alpha), dtype=float)


def ltt_pvalues(
    losses: np.ndarray,
    alpha: float,
    *,
    bound: str = "binomial",
    delta: float = 0.1,
    random_state: int | None = 0,
) -> np.ndarray:
    """One p-value per configuration (column) of a loss matrix.

    Parameters
    ----------
    losses : numpy.ndarray, shape (n, K)
        Loss of every calibration point (rows) under every configuration (columns),
        in [0, 1]; exactly 0 or 1 for ``"binomial"``.
    alpha : float
        Risk level of the nulls ``R > alpha``.
    bound : {"binomial", "hb", "wsr"}
        Which p-value.
    delta : float
        Sizes the WSR bets (unused by the others).
    random_state : int or None
        Seed of the WSR permutation of the points.

    Returns
    -------
    numpy.ndarray, shape (K,)
    """
    matrix = np.asarray(losses, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"losses must be a 2-D (n, K) array, got shape {matrix.shape}.")
    n = matrix.shape[0]
    if n == 0:
        raise ValueError("losses has no calibration rows.")
    if np.isnan(matrix).any() or matrix.min(initial=0.0) < 0 or matrix.max(initial=0.0) > 1:
        raise ValueError("losses must lie in [0, 1] without NaN.")
    if bound == "binomial":
        totals = matrix.sum(axis=0)
        if not np.all((matrix == 0) | (matrix == 1)):
            raise ValueError(
                "The 'binomial' p-value needs 0/1 losses; use bound='hb' or 'wsr' for graded "
                "losses in [0, 1]."
            )
        return binomial_pvalues(np.rint(totals).astype(np.int64), n, alpha)
    if bound == "hb":
        return np.asarray(bounds.hb_pvalue_bounded(matrix.sum(axis=0), n, alpha), dtype=float)
    if bound == "wsr":
        order = np.random.default_rng(random_state).permutation(n)
        return np.atleast_1d(bounds.wsr_pvalue(matrix[order], alpha, delta))
    raise ValueError(f"bound must be one of {LTT_BOUNDS}, got {bound!r}.")


def risk_cost_front(
    training_risk: np.ndarray, training_cost: np.ndarray, first: int | None = None
) -> np.ndarray:
    """A fixed-sequence order from a training split: its risk-cost front, safest first.

    Configurations sorted by increasing training risk (ties: cheaper first); one that a
    safer configuration already beats on cost is dropped, because each hypothesis tested
    spends family-wise error and a dominated configuration would never be chosen.
    ``first``, when given, is kept at its place whatever it costs. Computed from the
    training split only, the returned order is fixed before the calibration data is seen,
    so testing it by :func:`racer.fwer.fixed_sequence` at the full ``delta`` is valid
    (METHOD.md section 5b).

    Parameters
    ----------
    training_risk, training_cost : numpy.ndarray, shape (K,)
        Mean training loss and mean training cost of every configuration.
    first : int, optional
        A configuration always kept (for example "always call the fallback").

    Returns
    -------
    numpy.ndarray of int
        Positions into the configurations, by increasing training risk, each cheaper
        than every safer one kept before it (``first`` excepted).

    Examples
    --------
    >>> risk_cost_front(np.array([0.0, 0.1, 0.05, 0.2]), np.array([3.0, 1.0, 2.5, 2.0]))
    array([0, 2, 1])
    """
    risk = np.asarray(training_risk, dtype=float)
    cost = np.asarray(training_cost, dtype=float)
    order = np.lexsort((cost, risk))
    sorted_cost = cost[order]
    cheaper_than_safer = sorted_cost < np.minimum.accumulate(
        np.concatenate([[np.inf], sorted_cost[:-1]])
    )
    if first is not None:
        cheaper_than_safer |= order == first
    return order[cheaper_than_safer].astype(int)


@dataclass(frozen=True)
class LTTResult:
    """The certified configurations of a Learn-then-Test run.

    Attributes
    ----------
    p_values : numpy.ndarray, shape (K,)
        The p-value of each configuration's null ``R > alpha``.
    certified : numpy.ndarray of bool, shape (K,)
        The configurations whose null was rejected (risk <= alpha, jointly with
        probability >= 1 - delta).
    chosen : int or None
        The certified configuration with the lowest ``config_costs`` (ties: the
        earliest index); None when nothing is certified.
    method, bound : str
        The family-wise error procedure and the p-value.
    alpha, delta : float
        Risk level and failure probability.
    n : int
        Number of calibration points.
    """

    p_values: np.ndarray
    certified: np.ndarray
    chosen: int | None
    method: str
    bound: str
    alpha: float
    delta: float
    n: int


def ltt_certify(
    p_values: np.ndarray,
    *,
    n: int,
    alpha: float,
    delta: float,
    bound: str = "binomial",
    method: str = "fixed_sequence",
    order: np.ndarray | Sequence[np.ndarray] | None = None,
    config_costs: Sequence[float] | np.ndarray | None = None,
) -> LTTResult:
    """Certify from precomputed p-values (for callers that count losses themselves).

    See :func:`learn_then_test` for the parameters.
    """
    p = np.asarray(p_values, dtype=float)
    certified = control_fwer(p, delta, method, order)
    costs = np.zeros(p.size) if config_costs is None else np.asarray(config_costs, dtype=float)
    if costs.shape != p.shape:
        raise ValueError(f"config_costs has shape {costs.shape}; expected {p.shape}.")
    candidates = np.flatnonzero(certified)
    chosen = int(candidates[np.argmin(costs[candidates])]) if candidates.size else None
    return LTTResult(
        p_values=p,
        certified=certified,
        chosen=chosen,
        method=method,
        bound=bound,
        alpha=float(alpha),
        delta=float(delta),
        n=int(n),
    )


def learn_then_test(
    losses: np.ndarray,
    *,
    alpha: float,
    delta: float,
    bound: str = "binomial",
    method: str = "fixed_sequence",
    order: np.ndarray | Sequence[np.ndarray] | None = None,
    config_costs: Sequence[float] | np.ndarray | None = None,
    random_state: int | None = 0,
) -> LTTResult:
    """Certify the configurations of a pre-specified grid whose risk is at most ``alpha``.

    Guarantee: with probability at least ``1 - delta`` over the calibration draw, every
    configuration in ``certified`` has true risk at most ``alpha`` (the family-wise error
    of the procedure is at most ``delta`` and each p-value is valid), so the chosen one
    does too, whatever rule picked it among the certified.

    Parameters
    ----------
    losses : numpy.ndarray, shape (n, K)
        Loss of each calibration point under each configuration, in [0, 1].
    alpha, delta : float
        Risk level and family-wise error level.
    bound : {"binomial", "hb", "wsr"}
        The p-value (:func:`ltt_pvalues`).
    method : {"fixed_sequence", "bonferroni", "holm"}
        Family-wise error procedure (:func:`racer.fwer.control_fwer`).
    order : array of int or list of arrays, optional
        Testing order(s) for ``"fixed_sequence"``, fixed before the calibration data
        is seen (for example safest first by training risk); default: index order.
    config_costs : array-like of shape (K,), optional
        What the choice minimises among the certified (for example the mean calibration
        cost); default: the first certified index.
    random_state : int or None
        Seed of the WSR permutation.

    Returns
    -------
    LTTResult
    """
    p_values = ltt_pvalues(losses, alpha, bound=bound, delta=delta, random_state=random_state)
    return ltt_certify(
        p_values,
        n=np.shape(losses)[0],
        alpha=alpha,
        delta=delta,
        bound=bound,
        method=method,
        order=order,
        config_costs=config_costs,
    )
