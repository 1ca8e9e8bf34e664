"""Refusal rate, queries without a right answer, flag rate and flag precision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from racer import RACER
from racer.diagnostics import served_rates

LABELS = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [np.nan, 0.0]])


def test_flag_mode_rates():
    decision = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=bool)
    rates = served_rates("flag", decision, LABELS)
    assert rates.refusal_rate == 0.25
    assert rates.without_right_answer == 0.75  # rows 2, 3 miss, row 4 is refused
    assert rates.flag_rate == 0.5  # rows 1, 2: flagged answers (row 4 is a refusal)
    assert rates.flag_precision == 0.5  # row 2's flag warned rightly, row 1's did not


def test_strict_abstentions_are_refusals_and_nothing_is_a_flag():
    decision = np.array([[1, 1, 1], [0, 1, 0], [0, 1, 1], [0, 1, 0]], dtype=bool)
    rates = served_rates("strict", decision, LABELS)
    assert (rates.refusal_rate, rates.without_right_answer, rates.flag_rate) == (0.25, 0.75, 0.0)
    assert math.isnan(rates.flag_precision)
    assert served_rates("off", decision, LABELS).refusal_rate == 0.0


def test_the_estimator_reports_the_rates_of_its_calibration_decisions():
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(2000, 4))
    labels = (rng.uniform(size=(2000, 4)) < scores**3).astype(float)
    for router in (RACER(alpha=0.25), RACER(alpha=0.25, refusals=True)):
        router.fit(scores, labels)
        rates = served_rates("flag", router.predict(scores, include_abstain=True), labels)
        assert router.refusal_rate_ == rates.refusal_rate == router.abstention_rate_
        assert router.without_right_answer_ == rates.without_right_answer
        assert router.flag_precision_ == rates.flag_precision
    assert RACER(alpha=0.25).fit(scores, labels).refusal_rate_ == 0.0
    assert router.refusal_rate_ > 0.01  # the same calibration with refusals allowed


def test_unanswerable_share_counts_only_rows_whose_every_label_is_a_known_zero():
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=(400, 3))
    labels = np.ones((400, 3))
    labels[:40] = 0.0
    labels[40:100, 0] = np.nan  # unknown: answerable under the worst completion
    labels[40:100, 1:] = 0.0
    router = RACER(alpha=0.3).fit(scores, labels)
    assert router.unanswerable_share_ == pytest.approx(0.1)


@pytest.mark.filterwarnings("ignore:The abstain flag is raised:UserWarning")  # incidental here
def test_with_refusals_allowed_a_priced_refusal_is_not_bought_below_its_cost():
    rng = np.random.default_rng(2)
    scores = rng.uniform(size=(3000, 4))
    labels = (rng.uniform(size=(3000, 4)) < scores**3).astype(float)
    free = RACER(alpha=0.25, refusals=True, refusal_cost=0.0).fit(scores, labels)
    priced = RACER(alpha=0.25, refusals=True, refusal_cost=1e3).fit(scores, labels)
    assert priced.threshold_ >= free.threshold_ and priced.risk_bound_ <= 0.25
    assert priced.refusal_rate_ < free.refusal_rate_
    decision = priced.predict(scores, include_abstain=True)
    assert priced.empirical_risk_ == pytest.approx(priced.risk(scores, labels))
    assert priced.refusal_rate_ == np.mean(~decision[:, 1:].any(axis=1))
