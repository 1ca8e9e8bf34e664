"""Policy families: what is called and what is served, on a data-independent grid.

A *policy* turns one query's router scores and the answers of the models it calls into
the answer served. Three kinds, each a small frozen dataclass with ``simulate`` (the
outcome on recorded answers, vectorised over queries) and a JSON ``state``:

- :class:`Single`: call one model (the reference alone is "always call the reference").
- :class:`Cascade`: call ``chain`` in order (increasing price); after each call, stop as
  soon as the weighted agreement margin of the answers so far reaches ``threshold``;
  otherwise escalate, finally to ``fallback`` whose answer is served.
- :class:`ParallelSets`: call RACER's nested set at ``lam`` at once and aggregate; an
  empty set escalates to ``fallback`` instead of refusing. With the ``"judge"``
  aggregator a judge model names the best answer; its call is part of the policy's cost
  and, since its verdicts are not in recorded data, the loss counts its worst pick.

:func:`policy_grid` builds the family from the *training* split only (prices, accuracies),
never from calibration data, as Learn-then-Test requires (METHOD.md section 5b).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any, Protocol

import numpy as np

from racer.aggregate import choose_in_sets, log_odds, weighted_vote
from racer.policies.base import (
    Outcome,
    PolicyData,
    chain_answer_codes,
    chain_weight_matrix,
    first_stop_outcomes,
)
from racer.policies.router_cascade import RouterCascade
from racer.sets import augmented_scores, entry_levels

DEFAULT_THRESHOLDS = tuple(float(t) for t in np.arange(0.0, 10.01, 0.5))
DEFAULT_LAMBDAS = tuple(float(x) for x in np.round(np.arange(0.05, 1.0001, 0.05), 2))
SET_FAMILIES = ("threshold", "cumulative")
SET_AGGREGATORS = ("logodds", "vote", "best")
JUDGE = "judge"
ROUTER_SCORE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
ROUTER_MARGINS = (0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0)
ROUTER_CHAIN_SIZES = (1, 2, 3, 4, 6)


class Policy(Protocol):
    """What every policy kind offers (:class:`Single`, :class:`Cascade`, :class:`ParallelSets`
    and the kinds registered in :mod:`racer.policies.registry`)."""

    kind: str

    def simulate(self, data: PolicyData) -> Outcome:
        """The outcome on recorded answers, vectorised over queries."""
        ...

    def describe(self, model_names: tuple[str, ...]) -> str:
        """A readable description."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON state (:func:`racer.policies.registry.policy_from_state` reads it back)."""
        ...

    def models_used(self) -> list[int]:
        """Every column the policy may call."""
        ...


