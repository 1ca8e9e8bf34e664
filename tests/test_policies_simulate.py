"""simulate_family equals each policy's own simulate, cascades included."""

import numpy as np

from racer.policies import PolicyData, policy_grid, simulate_all
from racer.policies.simulate import simulate_family


def test_simulate_family_equals_simulating_each_policy():
    rng = np.random.default_rng(3)
    n, m = 300, 5
    data = PolicyData(
        quality=rng.integers(0, 2, size=(n, m)).astype(float),
        codes=rng.integers(-2, 3, size=(n, m)),
        costs=rng.uniform(0.1, 1.0, size=(n, m)),
        scores=rng.uniform(size=(n, m)),
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
    assert len(fast) == len(slow) > 100
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a.served, b.served)
        assert np.array_equal(a.invoked, b.invoked)
        assert np.array_equal(a.escalated, b.escalated)
        assert np.allclose(a.cost, b.cost)
