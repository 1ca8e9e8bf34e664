"""Risk curves and the choice of lambda, against brute-force scans."""

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from racer import bounds
from racer.calibration import (
    calibrate,
    calibrate_breakpoints,
    loss_breakpoints,
    point_losses,
    risk_curve,
)
from racer.exceptions import InfeasibleCalibrationError
from racer.sets import augmented_scores, entry_levels


def make_problem(n=400, m=4, seed=0, graded=False):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(n, m))
    labels = (rng.uniform(size=(n, m)) < scores**1.5).astype(float)
    if graded:
        labels = np.round(labels * rng.uniform(size=(n, m)), 1)
    return scores, labels


def entries(scores, family="threshold", abstention=True):
    costs = np.linspace(1, 5, scores.shape[1])
    return entry_levels(augmented_scores(scores), family, abstention=abstention, costs=costs)


@pytest.mark.parametrize("family", ["threshold", "cumulative", "cost"])
@pytest.mark.parametrize("abstention", [True, False])
@pytest.mark.parametrize("graded", [False, True])
def test_risk_curve_equals_brute_force_evaluation(family, abstention, graded):
    scores, labels = make_problem(graded=graded, seed=1)
    entry = entries(scores, family, abstention)
    curve = risk_curve(entry, labels, abstention=abstention)
    # At every breakpoint, and just below it, the curve equals a direct evaluation.
    probe = np.concatenate([curve.lambdas, np.nextafter(curve.lambdas[1:], -np.inf)])
    for lam in probe:
        direct = point_losses(entry, labels, lam, abstention).sum()
        assert curve.loss_total_at(lam) == pytest.approx(direct, abs=1e-9)
    assert np.all(np.diff(curve.loss_totals) <= 1e-12)  # non-increasing
    if not graded:
        assert curve.loss_totals.dtype.kind == "i"


@functools.cache
def _hb_ucb_of_count(k: int, n: int) -> float:
    return float(bounds.hb_ucb(k, n, 0.1))


def brute_force_rcps(entry, labels, alpha, delta, ucb, abstention=True):
    """Scan every distinct lambda from the largest down; stop before the first failure."""
    candidates = np.unique(np.concatenate([[0.0], entry[np.isfinite(entry)]]))
    chosen = None
    for lam in candidates[::-1]:
        losses = point_losses(entry, labels, lam, abstention)
        if ucb(losses) > alpha:
            break
        chosen = lam
    return chosen


@pytest.mark.parametrize("abstention", [True, False])
@pytest.mark.parametrize(
    ("bound", "ucb"),
    [
        ("binomial", lambda x: bounds.binomial_ucb(int(x.sum()), x.size, 0.1)),
        # The bound of a 0/1 loss vector depends on its count only: computed once per count.
        ("hb", lambda x: _hb_ucb_of_count(int(x.sum()), x.size)),
        ("hoeffding", lambda x: bounds.hoeffding_ucb(x.mean(), x.size, 0.1)),
    ],
)
def test_chosen_lambda_equals_brute_force_rcps(bound, ucb, abstention):
    scores, labels = make_problem(n=300, seed=2)
    entry = entries(scores, abstention=abstention)
    result = calibrate(entry, labels, alpha=0.15, delta=0.1, bound=bound, abstention=abstention)
    expected = brute_force_rcps(entry, labels, 0.15, 0.1, ucb, abstention)
    assert result.threshold == expected
    losses = point_losses(entry, labels, result.threshold, abstention)
    assert result.empirical_risk == pytest.approx(losses.mean())
    assert result.risk_bound == pytest.approx(float(ucb(losses)), abs=1e-7)
    assert result.risk_bound <= 0.15


def test_conformal_risk_control_rule():
    scores, labels = make_problem(n=500, seed=3)
    entry = entries(scores)
    result = calibrate(entry, labels, alpha=0.1, guarantee="expectation")
    expected = brute_force_rcps(
        entry, labels, 0.1, None, lambda x: (x.sum() + 1) / (x.size + 1)
    )
    assert result.threshold == expected
    assert result.bound == "crc"


def test_wsr_chosen_lambda_is_the_fixed_sequence_scan_of_its_grid():
    scores, labels = make_problem(n=600, seed=4, graded=True)
    entry = entries(scores)
    result = calibrate(entry, labels, alpha=0.35, delta=0.1, bound="wsr", wsr_grid_size=101)
    order = np.random.default_rng(0).permutation(600)
    grid = np.linspace(0, 1, 101)
    chosen = None
    for lam in grid[::-1]:
        losses = point_losses(entry[order], labels[order], lam)
        if bounds.wsr_pvalue(losses, 0.35, 0.1) > 0.1:
            break
        chosen = lam
    assert result.threshold == pytest.approx(chosen)
    assert result.risk_bound <= 0.35 + 1e-9


