"""Upper confidence bounds and p-values against exact values and their limits."""

import math

import numpy as np
import pytest
from scipy import optimize, stats

from racer import bounds


def exact_clopper_pearson(k: int, n: int, delta: float) -> float:
    """Largest p with P(Binom(n, p) <= k) >= delta, by root finding on the binomial CDF."""
    if k == n:
        return 1.0
    return optimize.brentq(lambda p: stats.binom.cdf(k, n, p) - delta, k / n, 1.0, xtol=1e-14)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 22), (3, 50), (17, 200), (500, 1000), (9, 10)])
@pytest.mark.parametrize("delta", [0.01, 0.1, 0.3])
def test_binomial_ucb_matches_root_of_binomial_cdf(k, n, delta):
    assert bounds.binomial_ucb(k, n, delta) == pytest.approx(
        exact_clopper_pearson(k, n, delta), abs=1e-10
    )


def test_binomial_ucb_limits():
    # r = 0: closed form 1 - delta^(1/n); r = 1: the bound is 1.
    for n in (1, 5, 100, 10**7):
        assert bounds.binomial_ucb(0, n, 0.1) == pytest.approx(1 - 0.1 ** (1 / n), rel=1e-9)
        assert bounds.binomial_ucb(n, n, 0.1) == 1.0
    # Huge n: the bound approaches the normal approximation r + z sqrt(r(1-r)/n).
    n, k = 10**8, 10**7
    normal = 0.1 + stats.norm.ppf(0.9) * math.sqrt(0.09 / n)
    assert bounds.binomial_ucb(k, n, 0.1) == pytest.approx(normal, rel=1e-5)


def test_binomial_ucb_is_vectorised_and_monotone():
    ucb = bounds.binomial_ucb(np.arange(0, 101), 100, 0.1)
    assert ucb.shape == (101,)
    assert np.all(np.diff(ucb) > 0)
    assert np.all(ucb >= np.arange(0, 101) / 100)


def test_counts_must_be_integers():
    with pytest.raises(ValueError, match="integers"):
        bounds.binomial_ucb(2.5, 10, 0.1)
    with pytest.raises(ValueError, match=r"\[0, n=10\]"):
        bounds.binomial_pvalue(11, 10, 0.1)


def test_binomial_pvalue_duality_with_ucb():
    n, delta = 300, 0.1
    for k in (0, 10, 29, 60):
        ucb = float(bounds.binomial_ucb(k, n, delta))
        assert bounds.binomial_pvalue(k, n, ucb) == pytest.approx(delta, rel=1e-8)
        assert bounds.binomial_pvalue(k, n, ucb + 1e-6) < delta
        assert bounds.binomial_pvalue(k, n, ucb - 1e-6) > delta


def test_hb_pvalue_matches_its_definition():
    n, alpha = 400, 0.1
    for k in (0, 20, 40, 60):
        r = k / n
        a = min(r, alpha)
        h = (a * math.log(a / alpha) if a > 0 else 0.0) + (1 - a) * math.log(
            (1 - a) / (1 - alpha)
        )
        expected = min(1.0, math.exp(-n * h), math.e * stats.binom.cdf(k, n, alpha))
        assert bounds.hb_pvalue(k, n, alpha) == pytest.approx(expected, rel=1e-12)


def test_hb_is_never_tighter_than_the_exact_binomial():
    n = 500
    ks = np.arange(0, 200, 7)
    hb = bounds.hb_ucb(ks, n, 0.1)
    exact = bounds.binomial_ucb(ks, n, 0.1)
    assert np.all(hb >= exact - 1e-9)
    # and HB's p-value at its own bound equals delta
    for k, u in zip(ks[:5], hb[:5], strict=True):
        assert bounds.hb_pvalue(int(k), n, float(u)) == pytest.approx(0.1, abs=1e-6)


