"""Every policy of a family on recorded answers, policies of one group sharing their work.

A grid holds each cascade chain at many stop margins. The weighted vote after each tier
does not depend on the margin, so it is computed once per chain and every margin's
outcome is read off it. Any policy kind may share work the same way: policies with a
``group_key()`` are grouped by it and simulated together by their class's static
``simulate_group(members, data)``; other policies are simulated one by one. The outcomes
equal each policy's own ``simulate`` exactly.
"""

from __future__ import annotations

from racer.policies.families import Outcome, Policy, PolicyData


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
        group_key = getattr(policy, "group_key", None)
        if group_key is not None:
            groups.setdefault(group_key(), []).append(position)
        else:
            outcomes[position] = policy.simulate(data)
    for positions in groups.values():
        members = [policies[p] for p in positions]
        shared = type(members[0]).simulate_group(members, data)  # type: ignore[attr-defined]
        for position, outcome in zip(positions, shared, strict=True):
            outcomes[position] = outcome
    return outcomes  # type: ignore[return-value]
