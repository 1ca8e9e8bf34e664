"""What every policy reads and returns: :class:`PolicyData` and :class:`Outcome`.

They live apart from the policy kinds (:mod:`racer.policies.families` re-exports them) so
that a kind in a module of its own, which :func:`racer.policies.families.policy_grid`
builds, imports them without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from racer.signals import AnswerSignals
from racer.similarity import chain_codes


@dataclass(frozen=True)
class PolicyData:
    """Recorded outcomes of every model on a batch of queries.

    Attributes
    ----------
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality in [0, 1]; NaN = unknown.
    codes : numpy.ndarray of int, shape (n, M)
        Answer codes (:func:`racer.aggregate.answer_codes`); -1 unextractable, -2 none.
    costs : numpy.ndarray, shape (n, M)
        Dollars (or calls) each model's call cost.
    scores : numpy.ndarray, shape (n, M), optional
        The base router's scores (needed by router-weighted cascades and sets).
    agree : numpy.ndarray of bool, shape (n, M, M), optional
        Free-text agreement (:func:`racer.similarity.pairwise_agreement`); with it a
        cascade's codes come from the agreement of its tiers (:meth:`Cascade.codes`).
    signals : racer.signals.AnswerSignals, optional
        What each answer says about itself (length, hedging, token log-probabilities),
        read by learned stop rules.
    """

    quality: np.ndarray
    codes: np.ndarray
    costs: np.ndarray
    scores: np.ndarray | None = None
    agree: np.ndarray | None = None
    signals: AnswerSignals | None = None

    @property
    def n(self) -> int:
        """Number of queries."""
        return int(self.quality.shape[0])

    def take(self, rows: np.ndarray) -> PolicyData:
        """The data of ``rows`` only."""
        return PolicyData(
            self.quality[rows],
            self.codes[rows],
            self.costs[rows],
            None if self.scores is None else self.scores[rows],
            None if self.agree is None else self.agree[rows],
            None if self.signals is None else self.signals.take(rows),
        )


@dataclass(frozen=True)
class Outcome:
    """What a policy did on each query.

    Attributes
    ----------
    served : numpy.ndarray of int, shape (n,)
        The column whose answer is returned (-1: nothing).
    invoked : numpy.ndarray of bool, shape (n, M)
        The models called.
    cost : numpy.ndarray, shape (n,)
        The cost of those calls.
    escalated : numpy.ndarray of bool, shape (n,)
        Whether the fallback model was called.
    """

    served: np.ndarray
    invoked: np.ndarray
    cost: np.ndarray
    escalated: np.ndarray


def chain_weight_matrix(
    chain: tuple[int, ...], weights: tuple[float, ...], shape: tuple[int, int]
) -> np.ndarray:
    """Each chain member's vote weight on every query, shape ``shape`` (0 outside the chain)."""
    matrix = np.zeros(shape, dtype=float)
    matrix[:, list(chain)] = np.asarray(weights, dtype=float)[None, :]
    return matrix


def chain_answer_codes(data: PolicyData, chain: tuple[int, ...] | list[int]) -> np.ndarray:
    """The answer codes a cascade over ``chain`` compares, shape (n, M).

    Extracted answers' codes; with free-text agreement (``data.agree``), codes from the
    agreement of the tiers in calling order (:func:`racer.similarity.chain_codes`).
    """
    return data.codes if data.agree is None else chain_codes(data.agree, chain)


def first_stop_outcomes(
    statistic: np.ndarray,
    chosen: np.ndarray,
    chain: tuple[int, ...],
    fallback: int,
    thresholds: list[float],
    costs: np.ndarray,
    called: np.ndarray | None = None,
) -> list[Outcome]:
    """Each threshold's outcome of a cascade whose stop statistic after every tier is known.

    A query stops at the first tier it calls whose ``statistic`` reaches the threshold and
    that has an answer to serve (``chosen >= 0``), and is served ``chosen`` there; a query
    that never stops calls ``fallback`` after every tier it called.

    Parameters
    ----------
    statistic, chosen : numpy.ndarray, shape (n, K)
        The stop statistic (an agreement margin, a stop probability) and the served
        column after each of the chain's K tiers (-1: nothing to serve).
    chain : tuple of int
        The tiers' columns, in calling order.
    fallback : int
    thresholds : list of float
    costs : numpy.ndarray, shape (n, M)
    called : numpy.ndarray of bool, shape (n, K), optional
        Which tiers each query calls (a router-led cascade skips some); all by default.

    Returns
    -------
    list of Outcome
        In the order of ``thresholds``.

    Examples
    --------
    >>> margin = np.array([[0.5, 2.0], [0.5, 0.5]])
    >>> chosen = np.zeros((2, 2), dtype=int)
    >>> [o.served.tolist() for o in first_stop_outcomes(margin, chosen, (0, 1), 2, [1.0],
    ...                                                  np.ones((2, 3)))]
    [[0, 2]]
    """
    tiers = np.asarray(chain)
    called = np.ones(chosen.shape, dtype=bool) if called is None else called
    rows = np.arange(chosen.shape[0])
    outcomes = []
    for threshold in thresholds:
        can_stop = called & (chosen >= 0) & (statistic >= threshold)
        stopped = can_stop.any(axis=1)
        stop_tier = np.where(stopped, np.argmax(can_stop, axis=1), tiers.size - 1)
        served = np.where(stopped, chosen[rows, stop_tier], fallback)
        invoked = np.zeros(costs.shape, dtype=bool)
        invoked[:, tiers] = called & (np.arange(tiers.size)[None, :] <= stop_tier[:, None])
        invoked[~stopped, fallback] = True
        outcomes.append(Outcome(served, invoked, (invoked * costs).sum(axis=1), ~stopped))
    return outcomes
