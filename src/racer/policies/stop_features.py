"""What a learned stop rule knows after tier k of a cascade: features of the answers so far.

After the tiers ``chain[:k + 1]`` have answered, the cascade would serve the
training-accuracy weighted vote winner over them (as :class:`racer.policies.Cascade`
serves). :func:`tier_features` describes that moment, one row per query:

- ``margin``: the weighted agreement margin (the margin rule's own signal);
- ``tiers``: how many tiers were asked; ``agree`` / ``disagree``: how many answered
  with the served answer / otherwise;
- ``agree_t<j>`` / ``disagree_t<j>``: tier j of the chain answered and agrees with the
  served answer / answered otherwise (0 for a tier not asked yet or without answer);
- ``best_support``: the largest training-accuracy log-odds among the tiers that agree;
- ``extracted``: whether the served answer could be extracted;
- ``score_served`` / ``score_max`` (only ``with_scores``): the router's score of the
  served model, and the largest among the asked tiers;
- ``length``, ``hedged``: the served answer's length (log1p of characters) and hedging;
  ``any_hedged``: some asked tier hedged;
- ``logprob_mean``, ``logprob_min``, ``has_logprobs``: the served answer's token
  log-probability statistics (0 when not recorded) and whether they were;
- ``latest_answered``: tier k itself answered.

Causality: every feature at tier k reads the columns ``chain[:k + 1]`` only (codes,
weights, signals, scores), so the features of a query do not change when later tiers'
answers do. The gateway, which calls one tier at a time and simulates the policy on
the answers so far, therefore stops exactly where the simulation on recorded answers
stops. Nothing here is fitted: the features are pure functions of one query's answers.
"""

from __future__ import annotations

import numpy as np

from racer.aggregate import weighted_vote
from racer.policies.families import PolicyData

_SIGNALS = ("length", "hedged", "any_hedged", "logprob_mean", "logprob_min", "has_logprobs")


def feature_names(n_tiers: int, with_scores: bool) -> tuple[str, ...]:
    """The names of :func:`tier_features`' columns for a chain of ``n_tiers`` tiers.

    Examples
    --------
    >>> feature_names(2, False)[:6]
    ('margin', 'tiers', 'agree', 'disagree', 'agree_t0', 'agree_t1')
    """
    names = ["margin", "tiers", "agree", "disagree"]
    names += [f"agree_t{j}" for j in range(n_tiers)]
    names += [f"disagree_t{j}" for j in range(n_tiers)]
    names += ["best_support", "extracted"]
    if with_scores:
        names += ["score_served", "score_max"]
    names += [*_SIGNALS, "latest_answered"]
    return tuple(names)


def tier_features(
    data: PolicyData,
    chain: tuple[int, ...],
    k: int,
    weights: np.ndarray,
    codes: np.ndarray,
    *,
    with_scores: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every query after tier ``k`` of ``chain`` (see the module docstring).

    Parameters
    ----------
    data : PolicyData
        Recorded (or live) answers; reads ``signals`` (when present) and ``scores``
        (``with_scores``).
    chain : tuple of int
        The tiers in calling order.
    k : int
        The last tier asked (0-based position in ``chain``).
    weights, codes : numpy.ndarray, shape (n, M)
        The vote weights and answer codes the cascade compares.
    with_scores : bool
        Include the router-score features (needs ``data.scores``).

    Returns
    -------
    features : numpy.ndarray, shape (n, F)
        Finite values, columns as :func:`feature_names`.
    chosen : numpy.ndarray of int, shape (n,)
        The column whose answer would be served now (-1: no tier answered yet).
    """
    n, m = codes.shape
    tiers = np.asarray(chain[: k + 1], dtype=int)
    asked = np.zeros(m, dtype=bool)
    asked[tiers] = True
    chosen, margin = weighted_vote(np.broadcast_to(asked, (n, m)), weights, codes)
    rows = np.arange(n)
    has = chosen >= 0
    column = np.maximum(chosen, 0)
    chosen_code = codes[rows, column]
    extracted = has & (chosen_code >= 0)
    tier_codes = codes[:, tiers]
    responding = tier_codes != -2
    support = responding & extracted[:, None] & (tier_codes == chosen_code[:, None])
    support |= has[:, None] & (tiers[None, :] == chosen[:, None])
    against = responding & ~support
    agree_t = np.zeros((n, len(chain)))
    disagree_t = np.zeros((n, len(chain)))
    agree_t[:, : k + 1] = support
    disagree_t[:, : k + 1] = against
    tier_weights = weights[:, tiers]
    best_support = np.where(support, tier_weights, 0.0).max(axis=1)
    columns = [
        np.where(has, margin, 0.0),
        np.full(n, k + 1.0),
        support.sum(axis=1).astype(float),
        against.sum(axis=1).astype(float),
        agree_t,
        disagree_t,
        best_support,
        extracted.astype(float),
    ]
    if with_scores:
        if data.scores is None:
            raise ValueError("This stop rule reads the router's scores; the data has none.")
        scores = np.asarray(data.scores, dtype=float)
        columns += [
            np.where(has, scores[rows, column], 0.0),
            scores[:, tiers].max(axis=1),
        ]
    columns += [*_signal_columns(data, tiers, column, has), (codes[:, chain[k]] != -2) * 1.0]
    features = np.column_stack(columns)
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0), chosen


def _signal_columns(
    data: PolicyData, tiers: np.ndarray, column: np.ndarray, has: np.ndarray
) -> list[np.ndarray]:
    """The served answer's length, hedging and logprobs; any hedging among the asked tiers."""
    n = column.size
    if data.signals is None:
        return [np.zeros(n) for _ in _SIGNALS]
    s = data.signals
    rows = np.arange(n)

    def served(values: np.ndarray) -> np.ndarray:
        picked = np.asarray(values, dtype=float)[rows, column]
        return np.where(has & np.isfinite(picked), picked, 0.0)

    has_logprobs = has & np.isfinite(np.asarray(s.logprob_mean, dtype=float)[rows, column])
    any_hedged = (np.nan_to_num(np.asarray(s.hedged, dtype=float)[:, tiers]) > 0).any(axis=1)
    return [
        served(s.length),
        served(s.hedged),
        any_hedged.astype(float),
        served(s.logprob_mean),
        served(s.logprob_min),
        has_logprobs.astype(float),
    ]


def chain_features(
    data: PolicyData,
    chain: tuple[int, ...],
    weights: np.ndarray,
    codes: np.ndarray,
    *,
    with_scores: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tier_features` after every tier: features (n, K, F) and chosen (n, K)."""
    per_tier = [
        tier_features(data, chain, k, weights, codes, with_scores=with_scores)
        for k in range(len(chain))
    ]
    return (
        np.stack([f for f, _ in per_tier], axis=1),
        np.stack([c for _, c in per_tier], axis=1),
    )
