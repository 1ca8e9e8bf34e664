"""Learn-then-Test: p-values, certification and the choice among the certified."""

import numpy as np
import pytest
from scipy import stats

from racer import bounds
from racer.ltt import learn_then_test, ltt_pvalues


def test_one_configuration_is_the_exact_binomial_test():
    rng = np.random.default_rng(0)
    for n, rate, alpha in [(200, 0.05, 0.1), (500, 0.12, 0.1), (60, 0.0, 0.05)]:
        losses = (rng.uniform(size=(n, 1)) < rate).astype(float)
        k = int(losses.sum())
        p = stats.binom.cdf(k, n, alpha)
        result = learn_then_test(losses, alpha=alpha, delta=0.1)
        assert result.p_values[0] == pytest.approx(p, rel=1e-12)
        assert bool(result.certified[0]) == (p <= 0.1)
        assert result.chosen == (0 if p <= 0.1 else None)


def test_nothing_is_certified_whose_p_value_exceeds_its_level():
    rng = np.random.default_rng(1)
    losses = (rng.uniform(size=(300, 30)) < np.linspace(0.01, 0.3, 30)).astype(float)
    for method, level in [("bonferroni", 0.1 / 30), ("fixed_sequence", 0.1)]:
        result = learn_then_test(losses, alpha=0.1, delta=0.1, method=method)
        assert np.all(result.p_values[result.certified] <= level)
        # a configuration whose UCB exceeds alpha is never certified
        ucb = bounds.binomial_ucb(losses.sum(axis=0).astype(int), 300, level)
        assert not np.any(result.certified & (ucb > 0.1 + 1e-12))


def test_the_cheapest_certified_configuration_is_chosen():
    rng = np.random.default_rng(2)
    losses = (rng.uniform(size=(800, 4)) < [0.01, 0.02, 0.03, 0.4]).astype(float)
    result = learn_then_test(
        losses, alpha=0.1, delta=0.1, method="holm", config_costs=[5.0, 1.0, 2.0, 0.1]
    )
    assert result.certified.tolist() == [True, True, True, False]
    assert result.chosen == 1  # the uncertified cheapest (index 3) is never returned


def test_graded_losses_use_hb_or_wsr_and_refuse_binomial():
    rng = np.random.default_rng(3)
    graded = rng.uniform(0, 0.1, size=(500, 2))
    with pytest.raises(ValueError, match="needs 0/1 losses"):
        ltt_pvalues(graded, 0.1)
    hb = ltt_pvalues(graded, 0.1, bound="hb")
    assert hb == pytest.approx(bounds.hb_pvalue_bounded(graded.sum(axis=0), 500, 0.1))
    wsr = ltt_pvalues(graded, 0.1, bound="wsr", delta=0.1)
    assert np.all(wsr <= 0.1)  # mean 0.05 vs alpha 0.1 at n = 500 is clearly certified


def test_hb_on_graded_losses_equals_hb_on_counts_for_integers():
    for k in [0, 3, 17]:
        assert bounds.hb_pvalue_bounded(float(k), 100, 0.1) == pytest.approx(
            bounds.hb_pvalue(k, 100, 0.1), rel=1e-12
        )


def test_ltt_validity_on_a_grid_of_non_monotone_risks():
    # True risks known: a trial fails when any certified configuration has risk > alpha.
    rng = np.random.default_rng(4)
    true_risk = np.array([0.15, 0.08, 0.12, 0.09, 0.2, 0.095])
    alpha, delta, trials, n = 0.1, 0.1, 600, 400
    failures = 0
    for _ in range(trials):
        losses = (rng.uniform(size=(n, true_risk.size)) < true_risk).astype(float)
        result = learn_then_test(losses, alpha=alpha, delta=delta, method="holm")
        failures += bool(np.any(result.certified & (true_risk > alpha)))
    assert failures / trials <= delta + 3 * np.sqrt(delta * (1 - delta) / trials)
