"""The tested family: a training front that survives tight alpha, never dearer than the reference.

:func:`racer.policies.certify.training_front` keeps the policies on the training
risk-cost front, one per training risk level: the cheapest. With a few hundred training
queries that front is noisy, and at a tight alpha the cheapest policy at a risk level is
the one likeliest to have been lucky on the training split. :func:`tolerance_front`
(what :func:`racer.evaluation.certified.plan_family` uses under regret) keeps every
policy within ``tolerance`` paired standard errors of the front at its cost; with the
default ``tolerance=0`` that is the front *with its ties*: a dearer policy as safe on
training data as a cheaper one stays, and the fixed sequence tests it first.
:func:`bootstrap_front` keeps every policy on the front of the training split or of one
of ``n_resamples`` bootstrap resamples of it.

Measured on RouterBench ARC (400 training queries, 1,084 pooled, knn router, 200 trials,
delta 0.1, regret against gpt-4; certified cost share of gpt-4 at alpha 0.02 / 0.03 /
0.05): the plain front 0.579 / 0.441 / 0.278, the bootstrap union (20 resamples) 0.580 /
0.455 / 0.290, ties kept 0.563 / 0.431 / 0.279; wider bands (0.5, 1 standard errors),
more resamples, half-sample and k-fold fronts were no better. On another ARC split the
differences are of the same size and go either way (without router policies the plain
front is the cheapest there). Even an order chosen in hindsight on that pool's risks
certifies no less than 0.550 / 0.421 / 0.271 of the grid: what is left is in the signals.
A larger family is not free under fixed-sequence testing: a policy that was lucky in
training and sits early in the order stops the sequence before the policies behind it.

:func:`never_dearer` drops the policies whose training cost exceeds the reference's: such
a policy can never be the cheapest certified one in expectation, and testing it costs
family-wise error. :func:`dearer_than_reference` says, for a policy kept, on how many
queries escalation still makes it cost more than the reference alone (a cascade pays its
cheap tiers *and* the reference when it escalates).

Validity (METHOD.md section 5b): every function here reads the training split only
(the bootstrap is seeded and resamples training rows), so the family and its
fixed-sequence order are fixed before calibration and Learn-then-Test's guarantee
P(R(chosen) <= alpha) >= 1 - delta holds unchanged.
"""

from __future__ import annotations

import numpy as np

from racer.policies.certify import training_front

DEFAULT_RESAMPLES = 20
DEFAULT_TOLERANCE = 0.0