def test_binary_losses_are_counted_as_integers():
    # n = 3 losses of 1 out of 10: a float mean 0.30000000000000004 must not round up.
    entry = np.zeros((10, 2))
    labels = np.ones((10, 1))
    entry[:3, 1] = 0.5
    curve = risk_curve(entry, labels)
    assert curve.loss_totals.tolist() == [3, 0]


def test_infeasible_with_too_few_points_says_the_n_needed():
    scores, labels = make_problem(n=15, seed=5)
    with pytest.raises(InfeasibleCalibrationError, match=r"n >= 22 calibration points"):
        calibrate(entries(scores), labels, alpha=0.1, delta=0.1)
    with pytest.raises(InfeasibleCalibrationError, match=r"n >= 116"):
        calibrate(entries(scores), labels, alpha=0.1, delta=0.1, bound="hoeffding")


def test_infeasible_when_largest_sets_miss_too_often():
    scores, labels = make_problem(n=400, seed=6, graded=True)
    with pytest.raises(InfeasibleCalibrationError, match="even the largest sets"):
        calibrate(entries(scores), labels, alpha=0.01, delta=0.1, bound="hoeffding")


def test_binary_only_bounds_refuse_graded_losses():
    scores, labels = make_problem(n=300, seed=7, graded=True)
    with pytest.raises(ValueError, match="0/1 labels only.*bound='hb', 'hoeffding' or 'wsr'"):
        calibrate(entries(scores), labels, alpha=0.3, bound="binomial")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), family=st.sampled_from(["threshold", "cumulative", "cost"]),
       graded=st.booleans(), abstention=st.booleans(),
       lams=st.lists(st.floats(0, 2), min_size=2, max_size=5))
def test_loss_is_non_increasing_in_lambda(seed, family, graded, abstention, lams):
    scores, labels = make_problem(n=30, m=3, seed=seed, graded=graded)
    entry = entries(scores, family, abstention)
    losses = [point_losses(entry, labels, lam, abstention) for lam in sorted(lams)]
    for smaller, larger in zip(losses, losses[1:], strict=False):
        assert np.all(larger <= smaller + 1e-12)


def test_a_priced_refusal_gives_way_to_the_cheapest_certified_lambda():
    from racer.calibration import priced_threshold

    # lambda 0.1: query 1 refused (abstain only), query 2 calls model a;
    # lambda 0.3: both call one model; lambda 0.6: query 2 calls a and b.
    entry = np.array([[0.05, 0.3, 0.9], [0.8, 0.1, 0.6]])
    assert priced_threshold(entry, 0.1, refusal_cost=0.0) == 0.1
    assert priced_threshold(entry, 0.1) == 0.1  # a refusal costs one model: a tie, smallest
    assert priced_threshold(entry, 0.1, refusal_cost=1.5) == 0.3
    assert priced_threshold(entry, 0.1, model_costs=np.array([0.2, 5.0]), refusal_cost=0.3) == 0.3
    assert priced_threshold(entry, 0.35, refusal_cost=9.0) == 0.35  # never below the RCPS lambda


@pytest.mark.parametrize("bound", ["binomial", "hb", "hoeffding"])
@pytest.mark.parametrize("guarantee", ["pac", "expectation"])
def test_calibrating_a_groups_breakpoints_equals_calibrating_its_points(bound, guarantee):
    scores, labels = make_problem(seed=4)
    labels[::7, 1] = np.nan  # unknown labels at their worst case
    entry = entries(scores)
    rows = np.flatnonzero(np.arange(len(scores)) % 3 != 0)[::-1]  # any order
    direct = calibrate(entry[rows], labels[rows], alpha=0.2, bound=bound, guarantee=guarantee)
    from_breakpoints = calibrate_breakpoints(
        loss_breakpoints(entry, labels)[rows], alpha=0.2, bound=bound, guarantee=guarantee
    )
    assert from_breakpoints.threshold == direct.threshold
    assert from_breakpoints.risk_bound == direct.risk_bound
    assert np.array_equal(from_breakpoints.curve.loss_totals, direct.curve.loss_totals)
    with pytest.raises(ValueError, match="needs each point's losses"):
        calibrate_breakpoints(loss_breakpoints(entry, labels), alpha=0.2, bound="wsr")