def test_hoeffding_ucb_and_pvalue():
    assert bounds.hoeffding_ucb(0.05, 200, 0.1) == pytest.approx(
        0.05 + math.sqrt(math.log(10) / 400)
    )
    assert bounds.hoeffding_ucb(1.0, 10, 0.1) == 1.0
    assert bounds.hoeffding_pvalue(0.2, 100, 0.1) == 1.0
    assert bounds.hoeffding_pvalue(0.0, 100, 0.1) == pytest.approx(math.exp(-2))


def loop_wsr_log_wealth(losses: np.ndarray, risk: float, delta: float) -> float:
    """Textbook WSR (Bates et al., 2021, Prop. 5) written as a plain loop."""
    n = len(losses)
    wealth, best = 0.0, -np.inf
    mean_sum, var_sum = 0.0, 0.0
    previous_var = 0.25
    for i, loss in enumerate(losses, start=1):
        bet = min(1.0, math.sqrt(2 * math.log(1 / delta) / (n * previous_var)))
        wealth += math.log1p(-bet * (loss - risk))
        best = max(best, wealth)
        mean_sum += loss
        mean_hat = (0.5 + mean_sum) / (i + 1)
        var_sum += (loss - mean_hat) ** 2
        previous_var = (0.25 + var_sum) / (i + 1)
    return best


def test_wsr_pvalue_matches_a_loop_implementation():
    rng = np.random.default_rng(3)
    for losses in (rng.uniform(size=300) * 0.3, (rng.uniform(size=500) < 0.05).astype(float)):
        expected = min(1.0, math.exp(-loop_wsr_log_wealth(losses, 0.1, 0.1)))
        assert bounds.wsr_pvalue(losses, 0.1, 0.1) == pytest.approx(expected, rel=1e-9)


def test_wsr_ucb_is_where_wealth_crosses_one_over_delta():
    rng = np.random.default_rng(4)
    losses = rng.beta(1, 9, size=2000)
    ucb = bounds.wsr_ucb(losses, 0.1)
    assert losses.mean() < ucb < losses.mean() + 0.05
    assert loop_wsr_log_wealth(losses, ucb + 1e-6, 0.1) > math.log(10)
    assert loop_wsr_log_wealth(losses, ucb - 1e-6, 0.1) <= math.log(10)


def test_wsr_columns_are_independent_tests():
    rng = np.random.default_rng(5)
    a, b = rng.uniform(size=200) * 0.1, rng.uniform(size=200)
    both = bounds.wsr_pvalue(np.column_stack([a, b]), 0.2, 0.1)
    assert both[0] == pytest.approx(bounds.wsr_pvalue(a, 0.2, 0.1))
    assert both[1] == pytest.approx(bounds.wsr_pvalue(b, 0.2, 0.1))


@pytest.mark.parametrize(
    ("bound", "alpha", "delta", "expected"),
    [
        ("binomial", 0.1, 0.1, 22),
        ("binomial", 0.01, 0.1, 230),
        ("hb", 0.1, 0.1, 22),
        ("hoeffding", 0.1, 0.1, 116),
        ("hoeffding", 0.01, 0.1, 11513),
        ("crc", 0.1, 0.1, 9),
    ],
)
def test_n_needed_matches_method_figures(bound, alpha, delta, expected):
    assert bounds.n_needed(bound, alpha, delta) == expected


def test_n_needed_is_exactly_the_feasibility_edge():
    for alpha, delta in ((0.1, 0.1), (0.05, 0.05), (0.2, 0.01)):
        n = bounds.n_needed("binomial", alpha, delta)
        assert bounds.binomial_ucb(0, n, delta) <= alpha < bounds.binomial_ucb(0, n - 1, delta)
        n = bounds.n_needed("wsr", alpha, delta)
        assert bounds.wsr_pvalue(np.zeros(n), alpha, delta) <= delta
        assert bounds.wsr_pvalue(np.zeros(n - 1), alpha, delta) > delta
