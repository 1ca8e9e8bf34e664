"""Policy families: cascades, parallel sets, single models, the training grid, JSON state."""

from __future__ import annotations

import numpy as np
import pytest

from racer.aggregate import log_odds
from racer.policies import (
    Cascade,
    ParallelSets,
    PolicyData,
    Single,
    answer_losses,
    policy_from_state,
    policy_grid,
)


def _data(n: int = 200, m: int = 4, seed: int = 0) -> PolicyData:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, m)) < np.linspace(0.5, 0.9, m)).astype(float)
    truth = rng.integers(0, 4, size=n)
    wrong = (truth[:, None] + rng.integers(1, 4, size=(n, m))) % 4
    codes = np.where(labels == 1, truth[:, None], wrong)
    costs = np.broadcast_to(np.array([1.0, 2.0, 3.0, 10.0])[:m], (n, m)).copy()
    scores = np.clip(labels * 0.3 + rng.random((n, m)) * 0.7, 0, 1)
    return PolicyData(labels, codes, costs, scores)


def test_a_cascade_that_escalates_everything_equals_the_reference():
    data = _data()
    cascade = Cascade((0, 1, 2), threshold=np.inf, fallback=3, weights=(1.0, 1.0, 1.0))
    outcome = cascade.simulate(data)
    assert (outcome.served == 3).all() and outcome.escalated.all()
    np.testing.assert_array_equal(outcome.cost, data.costs.sum(axis=1))
    reference = Single(3).simulate(data)
    for objective in ("error", "regret"):
        np.testing.assert_array_equal(
            answer_losses(objective, outcome.served, None, data.quality, reference=3),
            answer_losses(objective, reference.served, None, data.quality, reference=3),
        )


def test_a_cascade_stops_at_the_first_tier_where_the_answers_agree_enough():
    codes = np.array([[0, 0, 1, 2], [0, 1, 1, 2], [0, 1, 2, 2]])
    data = PolicyData(np.ones((3, 4)), codes, np.ones((3, 4)))
    cascade = Cascade((0, 1, 2), threshold=1.5, fallback=3, weights=(1.0, 1.0, 1.0))
    outcome = cascade.simulate(data)
    # Row 0: tiers 0, 1 agree (margin 2). Row 1: 1 and 2 outvote 0 (margin 1 < 1.5): escalate.
    # Row 2: three different answers: escalate.
    assert outcome.served.tolist() == [0, 3, 3]
    assert outcome.invoked.sum(axis=1).tolist() == [2, 4, 4]
    assert outcome.escalated.tolist() == [False, True, True]


def test_threshold_zero_cascade_is_its_first_tier():
    data = _data()
    outcome = Cascade((1, 2), 0.0, 3, (1.0, 1.0)).simulate(data)
    np.testing.assert_array_equal(outcome.served, Single(1).simulate(data).served)
    np.testing.assert_array_equal(outcome.cost, data.costs[:, 1])


def test_router_weighted_cascade_uses_the_scores_log_odds():
    data = _data()
    cascade = Cascade((0, 1), 1.0, 3)
    weights = cascade.tier_weights(data)
    np.testing.assert_allclose(weights[:, :2], log_odds(data.scores[:, :2]))
    assert (weights[:, 2:] == 0).all()
    with pytest.raises(ValueError, match="router's scores"):
        cascade.simulate(PolicyData(data.quality, data.codes, data.costs))


def test_an_empty_parallel_set_escalates_instead_of_refusing():
    data = _data()
    nothing = ParallelSets("threshold", 0.0, "vote", fallback=3).simulate(data)
    assert (nothing.served == 3).all() and nothing.escalated.all()
    everything = ParallelSets("threshold", 1.0, "logodds", fallback=3).simulate(data)
    assert everything.invoked.all() and not everything.escalated.any()
    np.testing.assert_allclose(everything.cost, data.costs.sum(axis=1))


def test_grid_comes_from_training_prices_and_accuracy():
    prices = np.array([1.0, 2.0, 3.0, 10.0, 0.5])
    accuracy = np.array([0.6, 0.8, 0.7, 0.95, 0.4])
    grid = policy_grid(
        prices, accuracy, fallback=3, n_candidates=3, max_chain=2, thresholds=(0.0, 1.0)
    )
    assert grid[0] == Single(3)
    cascades = [p for p in grid if isinstance(p, Cascade)]
    # Tiers from the 3 most accurate cheaper models (1, 2, 0), in price order.
    assert {p.chain for p in cascades} == {(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)}
    assert all(p.fallback == 3 for p in cascades)
    assert len(cascades) == 6 * 2
    chain = next(p for p in cascades if p.chain == (0, 1))
    np.testing.assert_allclose(chain.weights, log_odds(accuracy[[0, 1]]))


@pytest.mark.parametrize(
    "policy",
    [
        Single(2),
        Cascade((0, 1), 2.5, 3, (0.4, 1.2)),
        Cascade((1,), 1.0, 3),
        ParallelSets("cumulative", 0.4, "best", 2),
    ],
)
def test_policies_round_trip_through_json_state(policy):
    import json

    assert policy_from_state(json.loads(json.dumps(policy.state()))) == policy


def test_a_judged_set_pays_the_judge_and_is_certified_for_its_worst_pick():
    data = _data(n=300, seed=3)
    judged = ParallelSets("threshold", 0.5, "judge", fallback=3, judge=3)
    outcome = judged.simulate(data)
    sets = judged.sets(data.scores)
    plain = ParallelSets("threshold", 0.5, "best", fallback=3).simulate(data)
    # The judge is paid exactly where two or more answers reach it.
    extra = np.where(sets.sum(axis=1) >= 2, data.costs[:, 3], 0.0)
    np.testing.assert_allclose(outcome.cost - plain.cost, extra)
    # Its served answer is never better than any member's: the loss bounds every verdict.
    for objective in ("error", "regret"):
        worst = answer_losses(objective, outcome.served, None, data.quality, reference=3)
        for aggregator in ("best", "vote", "logodds"):
            other = ParallelSets("threshold", 0.5, aggregator, fallback=3).simulate(data)
            loss = answer_losses(objective, other.served, None, data.quality, reference=3)
            assert (worst >= loss).all()
    assert "judging (certified for its worst pick)" in judged.describe(("a", "b", "c", "d"))
    assert policy_from_state(judged.state()) == judged
    with pytest.raises(ValueError, match="judge"):
        ParallelSets("threshold", 0.5, "judge", fallback=3)
