"""The anytime-valid monitor of the realised misrouting rate."""

from __future__ import annotations

import numpy as np
import pytest

from racer.serve.monitor import RiskMonitor


def run(rate: float, n: int, seed: int, alpha: float = 0.1) -> RiskMonitor:
    monitor = RiskMonitor(alpha=alpha, delta=0.05)
    for loss in np.random.default_rng(seed).random(n) < rate:
        monitor.update(float(loss))
    return monitor


def test_at_the_promised_rate_false_alarms_stay_below_delta_however_long_we_watch():
    alarms = [run(0.1, 1500, seed).alarm for seed in range(60)]
    # Monte-Carlo bound: 3 standard errors above delta = 0.05 over 60 trials.
    assert np.mean(alarms) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 60)


def test_a_clearly_broken_promise_raises_the_alarm_and_the_bound_stays_below_the_truth():
    monitor = run(0.3, 600, seed=1)
    assert monitor.alarm
    assert 0.1 < monitor.lower_bound < 0.3
    assert monitor.state()["misrouting_rate"] == pytest.approx(monitor.total_loss / 600)


def test_the_alarm_is_reported_once_and_stays_raised():
    monitor = RiskMonitor(alpha=0.1, delta=0.05)
    raised = [monitor.update(1.0) for _ in range(10)]
    assert raised.count(True) == 1
    for _ in range(200):
        monitor.update(0.0)
    assert monitor.alarm


def test_no_feedback_means_no_evidence():
    state = RiskMonitor(alpha=0.2).state()
    assert state == {
        "alpha": 0.2,
        "delta": 0.05,
        "n_feedback": 0,
        "misrouting_rate": None,
        "risk_lower_bound": 0.0,
        "alarm": False,
    }


def test_invalid_levels_and_losses_are_refused():
    with pytest.raises(ValueError, match="alpha and delta"):
        RiskMonitor(alpha=0.0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        RiskMonitor(alpha=0.1).update(2.0)
