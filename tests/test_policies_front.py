"""The tested family: bootstrap fronts, never dearer than the reference, dearer queries."""

import numpy as np

from racer.policies.certify import training_front
from racer.policies.front import bootstrap_front, dearer_than_reference, never_dearer


def _noisy_family():
    # Policy 2 has the lowest true risk among the cheap ones but was unlucky on row 0.
    losses = np.zeros((6, 4))
    losses[0, 2] = 1.0
    losses[[1, 2], 1] = 1.0
    losses[3, 3] = 1.0
    costs = np.broadcast_to([3.0, 1.0, 1.5, 1.2], (6, 4))
    return losses, costs


def test_bootstrap_front_keeps_a_policy_pruned_by_one_unlucky_training_query():
    losses, costs = _noisy_family()
    assert training_front(losses, costs).tolist() == [0, 3, 1]
    kept = bootstrap_front(losses, costs, n_resamples=20)
    assert sorted(kept.tolist()) == [0, 1, 2, 3]
    # Safest first by full-sample training risk; equal risk: the dearer first.
    assert kept.tolist() == [0, 2, 3, 1]


def test_bootstrap_front_without_resamples_is_the_training_front():
    losses, costs = _noisy_family()
    assert bootstrap_front(losses, costs, n_resamples=0).tolist() == [0, 3, 1]


def test_bootstrap_front_is_fixed_by_its_seed():
    losses, costs = _noisy_family()
    first = bootstrap_front(losses, costs, n_resamples=3, seed=5)
    assert np.array_equal(first, bootstrap_front(losses, costs, n_resamples=3, seed=5))


def test_never_dearer_drops_policies_whose_training_cost_exceeds_the_reference():
    costs = np.broadcast_to([2.0, 2.5, 1.0, 2.0], (3, 4))
    assert never_dearer(np.array([3, 0, 1, 2]), costs, reference_index=0).tolist() == [3, 0, 2]


def test_dearer_than_reference_counts_escalated_queries():
    policy = np.array([0.2, 1.3, 0.5, 1.0])
    reference = np.ones(4)
    report = dearer_than_reference(policy, reference)
    assert report["share"] == 0.25
    assert report["max_ratio"] == 1.3
    assert report["mean_ratio"] == 0.75
