"""Trials: the vectorised calibration agrees with the estimator, and the guarantee holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from racer.data.load import load_dataset
from racer.estimator import RACER
from racer.evaluation.baselines import baseline_methods, racer_methods
from racer.evaluation.run import EvaluationSettings, evaluate_pool, make_pool
from racer.evaluation.synthetic import make_synthetic_benchmark
from racer.evaluation.trials import TrialPlan, thresholds
from racer.sets import augmented_scores, entry_levels


def _noisy_scores(labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """A stand-in router: per-model base rates plus a noisy hint of the truth."""
    rng = np.random.default_rng(seed)
    base = np.log(labels.mean(axis=0) / (1 - labels.mean(axis=0)))
    logits = base + strength * (2 * labels - 1) + rng.normal(0, 1.0, labels.shape)
    return 1 / (1 + np.exp(-logits))


@pytest.fixture(scope="module")
def synthetic_pool():
    data = make_synthetic_benchmark(1200, random_state=4)
    pool, _ = make_pool(data, _noisy_scores(data.labels, 1.0, 0))
    return data, pool


def test_trial_plan_follows_its_documented_scheme():
    plan = TrialPlan(n_pool=50, n_cal=20, n_trials=3, seed=7)
    cal, test = plan.split_rows()
    for t in range(3):
        permutation = np.random.default_rng([7, t]).permutation(50)
        assert np.array_equal(cal[t], permutation[:20])
        assert np.array_equal(test[t], permutation[20:])
        assert not set(cal[t]) & set(test[t])
    resampled = plan.resample_rows()
    assert np.array_equal(resampled[1], np.random.default_rng([7, 1, 1]).integers(50, size=20))
    with pytest.raises(ValueError, match="calibration split"):
        TrialPlan(n_pool=10, n_cal=10, n_trials=1)


@pytest.mark.parametrize("bound", ["binomial", "hb", "hoeffding"])
@pytest.mark.parametrize("family", ["threshold", "cumulative", "cost"])
@pytest.mark.filterwarnings("ignore:The abstain flag is raised:UserWarning")
def test_vectorised_lambdas_equal_the_estimators(synthetic_pool, bound, family):
    data, pool = synthetic_pool
    prices = data.mean_costs()
    (method,) = racer_methods(
        pool.scores, pool.labels, families=(family,), bounds=(bound,), model_costs=prices
    )
    cal, _ = TrialPlan(pool.n, 500, 8, seed=1).split_rows()
    for alpha in (0.05, 0.15):
        lambdas = thresholds(method, pool, cal, alpha, 0.1)
        expected = [
            RACER(alpha, 0.1, bound=bound, family=family, costs=prices)
            .fit(pool.scores[rows], pool.labels[rows])
            .threshold_
            for rows in cal
        ]
        np.testing.assert_allclose(lambdas, expected)


def test_baseline_lambdas_follow_their_definitions(synthetic_pool):
    data, pool = synthetic_pool
    methods = {m.name: m for m in baseline_methods(pool.scores, pool.labels, data.model_names)}
    cal, _ = TrialPlan(pool.n, 400, 5, seed=2).split_rows()
    alpha = 0.1
    crc = thresholds(methods["conformal risk control"], pool, cal, alpha, 0.1)
    for rows, lam in zip(cal, crc, strict=True):
        expected = RACER(alpha, guarantee="expectation", refusals=True)
        expected.fit(pool.scores[rows], pool.labels[rows])
        assert lam == pytest.approx(expected.threshold_)
    # Uncorrected: the smallest lambda on a fine grid whose calibration risk is <= alpha.
    entry = entry_levels(augmented_scores(pool.scores))
    good = np.column_stack([(pool.labels == 0).all(axis=1), pool.labels == 1])
    uncorrected = thresholds(methods["uncorrected threshold"], pool, cal, alpha, 0.1)
    for rows, lam in zip(cal, uncorrected, strict=True):
        candidates = np.unique(entry[rows])
        risks = [np.mean(~((entry[rows] <= c) & good[rows]).any(axis=1)) for c in candidates]
        assert lam == pytest.approx(candidates[np.flatnonzero(np.array(risks) <= alpha)[0]])
    # Split conformal: the ceil((n+1)(1-alpha))-th smallest of 1 - max good score, over
    # the calibration queries some model answers.
    split = thresholds(methods["split conformal threshold"], pool, cal, alpha, 0.1)
    for rows, lam in zip(cal, split, strict=True):
        solvable = rows[(pool.labels[rows] == 1).any(axis=1)]
        top = np.argmax(pool.scores[solvable], axis=1)
        nonconformity = np.where(
            pool.labels[solvable, top] == 1,
            -np.inf,
            1 - np.max(np.where(pool.labels[solvable] == 1, pool.scores[solvable], -1), axis=1),
        )
        rank = math.ceil((solvable.size + 1) * (1 - alpha))
        assert lam == pytest.approx(max(np.sort(nonconformity)[rank - 1], 0.0))


def test_guarantee_holds_on_real_routerdc_data_and_uncorrected_breaks_it(shared_data):
    data = load_dataset(shared_data / "routerdc" / "mmlu_test.json")
    pool, _ = make_pool(data, _noisy_scores(data.labels, 0.8, seed=5))
    settings = EvaluationSettings(
        alphas=(0.1, 0.2),
        n_trials=200,
        calibration_fraction=0.1,
        families=("threshold", "cumulative"),
        bounds=("binomial", "hoeffding"),
        top_k=(),
    )
    evaluation = evaluate_pool(pool, data.model_names, settings)
    limit = 0.1 + 3 * math.sqrt(0.1 * 0.9 / 200)
    for alpha in settings.alphas:
        for record in evaluation.records:
            if record["alpha"] == alpha and record["group"] == "racer":
                assert record["violation_rate"] <= limit, record
        assert evaluation.record("uncorrected threshold", alpha)["violation_rate"] > limit
        # Recompute one violation rate from scratch with the estimator.
        resampled = TrialPlan(pool.n, settings_n_cal(settings, pool.n), 200).resample_rows()
        violations = []
        for rows in resampled[:40]:
            fitted = RACER(alpha, 0.1).fit(pool.scores[rows], pool.labels[rows])
            sets = fitted.predict(pool.scores, include_abstain=True)
            good = np.column_stack([(pool.labels == 0).all(axis=1), pool.labels == 1])
            violations.append(np.mean(~(sets & good).any(axis=1)) > alpha)
        per_trial = evaluation.per_trial[("RACER binomial threshold", alpha)]["pool_risk"][:40]
        assert np.array_equal(per_trial > alpha, violations)


def settings_n_cal(settings: EvaluationSettings, n_pool: int) -> int:
    return int(round(settings.calibration_fraction * n_pool))