def served_accuracy(served: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the served answer is known to be right, else 0.0 (refusals included)."""
    labels = np.asarray(labels, dtype=float)
    picked = labels[np.arange(labels.shape[0]), np.maximum(served, 0)]
    return ((np.asarray(served) >= 0) & (picked == 1.0)).astype(float)


def _outcome(
    served: np.ndarray, invoked: np.ndarray, data: PolicyData, escalated: np.ndarray
) -> Outcome:
    return Outcome(served, invoked, (invoked * data.costs).sum(axis=1), escalated)


def _names(columns: tuple[int, ...], model_names: tuple[str, ...]) -> str:
    return " -> ".join(model_names[c] for c in columns)


@dataclass(frozen=True)
class Single:
    """Call one model and serve its answer."""

    model: int
    kind: str = "single"

    def simulate(self, data: PolicyData) -> Outcome:
        """Outcome on recorded answers."""
        invoked = np.zeros(data.quality.shape, dtype=bool)
        invoked[:, self.model] = True
        served = np.full(data.n, self.model)
        return _outcome(served, invoked, data, np.zeros(data.n, dtype=bool))

    def describe(self, model_names: tuple[str, ...]) -> str:
        """A readable description."""
        return f"always call {model_names[self.model]}"

    def models_used(self) -> list[int]:
        """Every column the policy may call."""
        return [self.model]

    def state(self) -> dict[str, Any]:
        """JSON state (see :func:`racer.policies.registry.policy_from_state`)."""
        return asdict(self)


@dataclass(frozen=True)
class Cascade:
    """Call ``chain`` in order; stop once the answers agree by ``threshold``, else escalate.

    Attributes
    ----------
    chain : tuple of int
        The cheap tiers, in calling order (increasing price).
    threshold : float
        Stop after a tier when the weighted agreement margin (weight of the leading
        answer minus the weight of all other answers) is at least this.
    fallback : int
        The model called when no tier stops (the reference or the strongest model).
    weights : tuple of float, optional
        The vote weight of each tier, ``log(p / (1 - p))`` of its training accuracy;
        None weighs each query by the log-odds of the router's scores.
    """

    chain: tuple[int, ...]
    threshold: float
    fallback: int
    weights: tuple[float, ...] | None = None
    kind: str = "cascade"

    def tier_weights(self, data: PolicyData) -> np.ndarray:
        """Vote weight of every model on every query, shape (n, M) (0 outside the chain)."""
        if self.weights is not None:
            return chain_weight_matrix(self.chain, self.weights, data.quality.shape)
        if data.scores is None:
            raise ValueError("A router-weighted cascade needs the router's scores.")
        weights = np.zeros(data.quality.shape, dtype=float)
        weights[:, list(self.chain)] = log_odds(data.scores[:, list(self.chain)])
        return weights

    def codes(self, data: PolicyData) -> np.ndarray:
        """The answer codes the stop rule compares, shape (n, M) (:func:`chain_answer_codes`)."""
        return chain_answer_codes(data, self.chain)

    def simulate(self, data: PolicyData) -> Outcome:
        """Outcome on recorded answers: which tiers each query called, what it got."""
        weights = self.tier_weights(data)
        codes = self.codes(data)
        invoked = np.zeros(data.quality.shape, dtype=bool)
        served = np.full(data.n, self.fallback)
        stopped = np.zeros(data.n, dtype=bool)
        asked = np.zeros(data.quality.shape[1], dtype=bool)
        for column in self.chain:
            invoked[~stopped, column] = True
            asked[column] = True
            chosen, margin = weighted_vote(np.broadcast_to(asked, invoked.shape), weights, codes)
            stop_now = ~stopped & (chosen >= 0) & (margin >= self.threshold)
            served[stop_now] = chosen[stop_now]
            stopped |= stop_now
        invoked[~stopped, self.fallback] = True
        return _outcome(served, invoked, data, ~stopped)

    def describe(self, model_names: tuple[str, ...]) -> str:
        """A readable description."""
        weighting = "router-score" if self.weights is None else "training-accuracy"
        return (
            f"cascade {_names(self.chain, model_names)}, stop when the {weighting} log-odds "
            f"agreement margin >= {self.threshold:g}, else {model_names[self.fallback]}"
        )

    def models_used(self) -> list[int]:
        """Every column the policy may call."""
        return [*self.chain, self.fallback]

    def tiers_for(self, scores: np.ndarray) -> list[int]:
        """The tiers one query calls before the fallback, in calling order (the chain)."""
        return list(self.chain)

    def stop_reason(self, data: PolicyData, asked: np.ndarray) -> str:
        """Why one query's answers so far stop the cascade (the gateway's report)."""
        _, margin = weighted_vote(asked[None, :], self.tier_weights(data), self.codes(data))
        return f"agreement margin {float(margin[0]):.3g} >= {self.threshold:g}"

    def group_key(self) -> tuple:
        """Cascades with equal keys differ only in their stop margin (:meth:`simulate_group`)."""
        return ("cascade", self.chain, self.weights, self.fallback)

    @staticmethod
    def simulate_group(cascades: list[Cascade], data: PolicyData) -> list[Outcome]:
        """Outcomes of cascades that differ only in their stop margin, the vote computed once.

        Equal to each cascade's :meth:`simulate`.
        """
        first = cascades[0]
        weights = first.tier_weights(data)
        codes = first.codes(data)
        asked = np.zeros(data.quality.shape[1], dtype=bool)
        chosen_by_tier, margin_by_tier = [], []
        for column in first.chain:
            asked[column] = True
            chosen, margin = weighted_vote(np.broadcast_to(asked, codes.shape), weights, codes)
            chosen_by_tier.append(chosen)
            margin_by_tier.append(margin)
        return first_stop_outcomes(
            np.stack(margin_by_tier, axis=1),
            np.stack(chosen_by_tier, axis=1),
            first.chain,
            first.fallback,
            [cascade.threshold for cascade in cascades],
            data.costs,
        )

    def state(self) -> dict[str, Any]:
        """JSON state (see :func:`racer.policies.registry.policy_from_state`)."""
        state = asdict(self)
        state["chain"] = list(self.chain)
        state["weights"] = None if self.weights is None else list(self.weights)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Cascade:
        """The cascade of :meth:`state`'s dictionary."""
        values = dict(state)
        values["chain"] = tuple(int(c) for c in values["chain"])
        if values.get("weights") is not None:
            values["weights"] = tuple(float(w) for w in values["weights"])
        return cls(**values)


