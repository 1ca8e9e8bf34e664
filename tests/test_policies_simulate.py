"""simulate_family equals each policy's own simulate, cascades included."""

import numpy as np
import pytest

from racer.policies import PolicyData, policy_grid, simulate_all
from racer.policies.simulate import simulate_family


@pytest.mark.parametrize("free_text", [False, True])
def test_simulate_family_equals_simulating_each_policy(free_text):
    rng = np.random.default_rng(3)
    n, m = 300, 5
    agree = None
    if free_text:  # answers agree by similarity: cascades' codes come from agreement
        upper = rng.random((n, m, m)) < 0.6
        agree = upper | upper.transpose(0, 2, 1)
        agree[:, np.arange(m), np.arange(m)] = True
    data = PolicyData(
        quality=rng.integers(0, 2, size=(n, m)).astype(float),
        codes=np.full((n, m), -1) if free_text else rng.integers(-2, 3, size=(n, m)),
        costs=rng.uniform(0.1, 1.0, size=(n, m)),
        scores=rng.uniform(size=(n, m)),
        agree=agree,
    )
    grid = policy_grid(
        data.costs.mean(axis=0),
        np.array([0.6, 0.7, 0.8, 0.65, 0.9]),
        fallback=4,
        with_router=True,
        thresholds=(0.0, 0.5, 1.0, 2.0, 3.0),
        lambdas=(0.3, 0.7),
    )
    fast, slow = simulate_family(grid, data), simulate_all(grid, data)
    assert len(fast) == len(slow) > 50
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a.served, b.served)
        assert np.array_equal(a.invoked, b.invoked)
        assert np.array_equal(a.escalated, b.escalated)
        assert np.allclose(a.cost, b.cost)
    # Some cascades stop early (agreement counts), some escalate.
    escalated = [o.escalated.mean() for o in fast]
    assert min(escalated) < 0.5 < max(escalated)
