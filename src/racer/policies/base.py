"""What every policy reads and returns: :class:`PolicyData` and :class:`Outcome`.

They live apart from the policy kinds (:mod:`racer.policies.families` re-exports them) so
that a kind in a module of its own, which :func:`racer.policies.families.policy_grid`
builds, imports them without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from racer.signals import AnswerSignals


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
