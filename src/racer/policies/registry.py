"""Every policy kind by its name, and a policy rebuilt from its JSON state.

A new kind of policy lives in its own module (a frozen dataclass with ``kind``,
``simulate``, ``describe``, ``state``, ``models_used`` and, when its JSON needs more than
``cls(**state)``, a ``from_state`` class method; optionally ``group_key`` and a static
``simulate_group`` to share work across a grid, see :mod:`racer.policies.simulate`) and is
registered here with one line.
"""

from __future__ import annotations

from typing import Any

from racer.policies.families import Cascade, ParallelSets, Policy, Single
from racer.policies.learned import LearnedCascade
from racer.policies.router_cascade import RouterCascade

POLICY_KINDS: dict[str, type] = {
    "single": Single,
    "cascade": Cascade,
    "sets": ParallelSets,
    "router_cascade": RouterCascade,
    "learned_cascade": LearnedCascade,
}


def policy_from_state(state: dict[str, Any]) -> Policy:
    """Rebuild a policy from its ``state()`` dictionary.

    Raises
    ------
    ValueError
        For an unknown kind.

    Examples
    --------
    >>> policy_from_state(Cascade((0, 1), 2.0, 3).state())
    Cascade(chain=(0, 1), threshold=2.0, fallback=3, weights=None, kind='cascade')
    """
    kind = state.get("kind")
    if kind not in POLICY_KINDS:
        raise ValueError(
            f"Unknown policy kind {kind!r}; expected one of {sorted(POLICY_KINDS)}."
        )
    cls = POLICY_KINDS[kind]
    from_state = getattr(cls, "from_state", None)
    return from_state(state) if from_state is not None else cls(**state)
