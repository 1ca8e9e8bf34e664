"""Answer-level objectives and certified policies (METHOD.md section 8).

- :mod:`~racer.policies.losses`: the loss of what the user receives (set, error, regret);
- :mod:`~racer.policies.base`: the recorded data a policy reads and what it did;
- :mod:`~racer.policies.families`: single models, cascades and parallel sets, and the grid;
- :mod:`~racer.policies.router_cascade`: the router-led, price-ordered cascade;
- :mod:`~racer.policies.learned`: cascades with a learned stop rule
  (:mod:`~racer.policies.stop_features`, :mod:`~racer.policies.stop_model`);
- :mod:`~racer.policies.front`: the tested family (a training front robust to noise, never
  dearer than the reference) and where a policy costs more than the reference;
- :mod:`~racer.policies.registry`: every policy kind by name, a policy from its JSON state;
- :mod:`~racer.policies.simulate`: every policy of a family on recorded answers, fast;
- :mod:`~racer.policies.certify`: Learn-then-Test over the grid, the cheapest certified policy;
- :mod:`~racer.policies.groups`: the same, one certificate per group of queries.
"""

from racer.policies.certify import (
    Certificate,
    certify,
    loss_and_cost,
    safest_first,
    simulate_all,
    training_front,
    uncorrected_choice,
)
from racer.policies.families import (
    Cascade,
    Outcome,
    ParallelSets,
    Policy,
    PolicyData,
    Single,
    policy_grid,
)
from racer.policies.groups import certify_groups
from racer.policies.learned import LearnedCascade
from racer.policies.losses import OBJECTIVES, answer_losses
from racer.policies.registry import POLICY_KINDS, policy_from_state
from racer.policies.router_cascade import RouterCascade

__all__ = [
    "OBJECTIVES",
    "POLICY_KINDS",
    "Cascade",
    "Certificate",
    "LearnedCascade",
    "Outcome",
    "ParallelSets",
    "Policy",
    "PolicyData",
    "RouterCascade",
    "Single",
    "answer_losses",
    "certify",
    "certify_groups",
    "loss_and_cost",
    "policy_from_state",
    "policy_grid",
    "safest_first",
    "simulate_all",
    "training_front",
    "uncorrected_choice",
]
