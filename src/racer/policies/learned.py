"""Cascades with a learned stop rule: stop once a saved classifier trusts the answer so far.

A :class:`LearnedCascade` calls ``chain`` in order (increasing price). After each tier,
a small logistic regression (:class:`racer.policies.stop_model.StopModel`) estimates
P(no loss if we stop now): the probability that serving the answer so far (the
training-accuracy weighted vote winner over the tiers asked, as
:class:`racer.policies.Cascade` serves) loses nothing under the objective, from what is
known at that moment (:mod:`racer.policies.stop_features`: the answers so far and their
agreement pattern, each tier's training accuracy, the router's scores when the family
has them, whether the answer was extracted, its length, hedging and token
log-probabilities). The cascade stops at the first tier whose probability reaches
``threshold`` and has an answer to serve; otherwise it calls ``fallback``. The margin
rule (:class:`~racer.policies.Cascade`) stays in the family beside it.

:func:`fit_learned_cascades` builds the learned members of a family from the
*training* split only: for every candidate chain (the chains of
:func:`racer.policies.policy_grid`: combinations of the most accurate models cheaper
than the fallback, in price order) it stacks one row per (query, tier), target
``1 - loss`` of serving the answer so far (:func:`racer.policies.answer_losses`: under
regret, the served answer is right or the reference is wrong), and fits one stop model
per chain. The thresholds are a fixed grid (:data:`DEFAULT_STOP_THRESHOLDS`), the same
for every chain, chosen before any data is seen. Its training outcomes (what the
training front and the fixed-sequence order read) are *cross-fitted*: each training
query's stop probabilities come from a model fitted on the other folds, never on its
own label, so the front does not trust in-sample fits.

Validity (METHOD.md section 5b). Each learned cascade is a fixed function of a query's
answers once its chain, stop model and threshold are fixed. All three come from the
training split (the model's coefficients and standardisation, the cross-fitted
training outcomes that choose the front and its order) or from a grid fixed in
advance (the thresholds); nothing reads the calibration data. Conditionally on the
training split the family is therefore a finite set of configurations fixed before
calibration, each with i.i.d. calibration losses, and Learn-then-Test over it (any
family-wise error control, fixed-sequence along the training order included) gives
P(R(chosen) <= alpha) >= 1 - delta exactly as for the margin rule. The model need not
be calibrated or even good: a poor model only makes the certified policy dearer. The
gateway serves the certified policy as simulated because the stop decision at tier k
reads tiers <= k only (:mod:`racer.policies.stop_features`), so a live cascade stops
where the simulation on the same answers stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from racer.aggregate import log_odds
from racer.policies.base import (
    Outcome,
    PolicyData,
    chain_answer_codes,
    chain_weight_matrix,
    first_stop_outcomes,
)
from racer.policies.families import candidate_chains
from racer.policies.losses import answer_losses, check_objective
from racer.policies.stop_features import chain_features, feature_names, tier_features
from racer.policies.stop_model import DEFAULT_L2, StopModel

#: The stop thresholds of every learned chain, fixed before any data is seen: denser near 1,
#: where answer-level risks of a few percent are certified, and no higher than 0.995 (a
#: stop rule that claims less than half a percent loss per answer cannot be told apart
#: from calling the fallback on a training split of a few hundred queries).
DEFAULT_STOP_THRESHOLDS = (
    0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995,
)  # fmt: skip
DEFAULT_FOLDS = 5
_TARGETS = {"regret": "no regret", "error": "right answer", "set": "no misrouting"}


@dataclass(frozen=True)
class LearnedCascade:
    """Call ``chain`` in order; stop once P(no loss if we stop now) >= ``threshold``.

    Attributes
    ----------
    chain : tuple of int
        The cheap tiers, in calling order (increasing price).
    threshold : float
        Stop after the first tier whose stop probability is at least this.
    fallback : int
        The model called when no tier stops (the reference or the strongest model).
    weights : tuple of float
        The vote weight of each tier, ``log(p / (1 - p))`` of its training accuracy.
    model : StopModel
        The stop classifier (features of :func:`racer.policies.stop_features.feature_names`).
    objective : {"regret", "error", "set"}
        The loss whose absence the model estimates (for the description).
    """

    chain: tuple[int, ...]
    threshold: float
    fallback: int
    weights: tuple[float, ...]
    model: StopModel
    objective: str = "regret"
    kind: str = "learned_cascade"

    def __post_init__(self) -> None:
        expected = feature_names(len(self.chain), self.with_scores)
        if self.model.feature_names != expected:
            raise ValueError(
                f"The stop model reads {list(self.model.feature_names)}; a chain of "
                f"{len(self.chain)} tiers computes {list(expected)}."
            )
        if len(self.weights) != len(self.chain):
            raise ValueError("A learned cascade needs one weight per tier.")

    @property
    def with_scores(self) -> bool:
        """Whether the stop model reads the router's scores."""
        return "score_served" in self.model.feature_names

    def tier_weights(self, data: PolicyData) -> np.ndarray:
        """Vote weight of every model on every query, shape (n, M) (0 outside the chain)."""
        return chain_weight_matrix(self.chain, self.weights, data.codes.shape)

    def codes(self, data: PolicyData) -> np.ndarray:
        """The answer codes the vote compares (free-text agreement aware, as a cascade's)."""
        return chain_answer_codes(data, self.chain)

    def tier_probability(
        self, data: PolicyData, k: int, weights: np.ndarray, codes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stop probability and served column after tier ``k`` (-1 and 0: nothing to serve)."""
        features, chosen = tier_features(
            data, self.chain, k, weights, codes, with_scores=self.with_scores
        )
        return np.where(chosen >= 0, self.model.predict_proba(features), 0.0), chosen

    def simulate(self, data: PolicyData) -> Outcome:
        """Outcome on recorded answers: which tiers each query called, what it got."""
        weights = self.tier_weights(data)
        codes = self.codes(data)
        invoked = np.zeros(data.quality.shape, dtype=bool)
        served = np.full(data.n, self.fallback)
        stopped = np.zeros(data.n, dtype=bool)
        for k, column in enumerate(self.chain):
            invoked[~stopped, column] = True
            probability, chosen = self.tier_probability(data, k, weights, codes)
            stop_now = ~stopped & (chosen >= 0) & (probability >= self.threshold)
            served[stop_now] = chosen[stop_now]
            stopped |= stop_now
        invoked[~stopped, self.fallback] = True
        cost = (invoked * data.costs).sum(axis=1)
        return Outcome(served, invoked, cost, ~stopped)

    def group_key(self) -> tuple:
        """Learned cascades with equal keys differ only in their threshold."""
        return ("learned_cascade", self.chain, self.weights, self.fallback, self.model.digest)

    @staticmethod
    def simulate_group(cascades: list[LearnedCascade], data: PolicyData) -> list[Outcome]:
        """Outcomes of learned cascades that differ only in their threshold.

        The stop probabilities after each tier are computed once and every threshold's
        outcome is read off them; equal to each cascade's :meth:`simulate`.
        """
        first = cascades[0]
        weights = first.tier_weights(data)
        codes = first.codes(data)
        per_tier = [
            first.tier_probability(data, k, weights, codes) for k in range(len(first.chain))
        ]
        probability = np.stack([p for p, _ in per_tier], axis=1)
        chosen = np.stack([c for _, c in per_tier], axis=1)
        thresholds = [c.threshold for c in cascades]
        return first_stop_outcomes(
            probability, chosen, first.chain, first.fallback, thresholds, data.costs
        )

    def describe(self, model_names: tuple[str, ...]) -> str:
        """A readable description."""
        target = _TARGETS.get(self.objective, "no loss")
        router = " and the router's scores" if self.with_scores else ""
        return (
            f"cascade {' -> '.join(model_names[c] for c in self.chain)}, stop when the "
            f"learned P({target}) from the answers so far{router} >= {self.threshold:g}, "
            f"else {model_names[self.fallback]}"
        )

    def models_used(self) -> list[int]:
        """Every column the policy may call."""
        return [*self.chain, self.fallback]

    def tiers_for(self, scores: np.ndarray) -> list[int]:
        """The tiers one query calls before the fallback, in calling order (the chain)."""
        return list(self.chain)

    def stop_reason(self, data: PolicyData, asked: np.ndarray) -> str:
        """Why one query's answers so far stop the cascade (the gateway's report)."""
        asked = np.asarray(asked, dtype=bool)
        k = max((i for i, c in enumerate(self.chain) if asked[c]), default=0)
        probability, _ = self.tier_probability(data, k, self.tier_weights(data), self.codes(data))
        target = _TARGETS.get(self.objective, "no loss")
        return f"learned stop: P({target}) {float(probability[0]):.3g} >= {self.threshold:g}"

    def state(self) -> dict[str, Any]:
        """JSON state, the stop model inside (see :func:`racer.policies.policy_from_state`)."""
        return {
            "kind": self.kind,
            "chain": list(self.chain),
            "threshold": self.threshold,
            "fallback": self.fallback,
            "weights": list(self.weights),
            "objective": self.objective,
            "model": self.model.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LearnedCascade:
        """The learned cascade of :meth:`state`'s dictionary."""
        return cls(
            chain=tuple(int(c) for c in state["chain"]),
            threshold=float(state["threshold"]),
            fallback=int(state["fallback"]),
            weights=tuple(float(w) for w in state["weights"]),
            model=StopModel.from_state(state["model"]),
            objective=str(state.get("objective", "regret")),
        )


