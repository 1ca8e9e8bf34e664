"""One vocabulary: refused (no model called) and flagged (an answer with the flag raised),
and a refusal reason that states the calibrated level and the best score."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from racer.refusal import decision_outcomes, refusal_reason, refusal_reasons

NAMES = ["gpt-4", "small"]


def test_refused_means_no_model_called_and_flagged_means_an_answer_with_the_flag():
    decision = np.array(
        [
            [True, False, False],  # flag raised, no model: a refusal, not a flagged answer
            [True, True, False],  # a flagged answer
            [False, True, True],  # a plain answer
            [False, False, False],  # an empty set: a refusal
        ]
    )
    refused, flagged = decision_outcomes(decision, "flag")
    assert refused.tolist() == [True, False, False, True]
    assert flagged.tolist() == [False, True, False, False]
    refused, flagged = decision_outcomes(decision, "strict")
    assert refused.tolist() == [True, False, False, True] and not flagged.any()


def test_the_reason_names_the_level_and_the_best_model_with_digits_that_differ():
    reason = refusal_reason([0.920, 0.4], NAMES, mode="flag", threshold=0.0791)
    assert reason == "no model's score cleared the calibrated threshold 0.921 (best: gpt-4 0.920)"
    close = refusal_reason([0.9206, 0.4], NAMES, mode="flag", threshold=0.0791)
    assert close == "no model's score cleared the calibrated threshold 0.9209 (best: gpt-4 0.9206)"
    strict = refusal_reason(
        [0.45, 0.3], NAMES, mode="strict", threshold=0.4, abstain_threshold=0.5, abstain_score=0.55
    )
    assert strict == (
        "the abstain score 0.550 reached the calibrated abstention threshold 0.500 "
        "(best: gpt-4 0.450)"
    )


def test_reasons_only_for_refused_rows_with_the_estimators_abstain_score():
    calibration = SimpleNamespace(
        abstention_mode_="strict", threshold_=0.3, abstain_threshold_=0.5, abstain_score="max"
    )
    scores = np.array([[0.45, 0.3], [0.9, 0.1]])
    reasons = refusal_reasons(calibration, scores, NAMES, np.array([True, False]))
    assert reasons[1] is None
    assert reasons[0].startswith("the abstain score 0.550 reached")


def test_a_per_group_calibration_gives_each_refusal_its_own_groups_level():
    from racer import RACER

    rng = np.random.default_rng(4)
    scores = rng.uniform(size=(1200, 2))
    labels = (rng.uniform(size=(1200, 2)) < scores**2).astype(float)
    groups = np.where(np.arange(1200) % 2 == 0, "easy", "hard")
    labels[groups == "easy"] = np.maximum(labels[groups == "easy"], 1.0)  # always answerable
    racer = RACER(alpha=0.2, refusals=True, refusal_cost=0.0).fit(scores, labels, groups=groups)
    decision = racer.predict(scores, include_abstain=True, groups=groups)
    refused, _ = decision_outcomes(decision, "flag")
    assert refused.any()
    reasons = refusal_reasons(racer, scores, NAMES, refused, groups=groups)
    for i in np.flatnonzero(refused)[:20]:
        own = racer.groups_[groups[i]].threshold
        assert reasons[i] == refusal_reason(scores[i], NAMES, mode="flag", threshold=own)
    assert racer.groups_["easy"].threshold != racer.groups_["hard"].threshold
