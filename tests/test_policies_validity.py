"""Validity of certified answer-level policies on real tasks not used to build them.

The exact test of METHOD.md section 7: each trial calibrates on an i.i.d. resample of
the pool and measures the certified policy's true risk on the whole pool. Alphas are
put just below the pool risk of policies of the family, so that certifying one of them
is a violation: the test exercises the bound where it matters. Every objective (set,
error, regret) and graded quality (pass fractions, hb and wsr bounds) are covered.
"""

from __future__ import annotations

import numpy as np
import pytest

from racer.data.routerbench import load_routerbench
from racer.data.routerdc import load_routerdc
from racer.evaluation.certified import plan_family, policy_data
from racer.evaluation.certified_trials import CertifiedSettings, certified_records
from racer.evaluation.report import monte_carlo_limit
from racer.evaluation.scoring import cross_fitted_scores

TRIALS = 100


def _best_train_model(train) -> str:
    return train.model_names[int(np.argmax(np.nanmean(train.labels, axis=0)))]


def _check_validity(train, pool, objective, reference, *, n_cal, scores=(None, None), bound="auto"):
    """Run the trials at alphas just below policies' pool risks; assert validity; return them."""
    train_scores, pool_scores = scores
    # free text (MBPP) agrees by character n-grams: MiniLM would take minutes on CPU
    family = plan_family(train, objective, reference, train_scores, agreement="char")
    known = ~np.isnan(pool.labels).any(axis=1)
    kept_scores = None if pool_scores is None else pool_scores[known]
    data = policy_data(pool.subset(known), kept_scores, family.answer_kind)
    losses = family.losses(data)[0]
    risks = losses.mean(axis=0)
    at_risk = risks[risks >= 0.01]
    # Just below three policies' risks (certifying them is a violation), and one alpha
    # where the first policy of the fixed sequence (it is tested first) can be certified.
    alphas = sorted({round(float(r) - 0.004, 4) for r in at_risk})[:3]
    alphas.append(round(float(max(risks[0], at_risk.min())) + 0.06, 4))
    settings = CertifiedSettings(
        objective, reference, tuple(alphas), n_trials=TRIALS, n_cal=n_cal, bound=bound,
        agreement="char",
    )
    records = certified_records(
        train, pool, settings, train_scores=train_scores, pool_scores=pool_scores
    )
    reference_column = pool.model_names.index(reference)
    for record in records:
        assert record["violation_rate"] <= monte_carlo_limit(record["delta"], TRIALS), record
        # The reported reference accuracy is the reference model's real accuracy.
        assert record["reference_accuracy"] == pytest.approx(
            pool.labels[known, reference_column].mean()
        )
        assert record["reference"] == reference
    # Not vacuous: some alpha certified some policy in some trials.
    assert max(1.0 - r["uncertified"] for r in records) > 0.2
    return records, losses


@pytest.fixture(scope="module")
def mmlu(shared_data):
    folder = shared_data / "routerdc"
    train = load_routerdc(folder / "mmlu_train.json")
    pool = load_routerdc(folder / "mmlu_test.json")
    # The prior router (training accuracies) is fast; its sets are RACER's nested sets.
    return train, pool, cross_fitted_scores("prior", train, pool)


@pytest.mark.parametrize("objective", ["set", "error"])
def test_set_and_error_objectives_are_valid_on_routerdc_mmlu(mmlu, objective):
    # RouterDC has no responses: cascades cannot stop on agreement, so the family is
    # single models and RACER's sets with best-in-set (votes over unextractable answers
    # reduce to the highest weight).
    train, pool, scores = mmlu
    records, _ = _check_validity(
        train, pool, objective, _best_train_model(train), n_cal=2000, scores=scores
    )
    if objective == "set":
        # Larger sets than the reference alone are certified, and their served sets cost more.
        assert any(r["cost_share"] > 1.5 and r["uncertified"] < 0.5 for r in records)


