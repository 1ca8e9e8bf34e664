"""The tested family: bootstrap fronts, never dearer than the reference, dearer queries."""

import numpy as np

from racer.policies.certify import safest_first, training_front
from racer.policies.front import (
    bootstrap_front,
    dearer_than_reference,
    never_dearer,
    tolerance_front,
)


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


def _tied_family():
    # 8 training queries. Policy 2 is as safe as policy 1 on training data but dearer:
    # the plain front drops it. Policy 3 is one net loss worse than policy 1, policy 4
    # strictly worse than policy 0 at a higher cost than the reference (risk 0.25).
    losses = np.zeros((8, 5))
    losses[0, 1] = losses[1, 2] = 1.0
    losses[[1, 2, 3], 3] = 1.0
    losses[[0, 1], 4] = 1.0
    costs = np.broadcast_to([3.0, 1.0, 2.0, 2.5, 3.5], (8, 5))
    return losses, costs


def test_tolerance_front_keeps_the_policies_tied_with_the_front_that_the_front_prunes():
    losses, costs = _tied_family()
    assert training_front(losses, costs).tolist() == [0, 1]
    kept = tolerance_front(losses, costs)
    # Ties with the front stay; the order is the training order: safest first, equal
    # training risk dearer first (the cheaper tie is the likelier to have been lucky).
    assert kept.tolist() == [0, 2, 1]
    assert kept.tolist() == [p for p in safest_first(losses, costs).tolist() if p in {0, 1, 2}]


def test_tolerance_band_is_measured_in_paired_standard_errors():
    losses, costs = _tied_family()
    # Policy 3 against the best policy no dearer than it (policy 1, the cheapest of the
    # two with the lowest risk): risk difference 3/8 - 1/8, the paired differences'
    # standard error computed by hand.
    difference = losses[:, 3] - losses[:, 1]
    excess = difference.mean()
    spread = np.sqrt(((difference - excess) ** 2).sum() / 7) / np.sqrt(8)
    width = excess / spread
    assert 3 not in tolerance_front(losses, costs, tolerance=0.99 * width)
    kept = tolerance_front(losses, costs, tolerance=1.01 * width)
    assert kept.tolist() == [0, 2, 1, 3]
    # A band wide enough for policy 4 keeps it too (never_dearer drops it afterwards).
    wide = tolerance_front(losses, costs, tolerance=100.0)
    assert wide.tolist() == [0, 2, 1, 4, 3]
    assert never_dearer(wide, costs, reference_index=0).tolist() == [0, 2, 1, 3]


def test_tolerance_front_keeps_the_first_policy_and_reads_training_data_only():
    losses, costs = _tied_family()
    # Under error objectives the fallback may be beaten: it is kept at its place anyway.
    losses = losses.copy()
    losses[:3, 0] = 1.0
    kept = tolerance_front(losses, costs, first=0)
    assert 0 in kept
    assert kept.tolist() == [p for p in safest_first(losses, costs).tolist() if p in set(kept)]
    assert np.array_equal(kept, tolerance_front(losses.copy(), np.array(costs), first=0))


def test_tolerance_front_keeps_one_policy_per_training_risk_and_cost():
    losses, costs = _tied_family()
    # Policy 5 repeats policy 2 and policy 6 the reference on the training data: the
    # earlier one (the reference first) is kept, the repeat is not.
    losses = np.column_stack([losses, losses[:, 2], losses[:, 0]])
    costs = np.column_stack([costs, costs[:, 2], costs[:, 0]])
    assert tolerance_front(losses, costs).tolist() == [0, 2, 1]
    reordered = [6, 1, 2, 3, 4, 5, 0]  # the reference's repeat comes first in the family
    assert tolerance_front(losses[:, reordered], costs[:, reordered], first=6).tolist() == [6, 2, 1]