@dataclass(frozen=True)
class ParallelSets:
    """Call RACER's nested set at ``lam`` and aggregate; an empty set escalates to ``fallback``.

    Attributes
    ----------
    family : {"threshold", "cumulative"}
        The nested set family (:func:`racer.sets.entry_levels`, abstention allowed).
    lam : float
        The set parameter.
    aggregator : {"logodds", "vote", "best", "judge"}
        How the set's answers become one (:func:`racer.aggregate.choose_in_sets`, or
        ``"judge"``: the ``judge`` model names the best one, see :meth:`simulate`).
    fallback : int
        The model called instead of refusing.
    judge : int, optional
        The judge model's column (required by ``aggregator="judge"``).
    """

    family: str
    lam: float
    aggregator: str
    fallback: int
    kind: str = "sets"
    judge: int | None = None

    def __post_init__(self) -> None:
        if (self.aggregator == JUDGE) != (self.judge is not None):
            raise ValueError('aggregator="judge" needs judge=<model column>, and only it does.')

    def sets(self, scores: np.ndarray) -> np.ndarray:
        """The models of each query's set, shape (n, M)."""
        entry = entry_levels(augmented_scores(np.asarray(scores, dtype=float)), self.family)
        return entry[:, 1:] <= self.lam

    def simulate(self, data: PolicyData) -> Outcome:
        """Outcome on recorded answers.

        The judge's verdicts are not recorded, so a judged set serves its *worst*
        member (lowest known quality, unknown counted 0, the fallback last): every
        verdict the judge could give, its best-in-set fallback included, loses no more
        under error, regret and set losses, so what is certified holds for any judge.
        The judge is called, and paid, on every query whose set has two or more answers.
        """
        if data.scores is None:
            raise ValueError("Parallel sets need the router's scores.")
        invoked = self.sets(data.scores)
        if self.aggregator == JUDGE:
            served, judged = _worst_member(invoked, data, self.fallback)
        else:
            served = choose_in_sets(invoked, data.scores, data.codes, self.aggregator)
            judged = np.zeros(data.n, dtype=bool)
        escalated = served < 0
        invoked[escalated, self.fallback] = True
        served = np.where(escalated, self.fallback, served)
        outcome = _outcome(served, invoked, data, escalated)
        if self.judge is None:
            return outcome
        judge_cost = np.where(judged, data.costs[:, self.judge], 0.0)
        return Outcome(served, invoked, outcome.cost + judge_cost, escalated)

    def describe(self, model_names: tuple[str, ...]) -> str:
        """A readable description."""
        aggregation = (
            f"{self.aggregator} aggregation"
            if self.judge is None
            else f"{model_names[self.judge]} judging (certified for its worst pick)"
        )
        return (
            f"{self.family} sets at lambda {self.lam:g} with {aggregation}, "
            f"empty set escalated to {model_names[self.fallback]}"
        )

    def models_used(self) -> list[int]:
        """Every column the policy may call (the set's members depend on the query)."""
        return [self.fallback, *([] if self.judge is None else [self.judge])]

    def state(self) -> dict[str, Any]:
        """JSON state (see :func:`racer.policies.registry.policy_from_state`)."""
        return asdict(self)


def _worst_member(
    invoked: np.ndarray, data: PolicyData, fallback: int
) -> tuple[np.ndarray, np.ndarray]:
    """The responding member of each set with the lowest quality, and where a judge is asked.

    Returns the column (-1 for no responding member) and whether two or more members
    responded (only then is the judge called).
    """
    responding = invoked & (data.codes != -2)
    quality = np.where(responding, np.nan_to_num(data.quality, nan=0.0), np.inf)
    lowest = responding & (quality == quality.min(axis=1, keepdims=True))
    # Among equally bad members a non-fallback one (serving the reference has no regret).
    others = lowest.copy()
    others[:, fallback] = False
    worst = np.where(others.any(axis=1), np.argmax(others, axis=1), np.argmax(lowest, axis=1))
    count = responding.sum(axis=1)
    return np.where(count > 0, worst, -1), count >= 2


def cascade_candidates(
    prices: np.ndarray, accuracy: np.ndarray, fallback: int, n_candidates: int = 6
) -> list[int]:
    """The ``n_candidates`` most accurate models cheaper than ``fallback`` (training data)."""
    cheaper = [m for m in range(prices.size) if m != fallback and prices[m] < prices[fallback]]
    return sorted(cheaper, key=lambda m: -accuracy[m])[:n_candidates]