def test_regret_on_routerdc_has_nothing_cheaper_than_the_reference(mmlu):
    # RouterDC has no costs (each call costs 1) and no responses: every other policy
    # calls at least one model and can lose against the reference, so the training
    # front is the reference alone and the record says plainly that nothing is saved.
    # Regret with real savings is checked on RouterBench MBPP (below) and ARC.
    train, pool, scores = mmlu
    reference = _best_train_model(train)
    family = plan_family(train, "regret", reference, scores[0])
    described = [policy.describe(train.model_names) for policy in family.policies]
    assert described == [f"always call {reference}"]
    settings = CertifiedSettings("regret", reference, (0.02,), n_trials=20, n_cal=500)
    (record,) = certified_records(
        train, pool, settings, train_scores=scores[0], pool_scores=scores[1]
    )
    assert record["refused"] == 1.0 and record["risk"] == 0.0 and record["cost_share"] == 1.0
    column = pool.model_names.index(reference)
    assert record["reference_accuracy"] == pytest.approx(np.mean(pool.labels[:, column]))


@pytest.mark.parametrize("objective", ["set", "error", "regret"])
def test_every_objective_is_valid_on_routerbench_mbpp(shared_data, objective):
    # Real responses (code, no extractable answer) and real dollar costs.
    folder = shared_data / "routerbench"
    train = load_routerbench(folder / "mbpp_train.csv")
    pool = load_routerbench(folder / "mbpp_test.csv")
    records, _ = _check_validity(train, pool, objective, "gpt-4-1106-preview", n_cal=128)
    if objective == "regret":
        # A cheaper model is certified against gpt-4 at the loosest alpha in some trials.
        assert records[-1]["refused"] < 1.0 and records[-1]["cost_share"] < 1.0


@pytest.fixture(scope="module")
def gsm8k(shared_data):
    folder = shared_data / "routerdc"
    train = load_routerdc(folder / "gsm8k-train.json")
    pool = load_routerdc(folder / "gsm8k-test.json")
    assert pool.quality is not None  # pass fractions
    return train, pool, cross_fitted_scores("prior", train, pool)


@pytest.mark.parametrize(("objective", "bound"), [("set", "hb"), ("set", "wsr"), ("error", "hb")])
def test_graded_quality_is_certified_end_to_end_with_hb_and_wsr(gsm8k, objective, bound):
    train, pool, scores = gsm8k
    records, losses = _check_validity(
        train, pool, objective, _best_train_model(train), n_cal=600, scores=scores, bound=bound
    )
    # The losses are graded (pass fractions), not 0/1, and the bound asked for is used.
    assert ((losses > 0) & (losses < 1)).any()
    assert {r["bound"] for r in records} == {bound}


def test_graded_quality_picks_a_graded_bound_by_itself(gsm8k):
    train, pool, scores = gsm8k
    settings = CertifiedSettings("set", _best_train_model(train), (0.2,), n_trials=10, n_cal=300)
    record = certified_records(train, pool, settings, train_scores=scores[0], pool_scores=scores[1])
    assert record[0]["bound"] == "hb"
    with pytest.raises(ValueError, match="needs 0/1 losses"):
        certified_records(
            train,
            pool,
            CertifiedSettings("set", None, (0.2,), n_trials=2, n_cal=50, bound="binomial"),
            train_scores=scores[0],
            pool_scores=scores[1],
        )


def test_evaluate_with_a_router_certifies_the_family_with_router_policies(shared_data):
    # racer evaluate --objective: the router's out-of-fold training scores fix the family,
    # which then holds router-weighted cascades or RACER's parallel sets.
    from racer.evaluation.certified_trials import records_for_evaluation
    from racer.evaluation.scoring import out_of_fold_scores
    from racer.policies import Cascade, ParallelSets

    folder = shared_data / "routerbench"
    train = load_routerbench(folder / "arc_challenge_train.csv")
    test = load_routerbench(folder / "arc_challenge_test.csv")
    reference = "gpt-4-1106-preview"
    family = plan_family(train, "regret", reference, out_of_fold_scores("prior", train))
    assert any(
        isinstance(p, ParallelSets) or (isinstance(p, Cascade) and p.weights is None)
        for p in family.policies
    )
    (record,) = records_for_evaluation(
        "regret", reference, train, test, alphas=(0.05,), delta=0.1, n_trials=5,
        calibration_fraction=0.5, router="prior",
    )  # fmt: skip
    assert record["n_policies"] == len(family.policies)
    # Never dearer than the reference on training data: every policy of the family.
    data = policy_data(train, out_of_fold_scores("prior", train), family.answer_kind)
    costs = family.losses(data)[1].mean(axis=0)
    assert costs.max() <= costs[family.fallback_index]
