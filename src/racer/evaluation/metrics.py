"""Per-query outcomes of a routing decision, and their summaries over trials.

A decision is an augmented set per query (column 0 = abstain, columns 1..M = the
models invoked). Everything a report shows is a mean of one of the per-query outcomes
computed here, so one function defines each number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from racer.aggregate import any_correct, choose_in_sets, chosen_correct

OUTCOMES = (
    "risk",
    "set_size",
    "abstention_rate",
    "flag_rate",
    "cost",
    "accuracy_vote",
    "accuracy_best",
    "any_correct",
    "accuracy_top1",
    "top1_in_set",
)


@dataclass(frozen=True)
class Pool:
    """The labelled queries an evaluation draws its calibration and test rows from.

    Parameters
    ----------
    scores : numpy.ndarray, shape (N, M)
        Base-router scores in [0, 1].
    labels : numpy.ndarray, shape (N, M)
        0/1 correctness (no unknown cells).
    costs : numpy.ndarray, shape (N, M)
        What each call costs: dollars when known, else 1 per call (cost = set size).
    answer_codes : numpy.ndarray of int, shape (N, M)
        Extracted answers for the vote (see :func:`racer.aggregate.answer_codes`).
    cost_unit : str
        "USD" or "model calls".
    """

    scores: np.ndarray
    labels: np.ndarray
    costs: np.ndarray
    answer_codes: np.ndarray
    cost_unit: str = "USD"

    @property
    def n(self) -> int:
        """Number of queries in the pool."""
        return int(self.labels.shape[0])


def outcomes(augmented_sets: np.ndarray, losses: np.ndarray, pool: Pool) -> dict[str, np.ndarray]:
    """Per-query outcomes of one augmented set per pool query.

    Parameters
    ----------
    augmented_sets : numpy.ndarray of bool, shape (N, M + 1)
        Column 0 = abstain; columns 1..M = the models invoked.
    losses : numpy.ndarray of bool, shape (N,)
        The misrouting loss of each set (method page section 3; from the breakpoints of
        :func:`racer.calibration.loss_breakpoints`).
    pool : Pool
        The labelled queries.

    Returns
    -------
    dict of str to numpy.ndarray, each shape (N,)
        One entry per name in :data:`OUTCOMES`. Accuracies count an abstention as
        not correct; ``any_correct`` is the upper bound of every aggregator.
        ``accuracy_top1`` is the base router's top-1 model on the same query (what the
        set's accuracy is compared with) and ``top1_in_set`` whether that model was
        invoked: best-in-set then serves exactly its answer.
    """
    invoked = augmented_sets[:, 1:]
    top1 = top1_models(pool.scores)
    best = choose_in_sets(invoked, pool.scores, None, "best")
    # With no extracted answer at all, the vote falls back to the best-scored response.
    has_answers = bool((pool.answer_codes >= 0).any())
    vote = choose_in_sets(invoked, pool.scores, pool.answer_codes, "vote") if has_answers else best
    return {
        "risk": losses.astype(float),
        "set_size": invoked.sum(axis=1).astype(float),
        "abstention_rate": (~invoked.any(axis=1)).astype(float),
        # flag mode: an answer is served with the abstain flag (0 in C+ and some model called)
        "flag_rate": (augmented_sets[:, 0] & invoked.any(axis=1)).astype(float),
        "cost": np.where(invoked, pool.costs, 0.0).sum(axis=1),
        "accuracy_vote": chosen_correct(vote, pool.labels).astype(float),
        "accuracy_best": chosen_correct(best, pool.labels).astype(float),
        "any_correct": any_correct(invoked, pool.labels).astype(float),
        "accuracy_top1": chosen_correct(top1, pool.labels).astype(float),
        "top1_in_set": invoked[np.arange(invoked.shape[0]), top1].astype(float),
    }


def top1_models(scores: np.ndarray) -> np.ndarray:
    """The base router's top-1 model per query: the highest score, the first on ties.

    It is the model best-in-set picks whenever it is in the set, so a set served
    best-in-set that always holds it answers exactly as the top-1 router does.
    """
    return np.argmax(np.asarray(scores, dtype=float), axis=1)


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the base router's top-1 model over all queries (unknown = not correct)."""
    return float(chosen_correct(top1_models(scores), labels).mean())


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    """Mean over trials and its standard error (0 for fewer than two finite values)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    error = finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else 0.0
    return float(finite.mean()), float(error)


def rate_and_error(events: np.ndarray) -> tuple[float, float]:
    """Share of trials where an event happened, with its binomial standard error."""
    events = np.asarray(events, dtype=bool)
    if events.size == 0:
        return float("nan"), float("nan")
    rate = float(events.mean())
    return rate, float(np.sqrt(rate * (1.0 - rate) / events.size))