def candidate_chains(
    prices: np.ndarray,
    accuracy: np.ndarray,
    fallback: int,
    n_candidates: int = 6,
    max_chain: int = 5,
) -> list[tuple[int, ...]]:
    """The cascade chains of the grid, from training prices and accuracies only.

    Every combination of up to ``max_chain`` of :func:`cascade_candidates` (most accurate
    first), each in price order.

    Examples
    --------
    >>> candidate_chains(np.array([1.0, 2.0, 9.0]), np.array([0.7, 0.8, 0.9]), 2)
    [(1,), (0,), (0, 1)]
    """
    prices = np.asarray(prices, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    candidates = cascade_candidates(prices, accuracy, fallback, n_candidates)
    return [
        tuple(sorted(members, key=lambda m: (prices[m], m)))
        for size in range(1, max_chain + 1)
        for members in combinations(candidates, size)
    ]


def policy_grid(
    prices: np.ndarray,
    accuracy: np.ndarray,
    fallback: int,
    *,
    with_router: bool = False,
    n_candidates: int = 6,
    max_chain: int = 5,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    families: tuple[str, ...] = SET_FAMILIES,
    aggregators: tuple[str, ...] = SET_AGGREGATORS,
    judge: int | None = None,
    score_thresholds: tuple[float, ...] = ROUTER_SCORE_THRESHOLDS,
    router_margins: tuple[float, ...] = ROUTER_MARGINS,
    router_chain_sizes: tuple[int, ...] = ROUTER_CHAIN_SIZES,
) -> list[Policy]:
    """The policy family, built from training prices and accuracies only.

    Parameters
    ----------
    prices, accuracy : numpy.ndarray, shape (M,)
        Per-model mean cost and accuracy on the *training* split.
    fallback : int
        The reference (regret) or strongest model: the last tier of every cascade and
        the escalation of every empty set. ``Single(fallback)`` is the first policy.
    with_router : bool
        Add router-weighted cascades, router-led cascades
        (:class:`racer.policies.router_cascade.RouterCascade`) and parallel sets (needs
        router scores).
    n_candidates : int
        Cascade tiers are drawn from the ``n_candidates`` most accurate models cheaper
        than the fallback.
    max_chain : int
        Longest cascade chain before the fallback.
    thresholds, lambdas, families, aggregators
        The grids of the stop margin and of the parallel sets.
    judge : int, optional
        With the router, also judged parallel sets with this judge model.
    score_thresholds, router_margins, router_chain_sizes
        The router-led cascades' grid: their chains are the ``k`` cheapest candidates,
        in price order, for each ``k`` of ``router_chain_sizes`` (the router skips the
        tiers it does not trust, so a chain needs no subsets), each at every score
        threshold and stop margin (455 policies by default), weighted by the log-odds
        of the training accuracies.

    Returns
    -------
    list of policies
        ``Single(fallback)`` first, every other single model, the cascades, the sets, the
        router-led cascades.
    """
    prices = np.asarray(prices, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    others = [m for m in range(prices.size) if m != fallback]
    policies: list[Policy] = [Single(fallback)] + [Single(m) for m in others]
    candidates = cascade_candidates(prices, accuracy, fallback, n_candidates)
    weights = log_odds(accuracy)
    weightings: list[bool] = [False, True] if with_router else [False]
    for chain in candidate_chains(prices, accuracy, fallback, n_candidates, max_chain):
        for by_router in weightings:
            chain_weights = None if by_router else tuple(float(weights[m]) for m in chain)
            policies += [Cascade(chain, t, fallback, chain_weights) for t in thresholds]
    if with_router:
        policies += [
            ParallelSets(family, lam, aggregator, fallback)
            for family in families
            for aggregator in aggregators
            for lam in lambdas
        ]
        if judge is not None:
            policies += [
                ParallelSets(family, lam, JUDGE, fallback, judge=judge)
                for family in families
                for lam in lambdas
            ]
        by_price = sorted(candidates, key=lambda m: (prices[m], m))
        router_chains = dict.fromkeys(tuple(by_price[:size]) for size in router_chain_sizes)
        policies += [
            RouterCascade(chain, score, margin, fallback, tuple(float(weights[m]) for m in chain))
            for chain in router_chains
            if chain
            for score in score_thresholds
            for margin in router_margins
        ]
    return policies
