"""Strict abstention and worst-case missing labels: the served loss is the certified one.

Validity is tested exactly (racer/method.md section 9): the pool is the population, every
trial calibrates on an i.i.d. resample of it, and the risk of the *served* decision is
measured on the whole pool. A trial that raises InfeasibleCalibrationError serves
nothing under a false certificate, so it is not a violation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from real_data import out_of_fold_scores

from racer import RACER, InfeasibleCalibrationError
from racer.calibration import calibrate_strict
from racer.data import load_dataset
from racer.ltt import binomial_pvalues
from racer.sets import augmented_scores, decision_from_scores, entry_levels

TRIALS = 200
DELTA = 0.1
SLACK = 3 * math.sqrt(DELTA * (1 - DELTA) / TRIALS)


def validity(scores, labels, n_cal, rng, make, hide=None):
    """Share of trials whose served pool risk exceeds alpha, and share certified."""
    violations, certified = 0, 0
    for _ in range(TRIALS):
        sample = rng.integers(0, len(scores), size=n_cal)
        calibration_labels = labels[sample] if hide is None else hide(labels[sample], sample)
        router = make()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                router.fit(scores[sample], calibration_labels)
        except InfeasibleCalibrationError:
            continue
        certified += 1
        violations += router.risk(scores, labels) > router.alpha
    return violations / TRIALS, certified / TRIALS


@pytest.fixture(scope="module")
def mbpp_pool(shared_data):
    """RouterBench MBPP, train and test pooled, with out-of-fold scores."""
    parts = [load_dataset(shared_data / "routerbench" / f"mbpp_{split}.csv")
             for split in ("train", "test")]
    labels = np.vstack([p.labels for p in parts])
    return out_of_fold_scores(np.concatenate([p.queries for p in parts]), labels), labels


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_strict_keeps_its_served_promise_on_routerbench_arc(routerbench_pool, alpha):
    scores, labels = routerbench_pool
    violation, certified = validity(
        scores, labels, 400, np.random.default_rng(10),
        lambda: RACER(alpha=alpha, delta=DELTA, abstention="strict"),
    )
    assert violation <= DELTA + SLACK
    assert certified >= 0.9


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_strict_keeps_its_served_promise_on_routerdc_mmlu(routerdc_pool, alpha):
    scores, labels = routerdc_pool
    violation, certified = validity(
        scores, labels, 1000, np.random.default_rng(11),
        lambda: RACER(alpha=alpha, delta=DELTA, abstention="strict"),
    )
    assert violation <= DELTA + SLACK
    if alpha == 0.2:
        assert certified >= 0.9


def test_mbpp_strict_at_alpha_005_names_the_share_no_model_answers(mbpp_pool):
    scores, labels = mbpp_pool
    no_good = float(np.mean(labels.max(axis=1) == 0))
    assert 0.12 < no_good < 0.14  # 13.3 % of MBPP queries: no model passes
    rng = np.random.default_rng(12)
    for _ in range(20):
        sample = rng.integers(0, len(scores), size=200)
        share = np.mean(labels[sample].max(axis=1) == 0)
        with pytest.raises(InfeasibleCalibrationError) as raised:
            RACER(alpha=0.05, abstention="strict").fit(scores[sample], labels[sample])
        message = str(raised.value)
        assert f"{share:.1%} of the calibration queries have no good model" in message
        assert f"abstain on at least {share - 0.05:.1%} of all queries" in message


def test_mbpp_strict_at_alpha_03_is_certified_and_valid(mbpp_pool):
    scores, labels = mbpp_pool
    violation, certified = validity(
        scores, labels, 200, np.random.default_rng(13),
        lambda: RACER(alpha=0.3, delta=DELTA, abstention="strict"),
    )
    assert certified >= 0.9
    assert violation <= DELTA + SLACK


def test_mbpp_flag_mode_reports_how_often_it_flags(mbpp_pool):
    scores, labels = mbpp_pool
    sample = np.random.default_rng(14).integers(0, len(scores), size=200)
    with pytest.warns(UserWarning, match=r"abstain flag is raised on \d+% of the calibration"):
        router = RACER(alpha=0.05, abstention="flag").fit(scores[sample], labels[sample])
    decision = router.predict(scores[sample], include_abstain=True)
    assert router.flag_rate_ == pytest.approx(np.mean(decision[:, 0] & decision[:, 1:].any(1)))
    assert router.flag_rate_ > 0.5
    assert router.unanswerable_share_ == pytest.approx(np.mean(labels[sample].max(1) == 0))


def hide_labels_of_hard_queries(scores, rng):
    """A grader that skips hard cases: when the top-scored model is wrong, the whole row
    is unlabelled with probability 0.8 (missingness depends on the outcome)."""
    top = scores.argmax(axis=1)

    def hide(labels, sample):
        hidden = labels.copy()
        wrong = labels[np.arange(len(sample)), top[sample]] == 0
        hidden[wrong & (rng.uniform(size=len(sample)) < 0.8)] = np.nan
        return hidden

    return hide


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_informative_missingness_voids_drop_but_not_the_worst_case_default(routerbench_pool, alpha):
    """With refusals allowed, where dropping the hard rows shows: it certifies refusing
    too little."""
    scores, labels = routerbench_pool
    dropped, _ = validity(
        scores, labels, 400, np.random.default_rng(15),
        lambda: RACER(alpha=alpha, abstention="flag", missing="drop", refusals=True),
        hide=hide_labels_of_hard_queries(scores, np.random.default_rng(16)),
    )
    worst_case, certified = validity(
        scores, labels, 400, np.random.default_rng(15),
        lambda: RACER(alpha=alpha, abstention="flag", refusals=True),
        hide=hide_labels_of_hard_queries(scores, np.random.default_rng(16)),
    )
    assert dropped > DELTA + SLACK  # complete-case analysis breaks the promise
    assert worst_case <= DELTA + SLACK
    assert certified >= 0.9


def problem(seed, n=600, m=4):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(n, m))
    labels = (rng.uniform(size=(n, m)) < scores**0.5).astype(float)
    return scores, labels


def test_a_strict_abstention_invokes_no_model():
    scores, labels = problem(0)
    router = RACER(alpha=0.15, abstention="strict").fit(scores, labels)
    decision = router.predict(scores, include_abstain=True)
    assert decision[:, 0].any()  # some abstentions happen here
    assert not decision[decision[:, 0], 1:].any()
    assert decision[~decision[:, 0], 1:].any(axis=1).all()  # otherwise at least one model


@pytest.mark.parametrize("seed", range(5))
def test_strict_never_certifies_a_pair_above_its_share_of_delta(seed):
    scores, labels = problem(seed)
    augmented = augmented_scores(scores)
    s0 = augmented[:, 0].copy()
    model_entry = entry_levels(augmented, abstention=False)[:, 1:]
    result = calibrate_strict(model_entry, s0, labels, alpha=0.15, delta=0.1)
    share = 0.1 / result.abstain_grid.size
    assert np.all(result.ltt.p_values[result.ltt.certified] <= share)
    # the chosen pair's p-value recomputed from its own losses
    abstained = s0 >= result.abstain_threshold
    misses = ~(np.where(labels == 1, model_entry, np.inf).min(1) <= result.threshold)
    losses = np.where(abstained, labels.max(1) == 1, misses)
    assert losses.mean() == pytest.approx(result.empirical_risk, abs=1e-12)
    assert binomial_pvalues(int(losses.sum()), len(labels), 0.15) <= share


@pytest.mark.parametrize("mode", ["flag", "strict", False])
@pytest.mark.parametrize("family", ["threshold", "cumulative", "cost"])
def test_risk_on_the_calibration_data_reproduces_the_empirical_risk(mode, family):
    scores, labels = problem(3)
    labels[:20, 0] = np.nan
    router = RACER(alpha=0.2, abstention=mode, family=family, costs=[1, 2, 3, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router.fit(scores, labels)
    assert router.risk(scores, labels) == pytest.approx(router.empirical_risk_, abs=1e-12)


@pytest.mark.parametrize("mode", ["flag", "strict", False])
@pytest.mark.parametrize("family", ["threshold", "cumulative", "cost"])
def test_sets_rebuilt_from_the_stored_thresholds_equal_predict(mode, family):
    scores, labels = problem(4)
    router = RACER(alpha=0.2, abstention=mode, family=family, costs=[1, 2, 3, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router.fit(scores, labels)
    rebuilt = decision_from_scores(
        scores, router.threshold_, family=family, abstention=router.abstention_mode_,
        abstain_threshold=router.abstain_threshold_, costs=np.array([1.0, 2, 3, 4]),
    )
    assert np.array_equal(rebuilt, router.predict(scores, include_abstain=True))


def test_strict_state_round_trip(tmp_path):
    scores, labels = problem(5)
    router = RACER(alpha=0.15, abstention="strict").fit(scores, labels)
    again = RACER.from_state(router.get_state())
    assert again.abstention_mode_ == "strict"
    assert again.abstain_threshold_ == router.abstain_threshold_
    assert np.array_equal(again.predict(scores, include_abstain=True),
                          router.predict(scores, include_abstain=True))


def test_strict_refuses_the_expectation_guarantee_and_hoeffding():
    scores, labels = problem(6)
    with pytest.raises(ValueError, match="Learn-then-Test, a PAC guarantee"):
        RACER(abstention="strict", guarantee="expectation").fit(scores, labels)
    with pytest.raises(ValueError, match="got 'hoeffding'"):
        RACER(abstention="strict", bound="hoeffding").fit(scores, labels)
