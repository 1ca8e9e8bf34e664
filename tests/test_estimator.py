"""The RACER estimator: scikit-learn conventions, guarantees, and clear errors."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from racer import (
    RACER,
    InfeasibleCalibrationError,
    NotFittedError,
    bounds,
    minimum_calibration_size,
)
from racer.losses import served_losses


def make_data(n=1000, m=4, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(n, m))
    labels = (rng.uniform(size=(n, m)) < scores**2).astype(float)
    return scores, labels


def test_fit_predict_shapes_and_abstain_column():
    scores, labels = make_data()
    router = RACER(alpha=0.1, delta=0.1).fit(scores, labels)
    mask = router.predict(scores[:7])
    aug = router.predict(scores[:7], include_abstain=True)
    assert mask.shape == (7, 4) and mask.dtype == bool
    assert aug.shape == (7, 5)
    assert np.array_equal(aug[:, 1:], mask)
    assert router.n_calibration_ == 1000 and router.bound_ == "binomial"
    assert router.risk_bound_ <= 0.1
    assert router.risk_bound_ == pytest.approx(
        float(bounds.binomial_ucb(round(router.empirical_risk_ * 1000), 1000, 0.1))
    )


def test_hyper_parameters_are_stored_unchanged_and_clonable():
    router = RACER(alpha=0.2, delta=0.05, bound="hb", family="cumulative", abstention=False)
    params = clone(router).get_params()
    assert params["alpha"] == 0.2 and params["family"] == "cumulative"
    assert params["abstention"] is False


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        RACER().predict(np.ones((2, 3)) / 2)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), family=st.sampled_from(["threshold", "cumulative", "cost"]),
       abstention=st.booleans(), alpha=st.sampled_from([0.1, 0.2, 0.3]))
@pytest.mark.filterwarnings("ignore:The abstain flag is raised:UserWarning")
def test_predict_on_calibration_data_reproduces_reported_risk(seed, family, abstention, alpha):
    scores, labels = make_data(n=300, m=3, seed=seed)
    router = RACER(alpha=alpha, family=family, abstention=abstention, costs=[1.0, 2.0, 5.0])
    router.fit(scores, labels)
    aug = router.predict(scores, include_abstain=True)
    good = labels == 1
    nobody = ~good.any(axis=1)
    hit = (aug[:, 1:] & good).any(axis=1) | (nobody & aug[:, 0])
    if not abstention:
        hit |= nobody
    assert np.mean(~hit) == pytest.approx(router.empirical_risk_)
    assert router.risk(scores, labels) == pytest.approx(router.empirical_risk_)


def test_without_abstention_every_set_holds_a_model():
    scores, labels = make_data()
    mask = RACER(alpha=0.1, abstention=False).fit(scores, labels).predict(scores)
    assert mask.sum(axis=1).min() >= 1


def test_low_scores_get_the_flag_and_the_top_model_unless_refusals_are_asked_for():
    scores, labels = make_data(n=3000)
    low = np.array([[0.01, 0.03, 0.02, 0.01]])
    router = RACER(alpha=0.2).fit(scores, labels)
    assert router.predict(low, include_abstain=True).tolist() == [[True, False, True, False, False]]
    refusing = RACER(alpha=0.2, refusals=True).fit(scores, labels)
    assert refusing.predict(low, include_abstain=True).tolist() == [[True] + [False] * 4]


@pytest.mark.filterwarnings("ignore:The abstain flag is raised:UserWarning")
def test_graded_labels_use_wsr_by_default_and_refuse_binary_bounds():
    scores, labels = make_data(n=800)
    graded = labels * np.round(np.random.default_rng(1).uniform(size=labels.shape), 1)
    router = RACER(alpha=0.4).fit(scores, graded)
    assert router.bound_ == "wsr" and router.loss_kind_ == "graded"
    assert router.risk_bound_ <= 0.4
    assert RACER(alpha=0.4, bound="hoeffding").fit(scores, graded).bound_ == "hoeffding"
    with pytest.raises(ValueError, match="0/1 labels only.*'hoeffding' or 'wsr'"):
        RACER(alpha=0.4, bound="binomial").fit(scores, graded)


def test_expectation_guarantee_is_conformal_risk_control():
    scores, labels = make_data()
    router = RACER(alpha=0.1, guarantee="expectation").fit(scores, labels)
    assert router.bound_ == "crc"
    k = round(router.empirical_risk_ * 1000)
    assert (k + 1) / 1001 <= 0.1


def test_unknown_labels_are_left_out_with_a_warning_when_asked_to_drop():
    scores, labels = make_data()
    labels[:10, 1] = np.nan
    with pytest.warns(UserWarning, match="Left out 10 of 1000 calibration rows.*missing at random"):
        router = RACER(missing="drop").fit(scores, labels)
    assert router.n_calibration_ == 990 and router.n_dropped_ == 10 and router.n_imputed_ == 0


def test_unknown_labels_count_at_their_worst_case_by_default():
    scores, labels = make_data()
    labels[:10, 1] = np.nan
    router = RACER(alpha=0.3).fit(scores, labels)
    assert router.n_calibration_ == 1000 and router.n_imputed_ == 10 and router.n_dropped_ == 0
    worst = np.where(np.isnan(labels), 0.0, labels)
    # a row with an unknown label is never "known unanswerable": its loss is the worst completion
    decision = router.predict(scores, include_abstain=True)
    best_completion = served_losses("flag", decision, worst)
    worst_losses = served_losses("flag", decision, labels)
    assert np.all(worst_losses >= best_completion)
    assert router.empirical_risk_ == pytest.approx(worst_losses.mean(), abs=1e-12)


def test_all_labels_unknown_is_an_error():
    with pytest.raises(ValueError, match="All 30 calibration rows have an unknown"):
        RACER().fit(np.full((30, 2), 0.5), np.full((30, 2), np.nan))


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.full((40, 3), 1.5), r"in \[0, 1\].*first 1.5 at row 0"),
        (np.full((40, 3), np.nan), "not logits or NaN"),
        (np.full(40, 0.5), "Expected a 2D array.*reshape"),
    ],
)
def test_bad_scores_get_one_clear_message(scores, message):
    with pytest.raises(ValueError, match=message):
        RACER().fit(scores, np.ones((40, 3)))


def test_shape_mismatch_and_bad_labels():
    scores, labels = make_data()
    with pytest.raises(ValueError, match=r"labels have shape \(1000, 3\) but scores have shape"):
        RACER().fit(scores, labels[:, :3])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        RACER().fit(scores, labels * 2)
    router = RACER().fit(scores, labels)
    with pytest.raises(ValueError, match="scores have 3 model columns, but RACER was fitted on 4"):
        router.predict(scores[:, :3])


@pytest.mark.parametrize("name", ["alpha", "delta"])
@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, "x"])
def test_levels_outside_the_unit_interval_are_refused(name, value):
    scores, labels = make_data(n=50)
    with pytest.raises(ValueError, match=f"{name} must"):
        RACER(**{name: value}).fit(scores, labels)


def test_unknown_options_are_refused():
    scores, labels = make_data(n=100)
    for params, message in [
        ({"bound": "chernoff"}, "bound must be one of"),
        ({"family": "topk"}, "family must be one of"),
        ({"guarantee": "bayes"}, "guarantee must be one of"),
        ({"family": "cost"}, "needs per-model costs"),
        ({"costs": [1, 2]}, r"costs must have shape \(4,\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            RACER(**params).fit(scores, labels)


def test_model_names_must_match_between_fit_and_predict():
    scores, labels = make_data()
    names = ["a", "b", "c", "d"]
    router = RACER().fit(scores, labels, model_names=names)
    assert router.model_names_ == names
    router.predict(scores, model_names=names)
    expected = r"Model names differ.*Missing: \['d'\]; unexpected: \['e'\]"
    with pytest.raises(ValueError, match=expected):
        router.predict(scores, model_names=["a", "b", "c", "e"])


def test_too_small_calibration_set_says_the_n_needed():
    scores, labels = make_data(n=15)
    with pytest.raises(InfeasibleCalibrationError, match="needs n >= 22 calibration points"):
        RACER(alpha=0.1, delta=0.1).fit(scores, labels)
    assert minimum_calibration_size(0.01, 0.1) == 230
    assert minimum_calibration_size(0.1, 0.1, "hoeffding") == 116


def test_given_abstain_scores_are_required_and_used():
    scores, labels = make_data()
    abstain = 1 - labels.max(axis=1) * 0.9
    router = RACER(abstain_score="given").fit(scores, labels, abstain_scores=abstain)
    with pytest.raises(ValueError, match="needs abstain_scores="):
        router.predict(scores)
    aug = router.predict(scores, include_abstain=True, abstain_scores=abstain)
    assert aug[:, 0].any()


@pytest.mark.filterwarnings("ignore:The abstain flag is raised:UserWarning")
def test_state_round_trip_gives_identical_sets():
    scores, labels = make_data()
    router = RACER(alpha=0.15, family="cost", costs=[1, 2, 3, 10]).fit(scores, labels)
    rebuilt = RACER.from_state(router.get_state())
    assert np.array_equal(rebuilt.predict(scores), router.predict(scores))
    assert rebuilt.risk_bound_ == router.risk_bound_
    assert np.array_equal(rebuilt.risk_curve_.loss_totals, router.risk_curve_.loss_totals)
    state = router.get_state()
    state["version"] = 99
    with pytest.raises(ValueError, match="Unsupported RACER state version 99"):
        RACER.from_state(state)


def test_no_warning_on_clean_data():
    scores, labels = make_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RACER().fit(scores, labels)


def test_scikit_learn_estimator_checks_pass_or_fail_only_on_racers_input_domain():
    """scikit-learn's generic checks feed unbounded features and 1-D targets; RACER takes
    scores in [0, 1] and a 2-D label matrix (its tags say so). Every API check must pass,
    and every other check may only stop at RACER's own, precise input validation."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(RACER(alpha=0.3), on_fail=None)
    status = {r["check_name"]: r["status"] for r in results}
    for name in ("check_estimator_cloneable", "check_get_params_invariance", "check_set_params",
                 "check_no_attributes_set_in_init", "check_estimators_unfitted",
                 "check_parameters_default_constructible", "check_estimator_repr",
                 "check_do_not_raise_errors_in_init_or_set_params"):
        assert status[name] == "passed", name
    domain = ("finite numbers in [0, 1]", "labels have shape", "2D array of labels",
              "scores is empty")
    for result in results:
        if result["status"] == "failed":
            assert any(text in str(result["exception"]) for text in domain), result


def test_score_is_one_minus_the_served_risk_and_tags_describe_the_inputs():
    from sklearn.utils import get_tags

    scores, labels = make_data()
    router = RACER(alpha=0.3).fit(scores, labels)
    assert router.score(scores, labels) == pytest.approx(1 - router.risk(scores, labels))
    tags = get_tags(RACER())
    assert tags.target_tags.two_d_labels and tags.input_tags.positive_only
    assert not tags.input_tags.allow_nan
