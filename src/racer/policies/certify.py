"""Certify a policy family with Learn-then-Test and pick the cheapest certified policy.

The family and the fixed-sequence order come from the training split; only the loss
counts come from calibration (METHOD.md section 5b). The certified policy with the
lowest mean calibration cost is returned. When nothing is certified, or only "always
call the fallback", the result says so plainly (``certified`` / ``only_fallback``)
and serves the fallback: never an uncertified cheaper policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from racer.fwer import FWER_METHODS
from racer.ltt import learn_then_test, risk_cost_front
from racer.policies.families import Outcome, Policy, PolicyData, Single
from racer.policies.losses import answer_losses, check_objective


def simulate_all(policies: list[Policy], data: PolicyData) -> list[Outcome]:
    """Every policy's outcome on ``data``."""
    return [policy.simulate(data) for policy in policies]


def loss_and_cost(
    outcomes: list[Outcome],
    quality: np.ndarray,
    objective: str,
    reference: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query losses and costs of every policy, each of shape (n, K)."""
    served = np.stack([o.served for o in outcomes], axis=1)
    invoked = np.stack([o.invoked for o in outcomes], axis=1) if objective == "set" else None
    losses = answer_losses(objective, served, invoked, quality, reference)
    costs = np.stack([o.cost for o in outcomes], axis=1)
    return losses, costs


def safest_first(training_losses: np.ndarray, training_costs: np.ndarray) -> np.ndarray:
    """Fixed-sequence order from the training split: lowest training risk first.

    Ties go to the more expensive policy first (the likelier to be safe).
    """
    risk = np.asarray(training_losses, dtype=float).mean(axis=0)
    cost = np.asarray(training_costs, dtype=float).mean(axis=0)
    return np.lexsort((-cost, risk))


def training_front(
    training_losses: np.ndarray, training_costs: np.ndarray, first: int = 0
) -> np.ndarray:
    """The policies on the training risk-cost front, safest first, ``first`` always kept.

    :func:`racer.ltt.risk_cost_front` of the policies' mean training losses and costs.
    ``first`` (always calling the fallback) is kept at its place by training risk, whatever
    it costs: under regret it is the safest and leads; under error or set objectives a
    dearer but safer policy (a larger set, a cascade) may come before it. Everything comes
    from the training split, so the returned positions are a valid fixed-sequence order
    (METHOD.md section 5b).

    Returns
    -------
    numpy.ndarray of int
        Positions into the family by increasing training risk (ties: cheaper first),
        each cheaper than every safer one kept before it, ``first`` included.
    """
    return risk_cost_front(
        np.asarray(training_losses, dtype=float).mean(axis=0),
        np.asarray(training_costs, dtype=float).mean(axis=0),
        first=first,
    )


@dataclass(frozen=True)
class Certificate:
    """The outcome of certifying a policy family on calibration data.

    Attributes
    ----------
    index : int
        The served policy's position in the family.
    policy : Policy
        The served policy (the fallback alone when nothing cheaper is certified).
    certified : bool
        Whether the served policy is certified (False: not even the fallback was).
    only_fallback : bool
        True when no policy cheaper than "always call the fallback" is certified.
    objective, alpha, delta, n, method, bound
        What was certified, at which levels, on how many calibration queries, how.
    p_value : float
        The served policy's p-value.
    calibration_risk, calibration_cost : float
        Its mean loss and mean cost on the calibration data.
    n_certified : int
        How many policies of the family were certified.
    """

    index: int
    policy: Policy
    certified: bool
    only_fallback: bool
    objective: str
    alpha: float
    delta: float
    n: int
    method: str
    bound: str
    p_value: float
    calibration_risk: float
    calibration_cost: float
    n_certified: int

    def state(self) -> dict[str, Any]:
        """JSON state of the certificate, the policy included."""
        return {
            "index": self.index,
            "policy": self.policy.state(),
            "certified": self.certified,
            "only_fallback": self.only_fallback,
            "objective": self.objective,
            "alpha": self.alpha,
            "delta": self.delta,
            "n": self.n,
            "method": self.method,
            "bound": self.bound,
            "p_value": self.p_value,
            "calibration_risk": self.calibration_risk,
            "calibration_cost": self.calibration_cost,
            "n_certified": self.n_certified,
        }

    def sentence(self, model_names: tuple[str, ...]) -> str:
        """One plain sentence: what is certified, or that nothing cheaper could be."""
        fallback = model_names[_fallback_of(self.policy)]
        if not self.certified:
            return (
                f"nothing is certified at {self.objective} risk <= {self.alpha:g} with "
                f"probability {1 - self.delta:g} on n={self.n}; serving {fallback} uncertified."
            )
        if self.only_fallback:
            return (
                f"only 'always call {fallback}' is certified at {self.objective} risk <= "
                f"{self.alpha:g}; no cheaper policy could be certified on n={self.n}."
            )
        return (
            f"certified {self.objective} risk <= {self.alpha:g} with probability "
            f"{1 - self.delta:g} (n={self.n}): {self.policy.describe(model_names)}."
        )


def _fallback_of(policy: Policy) -> int:
    return policy.model if isinstance(policy, Single) else policy.fallback


def certify(
    policies: list[Policy],
    calibration_losses: np.ndarray,
    calibration_costs: np.ndarray,
    *,
    objective: str,
    alpha: float,
    delta: float,
    order: np.ndarray | None = None,
    method: str = "fixed_sequence",
    bound: str = "binomial",
    fallback_index: int = 0,
) -> Certificate:
    """Learn-then-Test over a policy family; the cheapest certified policy.

    Parameters
    ----------
    policies : list of Policy
        The family (from the training split, e.g. :func:`policy_grid`).
    calibration_losses, calibration_costs : numpy.ndarray, shape (n, K)
        Each policy's loss and cost on each calibration query (:func:`loss_and_cost`).
    objective : {"set", "error", "regret"}
        Recorded in the certificate.
    alpha, delta : float
        Risk level and family-wise error.
    order : numpy.ndarray of int, optional
        Fixed-sequence order from the training split (:func:`safest_first`); required
        by ``method="fixed_sequence"``.
    method : {"fixed_sequence", "bonferroni", "holm"}
        How the family-wise error is controlled.
    bound : str
        ``"binomial"`` for 0/1 losses; ``"hb"`` or ``"wsr"`` for graded losses.
    fallback_index : int
        The position of "always call the fallback" in ``policies``.

    Returns
    -------
    Certificate
    """
    check_objective(objective, 0)
    if method not in FWER_METHODS:
        raise ValueError(f"method must be one of {FWER_METHODS}, got {method!r}.")
    if method == "fixed_sequence" and order is None:
        raise ValueError(
            "Fixed-sequence testing needs an order fixed before calibration; pass "
            "order=safest_first(training_losses, training_costs)."
        )
    losses = np.asarray(calibration_losses, dtype=float)
    mean_costs = np.asarray(calibration_costs, dtype=float).mean(axis=0)
    result = learn_then_test(
        losses,
        alpha=alpha,
        delta=delta,
        bound=bound,
        method=method,
        order=order,
        config_costs=mean_costs,
    )
    certified = result.chosen is not None
    index = int(result.chosen) if certified else fallback_index
    only_fallback = not certified or mean_costs[index] >= mean_costs[fallback_index]
    if certified and only_fallback and result.certified[fallback_index]:
        index = fallback_index
    return Certificate(
        index=index,
        policy=policies[index],
        certified=certified,
        only_fallback=only_fallback,
        objective=objective,
        alpha=float(alpha),
        delta=float(delta),
        n=int(losses.shape[0]),
        method=method,
        bound=bound,
        p_value=float(result.p_values[index]),
        calibration_risk=float(losses[:, index].mean()),
        calibration_cost=float(mean_costs[index]),
        n_certified=int(np.sum(result.certified)),
    )


def uncorrected_choice(
    calibration_losses: np.ndarray, calibration_costs: np.ndarray, alpha: float
) -> int:
    """The cheapest policy whose calibration risk is at most ``alpha`` (no bound).

    Falls back to the lowest-risk policy when none qualifies.
    """
    risk = np.asarray(calibration_losses, dtype=float).mean(axis=0)
    cost = np.asarray(calibration_costs, dtype=float).mean(axis=0)
    feasible = risk <= alpha
    if not feasible.any():
        return int(np.argmin(risk))
    return int(np.flatnonzero(feasible)[np.argmin(cost[feasible])])
