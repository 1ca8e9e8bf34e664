"""Upper confidence bounds and p-values for the mean of n losses in [0, 1].

Every function here is pure and vectorised over its count / risk arguments. Counts of
0/1 losses are integers (``k`` losses out of ``n``), never rounded float means.

A *p-value* tests the null hypothesis "the true risk exceeds ``alpha``"; a small
p-value (at most ``delta``) certifies risk <= alpha. An *upper confidence bound* (UCB)
is the largest risk still compatible with the data at level ``delta``.

Examples
--------
>>> from racer.bounds import binomial_ucb, n_needed
>>> round(float(binomial_ucb(0, 22, 0.1)), 4)
0.0993
>>> n_needed("binomial", alpha=0.1, delta=0.1)
22
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _as_counts(k: np.ndarray | int, n: int) -> np.ndarray:
    counts = np.asarray(k)
    if not np.issubdtype(counts.dtype, np.integer):
        if not np.all(counts == np.floor(counts)):
            raise ValueError("Loss counts must be integers (the number of losses out of n).")
        counts = counts.astype(np.int64)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}.")
    if np.any(counts < 0) or np.any(counts > n):
        raise ValueError(f"Loss counts must lie in [0, n={n}].")
    return counts


def hoeffding_ucb(risk: np.ndarray | float, n: int, delta: float) -> np.ndarray:
    """Hoeffding's bound ``r + sqrt(log(1/delta) / (2n))``, capped at 1.

    Parameters
    ----------
    risk : array_like
        Empirical mean loss(es) in [0, 1].
    n : int
        Number of losses.
    delta : float
        Failure probability.

    Returns
    -------
    numpy.ndarray
        The upper confidence bound(s).
    """
    return np.minimum(1.0, np.asarray(risk, dtype=float) + math.sqrt(math.log(1 / delta) / (2 * n)))


def hoeffding_pvalue(risk: np.ndarray | float, n: int, alpha: float) -> np.ndarray:
    """Hoeffding p-value ``exp(-2 n (alpha - r)_+^2)`` for H0: risk > alpha."""
    gap = np.maximum(alpha - np.asarray(risk, dtype=float), 0.0)
    return np.exp(-2.0 * n * gap**2)


def binomial_ucb(k: np.ndarray | int, n: int, delta: float) -> np.ndarray:
    """Exact (Clopper-Pearson) upper bound for a binomial proportion.

    The largest ``p`` with ``P(Binom(n, p) <= k) >= delta``: the ``1 - delta`` quantile of
    ``Beta(k + 1, n - k)``, and 1 when ``k == n``.

    Parameters
    ----------
    k : array_like of int
        Number of losses (0/1 losses equal to 1).
    n : int
        Number of losses observed.
    delta : float
        Failure probability.

    Returns
    -------
    numpy.ndarray
        The upper confidence bound(s).
    """
    counts = _as_counts(k, n)
    below_n = counts < n
    safe = np.where(below_n, counts, n - 1)
    from scipy import stats  # scipy loads on first use, not when racer is imported

    return np.where(below_n, stats.beta.ppf(1 - delta, safe + 1, n - safe), 1.0)


def binomial_pvalue(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """Exact binomial p-value ``P(Binom(n, alpha) <= k)`` for H0: risk >= alpha."""
    from scipy import stats

    return stats.binom.cdf(_as_counts(k, n), n, alpha)


def _bernoulli_kl(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """``h(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))`` with ``0 log 0 = 0``."""
    a = np.asarray(a, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(a > 0, a * np.log(a / b), 0.0)
        second = np.where(a < 1, (1 - a) * np.log((1 - a) / (1 - b)), 0.0)
    return first + second


def hb_pvalue(k: np.ndarray | int, n: int, alpha: np.ndarray | float) -> np.ndarray:
    """Hoeffding-Bentkus p-value for H0: risk >= alpha.

    ``min(exp(-n h(min(r, alpha), alpha)), e * P(Binom(n, alpha) <= k))`` with
    ``r = k / n``, capped at 1.
    """
    return _hb_pvalue(_as_counts(k, n), n, alpha)


def hb_pvalue_bounded(
    loss_total: np.ndarray | float, n: int, alpha: np.ndarray | float
) -> np.ndarray:
    """Hoeffding-Bentkus p-value for losses in [0, 1] summing to ``loss_total``.

    Both tails hold for bounded, not only binary, losses: Hoeffding's with the mean
    ``r = loss_total / n`` and Bentkus's with ``P(Binom(n, alpha) <= ceil(loss_total))``.
    Equal to :func:`hb_pvalue` when ``loss_total`` is an integer count.
    """
    total = np.asarray(loss_total, dtype=float)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}.")
    if np.any(total < 0) or np.any(total > n):
        raise ValueError(f"Summed losses must lie in [0, n={n}].")
    return _hb_pvalue(total, n, alpha)


def _hb_pvalue(total: np.ndarray, n: int, alpha: np.ndarray | float) -> np.ndarray:
    risk = total / n
    hoeffding_part = np.exp(-n * _bernoulli_kl(np.minimum(risk, alpha), alpha))
    from scipy import stats

    bentkus_part = math.e * stats.binom.cdf(np.ceil(total), n, alpha)
    return np.minimum(1.0, np.minimum(hoeffding_part, bentkus_part))


def _bisect_decreasing(
    pvalue_at: Callable[[np.ndarray], np.ndarray],
    lower: np.ndarray,
    delta: float,
    iterations: int = 60,
) -> np.ndarray:
    """Smallest ``a`` in ``[lower, 1]`` with ``pvalue_at(a) <= delta`` (p non-increasing in a)."""
    lo = np.asarray(lower, dtype=float).copy()
    hi = np.ones_like(lo)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        above = pvalue_at(mid) > delta
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return hi


def hb_ucb(k: np.ndarray | float, n: int, delta: float) -> np.ndarray:
    """Hoeffding-Bentkus upper bound: ``inf{alpha : p-value(k, n, alpha) <= delta}``.

    ``k`` is the summed loss: an integer count for 0/1 losses, any value in [0, n]
    for losses in [0, 1] (:func:`hb_pvalue_bounded`).
    """
    total = np.asarray(k, dtype=float)
    hb_pvalue_bounded(total, n, 0.5)  # validates the totals once
    return _bisect_decreasing(lambda a: _hb_pvalue(total, n, a), total / n, delta)


def _wsr_bet_sizes(losses: np.ndarray, delta: float) -> np.ndarray:
    """Predictable betting fractions of the WSR process, one column per risk curve."""
    n = losses.shape[0]
    steps = np.arange(1, n + 1, dtype=float)[:, None]
    mean_hat = (0.5 + np.cumsum(losses, axis=0)) / (steps + 1)
    var_hat = (0.25 + np.cumsum((losses - mean_hat) ** 2, axis=0)) / (steps + 1)
    previous_var = np.vstack([np.full((1, losses.shape[1]), 0.25), var_hat[:-1]])
    return np.minimum(1.0, np.sqrt(2 * math.log(1 / delta) / (n * previous_var)))


def _wsr_log_wealth(losses: np.ndarray, bets: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """Running maximum log-wealth of the bettor against H0: mean >= risk."""
    with np.errstate(divide="ignore"):
        log_factors = np.log1p(-bets * (losses - risk))
    return np.max(np.cumsum(log_factors, axis=0), axis=0)


def wsr_pvalue(losses: np.ndarray, alpha: float, delta: float) -> np.ndarray:
    """Waudby-Smith-Ramdas betting p-value for H0: mean loss >= alpha.

    One wealth process over the losses *in the order given* (shuffle them once with a
    seeded permutation before calling); the p-value is ``min(1, 1 / max_t K_t)``.

    Parameters
    ----------
    losses : numpy.ndarray, shape (n,) or (n, L)
        Losses in [0, 1]; each column is tested separately.
    alpha : float
        Risk level under test.
    delta : float
        Level used to size the bets (as in the RCPS paper).

    Returns
    -------
    numpy.ndarray
        One p-value per column.
    """
    matrix = np.asarray(losses, dtype=float)
    matrix = matrix[:, None] if matrix.ndim == 1 else matrix
    bets = _wsr_bet_sizes(matrix, delta)
    log_wealth = _wsr_log_wealth(matrix, bets, np.float64(alpha))
    pvalues = np.minimum(1.0, np.exp(-log_wealth))
    return pvalues[0] if np.ndim(losses) == 1 else pvalues


def wsr_ucb(losses: np.ndarray, delta: float) -> float:
    """Waudby-Smith-Ramdas upper confidence bound of the mean of ``losses`` in [0, 1].

    The smallest ``R`` at which the bettor's wealth against H0: mean >= R exceeds
    ``1/delta``; wealth grows with ``R``, so bisection finds it.
    """
    column = np.asarray(losses, dtype=float).reshape(-1, 1)
    bets = _wsr_bet_sizes(column, delta)
    lo, hi = 0.0, 1.0
    if _wsr_log_wealth(column, bets, np.float64(0.0))[0] > math.log(1 / delta):
        return 0.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if _wsr_log_wealth(column, bets, np.float64(mid))[0] > math.log(1 / delta):
            hi = mid
        else:
            lo = mid
    return hi


def n_needed(bound: str, alpha: float, delta: float) -> int:
    """Smallest calibration size at which a zero-loss set can pass the bound.

    Parameters
    ----------
    bound : {"binomial", "hb", "hoeffding", "wsr", "crc"}
        The bound (``"crc"``: conformal risk control, an expectation guarantee).
    alpha, delta : float
        Risk level and failure probability.

    Returns
    -------
    int
        The minimal n; below it every request at this alpha and delta is infeasible.
    """
    if bound in ("binomial", "hb"):
        n = math.ceil(math.log(delta) / math.log1p(-alpha))
        while (1 - alpha) ** n > delta:
            n += 1
        while n > 1 and (1 - alpha) ** (n - 1) <= delta:
            n -= 1
        return n
    if bound == "hoeffding":
        n = math.ceil(math.log(1 / delta) / (2 * alpha**2))
        return n + 1 if hoeffding_ucb(0.0, n, delta) > alpha else n
    if bound == "crc":
        return max(1, math.ceil(1 / alpha - 1 - 1e-12))
    if bound == "wsr":
        passes = lambda n: wsr_pvalue(np.zeros(n), alpha, delta) <= delta  # noqa: E731
        hi = 1
        while not passes(hi):
            hi *= 2
        lo = hi // 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if passes(mid) else (mid, hi)
        return hi
    raise ValueError(f"Unknown bound {bound!r}.")
