"""Certification of policy families: LTT p-values, the cheapest certified policy, plain refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binom

from racer.bounds import binomial_ucb
from racer.data.routerbench import load_routerbench
from racer.evaluation.certified_trials import CertifiedSettings, certified_records
from racer.evaluation.report import monte_carlo_limit
from racer.policies import Cascade, Single, certify, training_front

NAMES = ("cheap", "middle", "reference")


@given(st.integers(0, 60), st.sampled_from([0.05, 0.1, 0.2]))
def test_one_policy_is_certified_exactly_when_the_binomial_test_rejects(k, alpha):
    n, delta = 300, 0.1
    losses = np.zeros((n, 1))
    losses[:k] = 1.0
    certificate = certify(
        [Single(0)],
        losses,
        np.ones((n, 1)),
        objective="error",
        alpha=alpha,
        delta=delta,
        order=np.arange(1),
    )
    assert certificate.p_value == pytest.approx(binom.cdf(k, n, alpha))
    assert certificate.certified == (binom.cdf(k, n, alpha) <= delta)


@given(
    st.lists(st.integers(0, 40), min_size=2, max_size=6),
    st.sampled_from(["bonferroni", "holm", "fixed_sequence"]),
)
def test_no_policy_is_certified_when_its_bound_exceeds_alpha(counts, method):
    n, alpha, delta = 200, 0.1, 0.1
    losses = np.zeros((n, len(counts)))
    for j, k in enumerate(counts):
        losses[:k, j] = 1.0
    costs = np.broadcast_to(np.arange(len(counts), 0, -1, dtype=float), (n, len(counts)))
    policies = [Single(j) for j in range(len(counts))]
    certificate = certify(
        policies,
        losses,
        costs,
        objective="error",
        alpha=alpha,
        delta=delta,
        order=np.arange(len(counts)),
        method=method,
    )
    if certificate.certified:
        k = int(losses[:, certificate.index].sum())
        # Every FWER procedure tests at level <= delta: the (1 - delta) bound is <= alpha.
        assert binomial_ucb(k, n, delta) <= alpha + 1e-9


def test_the_cheapest_certified_policy_is_served():
    n = 400
    losses = np.zeros((n, 3))
    losses[:10, 1] = 1.0  # 2.5 %: certified at alpha 0.1
    losses[:80, 2] = 1.0  # 20 %: not certified
    costs = np.broadcast_to([10.0, 3.0, 1.0], (n, 3))
    policies = [Single(2), Cascade((0,), 1.0, 2, (1.0,)), Cascade((1,), 1.0, 2, (1.0,))]
    certificate = certify(
        policies, losses, costs, objective="regret", alpha=0.1, delta=0.1, order=np.arange(3)
    )
    assert certificate.index == 1 and certificate.certified and not certificate.only_fallback
    assert certificate.calibration_cost == 3.0
    assert "certified regret risk <= 0.1" in certificate.sentence(NAMES)


def test_when_only_the_fallback_is_certified_it_says_so():
    n = 400
    losses = np.zeros((n, 2))
    losses[:80, 1] = 1.0
    costs = np.broadcast_to([10.0, 1.0], (n, 2))
    certificate = certify(
        [Single(2), Single(0)],
        losses,
        costs,
        objective="regret",
        alpha=0.1,
        delta=0.1,
        order=np.arange(2),
    )
    assert certificate.policy == Single(2) and certificate.only_fallback and certificate.certified
    assert "only 'always call reference' is certified" in certificate.sentence(NAMES)


def test_when_nothing_is_certified_the_fallback_is_served_uncertified():
    n = 100
    losses = np.ones((n, 2))
    certificate = certify(
        [Single(2), Single(0)],
        losses,
        np.ones((n, 2)),
        objective="error",
        alpha=0.1,
        delta=0.1,
        order=np.arange(2),
    )
    assert not certificate.certified and certificate.policy == Single(2)
    assert "nothing is certified" in certificate.sentence(NAMES)


def test_fixed_sequence_needs_an_order_from_training():
    with pytest.raises(ValueError, match="order fixed before calibration"):
        certify(
            [Single(0)],
            np.zeros((10, 1)),
            np.ones((10, 1)),
            objective="error",
            alpha=0.1,
            delta=0.1,
        )


def test_training_front_keeps_undominated_policies_fallback_first():
    risk = np.array([0.0, 0.01, 0.02, 0.05, 0.03])
    cost = np.array([10.0, 6.0, 8.0, 1.0, 2.0])
    kept = training_front(np.broadcast_to(risk, (5, 5)), np.broadcast_to(cost, (5, 5)))
    # Policy 2 is beaten by 1 (safer and cheaper).
    assert kept.tolist() == [0, 1, 4, 3]


def test_training_front_keeps_the_fallback_at_its_place_when_dearer_policies_are_safer():
    # Set or error objectives: the fallback (one model) is not the safest policy.
    risk = np.array([0.20, 0.05, 0.10, 0.30, 0.12])
    cost = np.array([1.0, 3.0, 2.0, 0.5, 2.5])
    kept = training_front(np.broadcast_to(risk, (5, 5)), np.broadcast_to(cost, (5, 5)))
    # 4 is beaten by 2; the fallback 0 keeps its place by risk, before the cheaper 3.
    assert kept.tolist() == [1, 2, 0, 3]
    # A dominated fallback is still tested (it is what is served when nothing else is).
    kept = training_front(np.broadcast_to(risk, (5, 5)), np.broadcast_to(cost, (5, 5)), first=4)
    assert kept.tolist() == [1, 2, 4, 0, 3]


def test_certified_regret_on_routerbench_arc_is_valid_and_reports_the_real_reference(shared_data):
    folder = shared_data / "routerbench"
    train = load_routerbench(folder / "arc_challenge_train.csv")
    pool = load_routerbench(folder / "arc_challenge_test.csv")
    settings = CertifiedSettings(reference="gpt-4-1106-preview", alphas=(0.03, 0.05), n_trials=100)
    records = certified_records(train, pool, settings)
    gpt4 = pool.labels[:, pool.model_names.index("gpt-4-1106-preview")]
    known = ~np.isnan(pool.labels).any(axis=1)
    for record in records:
        assert record["violation_rate"] <= monte_carlo_limit(0.1, 100)
        assert record["reference_accuracy"] == pytest.approx(gpt4[known].mean())
        assert record["accuracy"] >= record["reference_accuracy"] - record["alpha"]
    # At alpha 0.05 a cheaper policy is certified in most trials and saves money.
    assert records[1]["refused"] < 0.5 and records[1]["cost_share"] < 0.6


def _record(**changes):
    record = {
        "alpha": 0.03,
        "objective": "regret",
        "reference": "gpt-4",
        "delta": 0.1,
        "trials": 100,
        "accuracy": 0.95,
        "reference_accuracy": 0.96,
        "violation_rate": 0.01,
        "refused": 0.1,
        "uncertified": 0.0,
        "cost_share": 0.41,
        "method": "holm",
        "uncorrected": {"accuracy": 0.93, "cost_share": 0.3, "violation_rate": 0.4},
        "aggregators": {
            "best": 0.96, "vote": 0.92, "logodds": 0.94, "winner": "best", "over": "all models"
        },
    }  # fmt: skip
    return {**record, **changes}


def test_the_report_opens_with_one_plain_sentence_per_alpha_and_the_uncorrected_choice():
    from racer.evaluation.certified_report import opening_sentences

    lines = opening_sentences(
        {
            "certified": [
                _record(),
                _record(alpha=0.02, refused=0.9, cost_share=1.0),
                # always calling the reference, its cost share a hair above 1 by round-off
                _record(alpha=0.04, refused=1.0, cost_share=1.0000000000000002),
                _record(alpha=0.01, refused=1.0, uncertified=0.8, cost_share=1.0),
                _record(alpha=0.1, objective="set", refused=1.0, cost_share=3.5),
            ]
        }
    )
    text = "\n".join(lines)
    assert "alpha 0.03: certified at most 3 points below gpt-4 with probability 0.9" in text
    assert "at 41 % of gpt-4's cost" in text
    assert "alpha 0.02: no saving could be certified against gpt-4 in 90 % of trials" in text
    assert "alpha 0.04: no saving could be certified against gpt-4 in 100 % of trials" in text
    assert "alpha 0.01: nothing, not even gpt-4 alone, could be certified in 80 %" in text
    # A certified set objective dearer than the reference is not called a refusal.
    assert "alpha 0.1: certified misrouting risk at most 0.1" in text and "350 %" in text
    assert "| 0.03 | holm | 0.950 | 0.41 | 0.010 | 0.10 | 0.930 | 0.30 | 0.400 |" in text
    assert "best wins (test accuracy best 0.960, vote 0.920, logodds 0.940)" in text
    assert opening_sentences({}) == []
