"""Strict abstention: coarse chains or one fixed sequence along a training front, refusals
priced when choosing among the certified pairs."""

from __future__ import annotations

import numpy as np
import pytest

from racer import InfeasibleCalibrationError
from racer.calibration_strict import StrictSplit, calibrate_strict, strict_grids
from racer.ltt import risk_cost_front


def split(seed, n=600, m=4, hard=0.0):
    """Scores, the strict inputs (top model at -inf) and labels of a synthetic split."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(n, m))
    labels = (rng.uniform(size=(n, m)) < scores**0.7).astype(float)
    hard_rows = rng.uniform(size=n) < hard  # no model answers them, and scores are low
    labels[hard_rows] = 0.0
    scores[hard_rows] *= 0.3
    model_entry = 1.0 - scores
    model_entry[np.arange(n), scores.argmax(axis=1)] = -np.inf
    return StrictSplit(model_entry, 1.0 - scores.max(axis=1), labels)


def brute_force(data, lambdas, taus, refusal_cost=1.0):
    """Mean loss and mean cost (models called + refusal_cost per abstention) of every pair,
    tau-major, from the served decisions themselves."""
    n = len(data.quality)
    risks, costs = [], []
    for tau in taus:
        abstained = data.abstain_score >= tau
        for lam in lambdas:
            called = (data.model_entry <= lam) & ~abstained[:, None]
            good = (called & (data.quality == 1)).any(axis=1)
            answerable = data.quality.max(axis=1) == 1
            loss = np.where(abstained, answerable, ~good)
            risks.append(loss.mean())
            costs.append((called.sum() + refusal_cost * abstained.sum()) / n)
    return np.array(risks), np.array(costs)


@pytest.mark.parametrize("refusal_cost", [None, 0.0, 2.5])
def test_the_chosen_pair_is_the_cheapest_certified_with_refusals_priced(refusal_cost):
    data = split(0, hard=0.25)
    result = calibrate_strict(data.model_entry, data.abstain_score, data.quality, alpha=0.3,
                              lambda_grid_size=41, refusal_cost=refusal_cost)
    risks, costs = brute_force(data, result.lambda_grid, result.abstain_grid,
                               1.0 if refusal_cost is None else refusal_cost)
    certified = result.ltt.certified
    assert result.mean_cost == pytest.approx(costs[certified].min())
    assert result.mean_cost == pytest.approx(costs[result.ltt.chosen])
    assert result.empirical_risk == pytest.approx(risks[result.ltt.chosen])
    answering = certified & np.repeat(np.isinf(result.abstain_grid), 41)
    if result.abstain_threshold < np.inf:  # a refusal is chosen only when it costs less
        assert result.mean_cost <= costs[answering].min(initial=np.inf)


def test_a_free_refusal_is_bought_where_a_priced_one_is_not():
    data = split(1, hard=0.3)
    free = calibrate_strict(data.model_entry, data.abstain_score, data.quality, alpha=0.3,
                            refusal_cost=0.0)
    priced = calibrate_strict(data.model_entry, data.abstain_score, data.quality, alpha=0.3)
    assert free.abstention_rate > priced.abstention_rate
    assert free.mean_set_size < priced.mean_set_size


def test_the_front_is_the_training_risk_cost_front_tested_at_the_full_delta():
    calibration, training = split(2, hard=0.2), split(3, n=400, hard=0.2)
    result = calibrate_strict(calibration.model_entry, calibration.abstain_score,
                              calibration.quality, alpha=0.3, lambda_grid_size=41,
                              training=training)
    lambdas, taus = strict_grids((0.0, 1.0), 41, 20)
    assert np.array_equal(result.abstain_grid, taus)
    train_risk, train_cost = brute_force(training, lambdas, taus)
    front = risk_cost_front(train_risk, train_cost)
    assert result.procedure == "front" and np.array_equal(result.tested, front)
    p_values = result.ltt.p_values[front]
    first_failure = np.flatnonzero(p_values > 0.1)
    n_passed = first_failure[0] if first_failure.size else front.size
    assert np.array_equal(np.flatnonzero(result.ltt.certified), np.sort(front[:n_passed]))


def test_without_training_data_the_coarse_grid_shares_delta_over_five_chains():
    data = split(4)
    result = calibrate_strict(data.model_entry, data.abstain_score, data.quality, alpha=0.3)
    assert result.procedure == "chains"
    assert result.abstain_grid.tolist() == [0.25, 0.5, 0.75, 1.0, np.inf]
    assert result.ltt.certified.sum() > 0
    assert np.all(result.ltt.p_values[result.ltt.certified] <= 0.1 / 5)


def test_infeasible_message_counts_only_rows_no_completion_makes_answerable():
    data = split(5, n=200)
    labels = np.zeros_like(data.quality)
    labels[:40] = np.nan  # unknown: a loss whatever is done, not "no model answers it"
    labels[40:50, 0] = 1.0
    with pytest.raises(InfeasibleCalibrationError, match=r"75\.0% of the calibration queries"):
        calibrate_strict(data.model_entry, data.abstain_score, labels, alpha=0.05)
