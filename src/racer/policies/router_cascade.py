"""A router-led, price-ordered cascade: the router picks the tiers, agreement stops it.

:class:`RouterCascade` holds a price-ordered ``chain`` of candidate models. For each query
its *tiers* are the chain's models whose router score reaches ``score_threshold``, in
price order: a tier the router predicts to fail is skipped, so the query starts at the
cheapest model the router trusts. After each tier the cascade stops as soon as the
agreement margin of the answers so far reaches ``threshold`` (the margin rule of
:class:`racer.policies.Cascade`, weights ``log(p / (1 - p))`` of the tiers' training
accuracies); otherwise it escalates to the next tier, finally to ``fallback``. When no
tier qualifies, the query goes straight to the fallback.

The stop decision after a tier reads the answers of the tiers called so far only, so the
gateway (:mod:`racer.serve.answering.certified_policy`) serves exactly what
:meth:`RouterCascade.simulate` computes on recorded answers. With free-text agreement
(``data.agree``) the answer codes come from :func:`racer.similarity.chain_codes` over the
query's *own* tiers, in their calling order.

Validity (METHOD.md section 5b): the chain comes from training prices and accuracies, the
score thresholds and margins from a fixed grid
(:func:`racer.policies.families.policy_grid`); calibration only tests them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from racer.aggregate import weighted_vote
from racer.policies.base import Outcome, PolicyData, chain_weight_matrix, first_stop_outcomes
from racer.similarity import chain_codes


@dataclass(frozen=True)
class RouterCascade:
    """Call the chain's models the router trusts, cheapest first; stop once they agree.

    Attributes
    ----------
    chain : tuple of int
        The candidate tiers in price order (cheapest first).
    score_threshold : float
        A tier is called on a query only when its router score is at least this.
    threshold : float
        Stop after a tier when the weighted agreement margin of the answers so far
        (weight of the leading answer minus the weight of all other answers) is at
        least this.
    fallback : int
        The model called when no tier stops, or no tier qualifies (the reference).
    weights : tuple of float
        The vote weight of each chain member, ``log(p / (1 - p))`` of its training
        accuracy (:func:`racer.aggregate.log_odds`).

    Examples
    --------
    >>> policy = RouterCascade((0, 1), 0.5, 1.0, 2, (1.5, 2.0))
    >>> policy.tiers_for(np.array([0.4, 0.7, 0.9]))
    [1]
    """

    chain: tuple[int, ...]
    score_threshold: float
    threshold: float
    fallback: int
    weights: tuple[float, ...]
    kind: str = "router_cascade"

    def __post_init__(self) -> None:
        if not self.chain or len(self.weights) != len(self.chain):
            raise ValueError(
                f"A router cascade needs a non-empty chain and one weight per tier; got "
                f"chain {self.chain} and weights {self.weights}."
            )
        if self.fallback in self.chain:
            raise ValueError(f"The fallback {self.fallback} cannot also be a tier of {self.chain}.")

    def qualifying(self, scores: np.ndarray | None) -> np.ndarray:
        """Which chain members each query calls, shape (n, len(chain)), chain order."""
        if scores is None:
            raise ValueError("A router-led cascade needs the router's scores (data.scores).")
        return np.asarray(scores, dtype=float)[:, list(self.chain)] >= self.score_threshold

    def tiers_for(self, scores: np.ndarray) -> list[int]:
        """The tiers one query calls before the fallback, in calling order."""
        row = np.asarray(scores, dtype=float)[None, :]
        return [c for c, ok in zip(self.chain, self.qualifying(row)[0], strict=True) if ok]

    def tier_weights(self, data: PolicyData) -> np.ndarray:
        """Vote weight of every model on every query, shape (n, M) (0 outside the chain)."""
        return chain_weight_matrix(self.chain, self.weights, data.quality.shape)

    def codes(self, data: PolicyData) -> np.ndarray:
        """The answer codes the stop rule compares, shape (n, M).

        Extracted answers' codes; with free-text agreement (``data.agree``), the codes
        of :func:`racer.similarity.chain_codes` over each query's own tiers in calling
        order (queries with the same tiers share one computation).
        """
        if data.agree is None:
            return data.codes
        qualifying = self.qualifying(data.scores)
        codes = np.full(data.quality.shape, -2, dtype=np.int64)
        patterns, which = np.unique(qualifying, axis=0, return_inverse=True)
        for number, pattern in enumerate(patterns):
            rows = np.flatnonzero(which.reshape(-1) == number)
            tiers = [c for c, ok in zip(self.chain, pattern, strict=True) if ok]
            codes[rows] = chain_codes(data.agree[rows], tiers)
        return codes

    def _votes(self, data: PolicyData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query and tier: called, the vote's choice and margin over the tiers so far."""
        qualifying = self.qualifying(data.scores)
        weights = self.tier_weights(data)
        codes = self.codes(data)
        asked = np.zeros(data.quality.shape, dtype=bool)
        chosen_by_tier, margin_by_tier = [], []
        for position, column in enumerate(self.chain):
            asked[:, column] = qualifying[:, position]
            chosen, margin = weighted_vote(asked, weights, codes)
            chosen_by_tier.append(chosen)
            margin_by_tier.append(margin)
        return qualifying, np.stack(chosen_by_tier, axis=1), np.stack(margin_by_tier, axis=1)

    def simulate(self, data: PolicyData) -> Outcome:
        """Outcome on recorded answers: which tiers each query called, what it got."""
        qualifying = self.qualifying(data.scores)
        weights = self.tier_weights(data)
        codes = self.codes(data)
        invoked = np.zeros(data.quality.shape, dtype=bool)
        served = np.full(data.n, self.fallback)
        stopped = np.zeros(data.n, dtype=bool)
        for position, column in enumerate(self.chain):
            calls = ~stopped & qualifying[:, position]
            invoked[calls, column] = True
            chosen, margin = weighted_vote(invoked, weights, codes)
            stop_now = calls & (chosen >= 0) & (margin >= self.threshold)
            served[stop_now] = chosen[stop_now]
            stopped |= stop_now
        invoked[~stopped, self.fallback] = True
        cost = (invoked * data.costs).sum(axis=1)
        return Outcome(served, invoked, cost, ~stopped)

    def stop_reason(self, data: PolicyData, asked: np.ndarray) -> str:
        """Why one query's answers so far stop the cascade (the gateway's report)."""
        _, margin = weighted_vote(asked[None, :], self.tier_weights(data), self.codes(data))
        return (
            f"agreement margin {float(margin[0]):.3g} >= {self.threshold:g} over the tiers "
            f"with router score >= {self.score_threshold:g}"
        )

    def group_key(self) -> tuple:
        """Router cascades with equal keys differ only in their stop margin."""
        return ("router_cascade", self.chain, self.weights, self.fallback, self.score_threshold)

    @staticmethod
    def simulate_group(policies: list[RouterCascade], data: PolicyData) -> list[Outcome]:
        """Outcomes of router cascades that differ only in their stop margin, votes shared.

        Equal to each policy's :meth:`simulate`.
        """
        first = policies[0]
        qualifying, chosen, margin = first._votes(data)
        thresholds = [policy.threshold for policy in policies]
        return first_stop_outcomes(
            margin, chosen, first.chain, first.fallback, thresholds, data.costs, qualifying
        )

    def describe(self, model_names: tuple[str, ...]) -> str:
        """A readable description."""
        tiers = " -> ".join(model_names[c] for c in self.chain)
        return (
            f"router-led cascade {tiers}: call the tiers with router score >= "
            f"{self.score_threshold:g}, stop when the training-accuracy log-odds agreement "
            f"margin >= {self.threshold:g}, else {model_names[self.fallback]}"
        )

    def models_used(self) -> list[int]:
        """Every column the policy may call."""
        return [*self.chain, self.fallback]

    def state(self) -> dict[str, Any]:
        """JSON state (see :func:`racer.policies.registry.policy_from_state`)."""
        state = asdict(self)
        state["chain"] = list(self.chain)
        state["weights"] = list(self.weights)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RouterCascade:
        """The router cascade of :meth:`state`'s dictionary."""
        values = dict(state)
        values["chain"] = tuple(int(c) for c in values["chain"])
        values["weights"] = tuple(float(w) for w in values["weights"])
        return cls(**values)