def bootstrap_front(
    training_losses: np.ndarray,
    training_costs: np.ndarray,
    first: int = 0,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> np.ndarray:
    """The union of the training front and the fronts of bootstrap resamples, safest first.

    Parameters
    ----------
    training_losses, training_costs : numpy.ndarray, shape (n, K)
        Each policy's loss and cost on each *training* query.
    first : int
        The policy always kept (always calling the fallback).
    n_resamples : int
        Bootstrap resamples of the training rows (0: the plain training front).
    seed : int
        Seed of the resamples.

    Returns
    -------
    numpy.ndarray of int
        Positions into the family ordered by full-sample training risk, ties dearer
        first (the likelier to be safe), as :func:`racer.policies.certify.safest_first`.

    Examples
    --------
    >>> losses = np.array([[0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    >>> costs = np.broadcast_to([3.0, 1.0, 1.5], (4, 3))
    >>> bootstrap_front(losses, costs, n_resamples=0).tolist()
    [0, 1]
    >>> sorted(bootstrap_front(losses, costs, n_resamples=20).tolist())
    [0, 1, 2]
    """
    losses = np.asarray(training_losses, dtype=float)
    costs = np.asarray(training_costs, dtype=float)
    kept = np.zeros(losses.shape[1], dtype=bool)
    kept[training_front(losses, costs, first)] = True
    rng = np.random.default_rng(seed)
    n = losses.shape[0]
    for _ in range(n_resamples):
        rows = rng.integers(0, n, size=n)
        kept[training_front(losses[rows], costs[rows], first)] = True
    positions = np.flatnonzero(kept)
    risk = losses.mean(axis=0)[positions]
    cost = costs.mean(axis=0)[positions]
    return positions[np.lexsort((-cost, risk))]


def tolerance_front(
    training_losses: np.ndarray,
    training_costs: np.ndarray,
    first: int = 0,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """Every policy within ``tolerance`` standard errors of the training front, safest first.

    A policy is kept unless a policy at most as dear beats its training risk by more than
    ``tolerance`` paired standard errors: with ``best`` the lowest-risk policy among those
    no dearer than it (ties: the cheaper), it is kept when

        risk - risk[best] <= tolerance * sd(losses - losses[best]) / sqrt(n).

    With ``tolerance=0`` (the default) this keeps the training front *with its ties*:
    every policy whose training risk is the lowest among the policies no dearer than it,
    so a dearer policy as safe on training data as a cheaper one stays and is tested
    before it (the cheaper one is the likelier to have been lucky). Policies with the
    same training risk and cost as one kept already (``first``, then the earliest in the
    family) are that policy as far as the training data tells, and are not kept again.

    Parameters
    ----------
    training_losses, training_costs : numpy.ndarray, shape (n, K)
        Each policy's loss and cost on each *training* query.
    first : int
        The policy always kept (always calling the fallback).
    tolerance : float
        The band's width in paired standard errors of the training risk difference.

    Returns
    -------
    numpy.ndarray of int
        Positions into the family ordered by training risk, ties dearer first (as
        :func:`racer.policies.certify.safest_first`).

    Examples
    --------
    >>> losses = np.array([[0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    >>> costs = np.broadcast_to([3.0, 1.0, 2.0, 2.5], (4, 4))
    >>> training_front(losses, costs).tolist()
    [0, 1]
    >>> tolerance_front(losses, costs).tolist()
    [0, 2, 1]
    >>> tolerance_front(losses, costs, tolerance=1.0).tolist()
    [0, 2, 1, 3]
    """
    losses = np.asarray(training_losses, dtype=float)
    costs = np.asarray(training_costs, dtype=float)
    risk, cost = losses.mean(axis=0), costs.mean(axis=0)
    by_cost = np.lexsort((risk, cost))
    sorted_risk = risk[by_cost]
    record = np.concatenate([[True], sorted_risk[1:] < np.minimum.accumulate(sorted_risk)[:-1]])
    best = np.empty(risk.size, dtype=int)
    best[by_cost] = by_cost[np.maximum.accumulate(np.where(record, np.arange(risk.size), 0))]
    difference = losses - losses[:, best]
    n = losses.shape[0]
    spread = difference.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(risk.size)
    kept = np.flatnonzero(risk - risk[best] <= tolerance * spread + 1e-12)
    # One policy per (training risk, training cost): ``first``, then the earliest.
    kept = np.concatenate([[first], kept[kept != first]])
    _, unique = np.unique(np.column_stack([risk[kept], cost[kept]]), axis=0, return_index=True)
    positions = kept[np.sort(unique)]
    return positions[np.lexsort((-cost[positions], risk[positions]))]


def never_dearer(order: np.ndarray, training_costs: np.ndarray, reference_index: int) -> np.ndarray:
    """``order`` without the policies whose mean training cost exceeds the reference's.

    Parameters
    ----------
    order : numpy.ndarray of int
        Positions into the family (a fixed-sequence order).
    training_costs : numpy.ndarray, shape (n, K)
        Each policy's cost on each training query.
    reference_index : int
        The position of "always call the reference" (always kept).

    Returns
    -------
    numpy.ndarray of int
        The positions kept, in their order.
    """
    order = np.asarray(order, dtype=int)
    mean_cost = np.asarray(training_costs, dtype=float).mean(axis=0)
    keep = (mean_cost[order] <= mean_cost[reference_index]) | (order == reference_index)
    return order[keep]


def dearer_than_reference(policy_costs: np.ndarray, reference_costs: np.ndarray) -> dict:
    """Where a policy costs more than the reference alone, query by query.

    Parameters
    ----------
    policy_costs, reference_costs : numpy.ndarray, shape (n,)
        The policy's cost and the reference's call cost on each query.

    Returns
    -------
    dict
        ``share``: the share of queries where the policy costs more than the reference
        (escalation pays the cheap tiers and the reference); ``max_ratio``: the largest
        per-query ratio of the two costs (1.0 or less when never dearer); ``mean_ratio``:
        the ratio of the mean costs.
    """
    policy_costs = np.asarray(policy_costs, dtype=float)
    reference_costs = np.asarray(reference_costs, dtype=float)
    positive = reference_costs > 0
    ratios = policy_costs[positive] / reference_costs[positive]
    reference_total = reference_costs.sum()
    return {
        "share": float(np.mean(policy_costs > reference_costs)) if policy_costs.size else 0.0,
        "max_ratio": float(ratios.max()) if ratios.size else float("nan"),
        "mean_ratio": float(policy_costs.sum() / reference_total)
        if reference_total > 0
        else float("nan"),
    }
