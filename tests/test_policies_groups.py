"""Per-group certificates of a policy family: each group's own Learn-then-Test."""

from __future__ import annotations

import numpy as np
import pytest

from racer import InfeasibleCalibrationError
from racer.groups import POOLED
from racer.policies import Single, certify, certify_groups

POLICIES = [Single(0), Single(1), Single(2)]


def losses_and_costs(seed=0, n=900):
    """Policy 0 is cheap and right on group 'a' only; policy 2 is dear and always safe."""
    rng = np.random.default_rng(seed)
    groups = np.where(rng.uniform(size=n) < 0.6, "a", "b")
    losses = np.zeros((n, 3))
    losses[:, 0] = np.where(groups == "a", rng.uniform(size=n) < 0.02, rng.uniform(size=n) < 0.5)
    losses[:, 1] = rng.uniform(size=n) < 0.08
    costs = np.broadcast_to([1.0, 3.0, 10.0], (n, 3))
    return losses, costs, groups


def test_each_group_gets_the_certificate_of_its_own_rows():
    losses, costs, groups = losses_and_costs()
    options = {"objective": "error", "alpha": 0.1, "delta": 0.1, "order": np.array([2, 1, 0])}
    table = certify_groups(POLICIES, losses, costs, groups, fallback_index=2, **options)
    for name in ("a", "b"):
        rows = groups == name
        alone = certify(POLICIES, losses[rows], costs[rows], fallback_index=2, **options)
        assert table[name] == alone
    assert table["a"].index == 0 and table["b"].index == 1  # the cheap policy only where safe
    marginal = certify(POLICIES, losses, costs, fallback_index=2, **options)
    assert marginal.index == 1


def test_small_groups_raise_by_name_or_share_a_pooled_certificate():
    losses, costs, groups = losses_and_costs()
    groups = groups.astype(object)
    groups[:5] = "tiny"
    options = {"objective": "error", "alpha": 0.1, "delta": 0.1, "order": np.array([2, 1, 0])}
    with pytest.raises(InfeasibleCalibrationError, match=r"'tiny' \(n=5\)"):
        certify_groups(POLICIES, losses, costs, groups, **options)
    table = certify_groups(POLICIES, losses, costs, groups, small_groups="pool",
                           group_guarantee="all", **options)
    assert sorted(table) == sorted(["a", "b", POOLED]) and table[POOLED].n == 5
    assert table["a"].delta == pytest.approx(0.1 / 3)
