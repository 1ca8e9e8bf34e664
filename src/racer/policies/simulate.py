"""Every policy of a family on recorded answers, cascades sharing their votes.

A grid holds each cascade chain at many stop margins. The weighted vote after each tier
does not depend on the margin, so :func:`simulate_family` computes it once per chain and
reads every margin's outcome off it; other policies are simulated one by one. The
outcomes equal :meth:`racer.policies.families.Cascade.simulate`'s exactly.
"""

from __future__ import annotations

import numpy as np

from racer.aggregate import weighted_vote
from racer.policies.families import Cascade, Outcome, Policy, PolicyData


def simulate_family(policies: list[Policy], data: PolicyData) -> list[Outcome]:
    """Every policy's outcome on ``data`` (as :func:`racer.policies.simulate_all`), faster.

    Parameters
    ----------
    policies : list of Policy
    data : PolicyData

    Returns
    -------
    list of Outcome
        In the order of ``policies``.
    """
    outcomes: list[Outcome | None] = [None] * len(policies)
    groups: dict[tuple, list[int]] = {}
    for position, policy in enumerate(policies):
        if isinstance(policy, Cascade):
            groups.setdefault((policy.chain, policy.weights, policy.fallback), []).append(position)
        else:
            outcomes[position] = policy.simulate(data)
    for positions in groups.values():
        members = [policies[p] for p in positions]
        for position, outcome in zip(positions, _cascade_outcomes(members, data), strict=True):
            outcomes[position] = outcome
    return outcomes  # type: ignore[return-value]


def _cascade_outcomes(cascades: list[Cascade], data: PolicyData) -> list[Outcome]:
    """Outcomes of cascades that differ only in their stop margin."""
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
    chosen_t = np.stack(chosen_by_tier, axis=1)
    margin_t = np.stack(margin_by_tier, axis=1)
    tiers = np.asarray(first.chain)
    rows = np.arange(data.n)
    outcomes = []
    for cascade in cascades:
        can_stop = (chosen_t >= 0) & (margin_t >= cascade.threshold)
        stopped = can_stop.any(axis=1)
        stop_tier = np.where(stopped, np.argmax(can_stop, axis=1), len(tiers) - 1)
        served = np.where(stopped, chosen_t[rows, stop_tier], cascade.fallback)
        invoked = np.zeros(data.quality.shape, dtype=bool)
        invoked[:, tiers] = np.arange(len(tiers))[None, :] <= stop_tier[:, None]
        invoked[~stopped, cascade.fallback] = True
        cost = (invoked * data.costs).sum(axis=1)
        outcomes.append(Outcome(served, invoked, cost, ~stopped))
    return outcomes