@dataclass(frozen=True)
class LearnedFamily:
    """The learned members of a policy family and their cross-fitted training outcomes.

    Attributes
    ----------
    policies : list of LearnedCascade
        Every chain at every threshold of the grid, each chain's model fitted on all the
        training queries.
    training_outcomes : list of Outcome
        Each policy's outcome on the training queries, with stop probabilities from
        models that did not see the query (K-fold cross-fitting).
    """

    policies: list[LearnedCascade]
    training_outcomes: list[Outcome]


def chain_rows(
    data: PolicyData,
    chain: tuple[int, ...],
    weights: tuple[float, ...],
    objective: str,
    reference: int | None,
    *,
    with_scores: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (query, tier) rows of one chain: features (n, K, F), chosen (n, K), targets (n, K).

    The target is ``1 - loss`` of serving the answer so far under ``objective``
    (:func:`racer.policies.answer_losses`, unknown labels counted worst case); under
    ``"set"`` the set is the tiers asked so far.
    """
    shape = data.codes.shape
    weight_matrix = chain_weight_matrix(chain, weights, shape)
    features, chosen = chain_features(
        data, chain, weight_matrix, chain_answer_codes(data, chain), with_scores=with_scores
    )
    invoked = None
    if objective == "set":
        invoked = np.zeros((data.n, len(chain), shape[1]), dtype=bool)
        for k in range(len(chain)):
            invoked[:, k, list(chain[: k + 1])] = True
    losses = answer_losses(objective, chosen, invoked, data.quality, reference)
    return features, chosen, 1.0 - losses


def fit_learned_cascades(
    data: PolicyData,
    prices: np.ndarray,
    accuracy: np.ndarray,
    fallback: int,
    objective: str,
    reference: int | None = None,
    *,
    with_scores: bool | None = None,
    thresholds: tuple[float, ...] = DEFAULT_STOP_THRESHOLDS,
    n_candidates: int = 6,
    max_chain: int = 5,
    folds: int = DEFAULT_FOLDS,
    l2: float = DEFAULT_L2,
    seed: int = 0,
) -> LearnedFamily:
    """Fit one stop model per candidate chain on training data; the policies and outcomes.

    Parameters
    ----------
    data : PolicyData
        The *training* queries: labels, codes, costs, signals, and (optionally)
        cross-fitted router scores.
    prices, accuracy : numpy.ndarray, shape (M,)
        Training mean costs and accuracies (the candidate chains and the vote weights).
    fallback : int
        The model called when no tier stops.
    objective : {"regret", "error", "set"}
    reference : int, optional
        The reference of "regret".
    with_scores : bool, optional
        Let the models read the router's scores; by default when ``data.scores`` exists.
    thresholds : tuple of float
        The stop-probability grid, fixed in advance.
    n_candidates, max_chain : int
        The chains (:func:`candidate_chains`).
    folds : int
        Cross-fitting folds of the training outcomes (queries assigned by a seeded
        permutation).
    l2 : float
        The penalty of every stop model (on standardised features).
    seed : int
        Seed of the fold assignment.

    Returns
    -------
    LearnedFamily
        Chains in :func:`candidate_chains` order, each at every threshold.
    """
    check_objective(objective, reference)
    with_scores = data.scores is not None if with_scores is None else with_scores
    with threadpool_limits(limits=1, user_api="blas"):  # small products: threads only contend
        return _fit_family(
            data, prices, accuracy, fallback, objective, reference, with_scores,
            thresholds, n_candidates, max_chain, folds, l2, seed,
        )  # fmt: skip


def _fit_family(
    data: PolicyData,
    prices: np.ndarray,
    accuracy: np.ndarray,
    fallback: int,
    objective: str,
    reference: int | None,
    with_scores: bool,
    thresholds: tuple[float, ...],
    n_candidates: int,
    max_chain: int,
    folds: int,
    l2: float,
    seed: int,
) -> LearnedFamily:
    log_weights = log_odds(np.asarray(accuracy, dtype=float))
    fold = np.random.default_rng(seed).permutation(data.n) % max(1, min(folds, data.n))
    policies: list[LearnedCascade] = []
    outcomes: list[Outcome] = []
    for chain in candidate_chains(
        prices, accuracy, fallback, n_candidates=n_candidates, max_chain=max_chain
    ):
        weights = tuple(float(log_weights[m]) for m in chain)
        features, chosen, targets = chain_rows(
            data, chain, weights, objective, reference, with_scores=with_scores
        )
        names = feature_names(len(chain), with_scores)
        model = _fit_rows(features, chosen, targets, names, l2, np.ones(data.n, dtype=bool))
        crossed = np.zeros(chosen.shape)
        for f in np.unique(fold):
            held_out = fold == f
            fold_model = _fit_rows(features, chosen, targets, names, l2, ~held_out)
            crossed[held_out] = fold_model.predict_proba(features[held_out])
        crossed = np.where(chosen >= 0, crossed, 0.0)
        policies += [
            LearnedCascade(chain, float(t), fallback, weights, model, objective) for t in thresholds
        ]
        outcomes += first_stop_outcomes(
            crossed, chosen, chain, fallback, [float(t) for t in thresholds], data.costs
        )
    return LearnedFamily(policies, outcomes)


def _fit_rows(
    features: np.ndarray,
    chosen: np.ndarray,
    targets: np.ndarray,
    names: tuple[str, ...],
    l2: float,
    queries: np.ndarray,
) -> StopModel:
    """A stop model on the (query, tier) rows of ``queries`` with an answer to serve."""
    rows = queries[:, None] & (chosen >= 0)
    if not rows.any():  # nothing to learn from: never trust an answer (P = 0.5 / 0.0 rate)
        rows = queries[:, None] & np.ones_like(rows)
    return StopModel.fit(features[rows], targets[rows], names, l2=l2)
