"""The PAC promise on real routing data, tested exactly (racer/method.md section 9).

The pool of labelled test queries is the population: every trial calibrates on an
i.i.d. sample drawn from it with replacement, and the risk is the pool's risk, free of
test-set noise. The share of trials with risk above alpha must stay at or below delta
up to Monte-Carlo error, while the set size stays close to the population oracle. The
base router is the plain TF-IDF + logistic regression of tests/real_data.py, not the project's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from real_data import logistic_scores

from racer import RACER
from racer.calibration import risk_curve
from racer.data import load_dataset
from racer.sets import augmented_scores, entry_levels

TRIALS = 200
DELTA = 0.1
ALPHAS = (0.05, 0.1, 0.2)
MONTE_CARLO_SLACK = 3 * math.sqrt(DELTA * (1 - DELTA) / TRIALS)  # 0.064
# Small alphas flag most answers; that warning is test_estimator's, these tests check the risk.
pytestmark = pytest.mark.filterwarnings("ignore:The abstain flag is raised:UserWarning")


def population_check(scores, labels, alpha, abstention, n_cal, rng):
    """Violation rate and mean set size of RACER, the oracle and the uncorrected rule."""
    entry = entry_levels(augmented_scores(scores), abstention=abstention, refusals=False)
    pool_curve = risk_curve(entry, labels, abstention=abstention)
    pool_risk = pool_curve.loss_totals / pool_curve.n
    oracle_lambda = pool_curve.lambdas[np.argmax(pool_risk <= alpha)]

    def pool_risk_and_size(lam):
        models = entry[:, 1:] <= lam
        return pool_curve.loss_total_at(lam) / pool_curve.n, models.sum(axis=1).mean()

    racer_risks, racer_sizes, naive_risks = [], [], []
    for _ in range(TRIALS):
        sample = rng.integers(0, len(scores), size=n_cal)
        router = RACER(alpha=alpha, delta=DELTA, abstention=abstention)
        router.fit(scores[sample], labels[sample])
        risk, size = pool_risk_and_size(router.threshold_)
        racer_risks.append(risk)
        racer_sizes.append(size)
        # Uncorrected: the smallest lambda whose *calibration* risk is <= alpha.
        cal_curve = router.risk_curve_
        naive_lambda = cal_curve.lambdas[np.argmax(cal_curve.empirical_risk <= alpha)]
        naive_risks.append(pool_risk_and_size(naive_lambda)[0])
    return {
        "violation": float(np.mean(np.array(racer_risks) > alpha)),
        "naive_violation": float(np.mean(np.array(naive_risks) > alpha)),
        "size": float(np.mean(racer_sizes)),
        "oracle_size": float(pool_risk_and_size(oracle_lambda)[1]),
    }


def assert_promise_kept(results):
    assert results["violation"] <= DELTA + MONTE_CARLO_SLACK, results
    # The bound costs something, but the sets stay close to the population oracle's.
    assert results["size"] <= results["oracle_size"] * 1.35 + 0.25, results
    assert results["size"] >= results["oracle_size"] * 0.8 - 0.1, results


@pytest.mark.parametrize("abstention", [True, False])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_pac_promise_on_routerdc_mmlu(routerdc_pool, alpha, abstention):
    scores, labels = routerdc_pool
    results = population_check(scores, labels, alpha, abstention, 1000, np.random.default_rng(1))
    assert_promise_kept(results)
    # The same test catches a method without a bound.
    assert results["naive_violation"] > DELTA + MONTE_CARLO_SLACK, results


@pytest.mark.parametrize("abstention", [True, False])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_pac_promise_on_routerbench_arc(routerbench_pool, alpha, abstention):
    scores, labels = routerbench_pool
    results = population_check(scores, labels, alpha, abstention, 400, np.random.default_rng(2))
    assert_promise_kept(results)


@pytest.fixture(scope="module")
def gsm8k_graded_pool(shared_data):
    train = load_dataset(shared_data / "routerdc" / "gsm8k-train.json")
    test = load_dataset(shared_data / "routerdc" / "gsm8k-test.json")
    return logistic_scores(train, test), test.quality


@pytest.mark.parametrize("abstention", [True, False])
@pytest.mark.parametrize("alpha", [0.2, 0.3])
def test_pac_promise_for_graded_pass_fractions_with_wsr(gsm8k_graded_pool, alpha, abstention):
    scores, quality = gsm8k_graded_pool
    assert np.any((quality > 0) & (quality < 1))  # really graded: the loss is 1 - max q
    results = population_check(scores, quality, alpha, abstention, 800, np.random.default_rng(3))
    assert results["violation"] <= DELTA + MONTE_CARLO_SLACK, results
    # WSR on a fixed grid is more conservative than the binomial bound, never less.
    assert results["size"] >= results["oracle_size"] * 0.8 - 0.1, results
