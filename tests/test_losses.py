"""The loss of what is served, per abstention mode, and worst-case unknown labels."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from racer.calibration import point_losses
from racer.losses import abstention_mode, served_losses
from racer.sets import augmented_scores, entry_levels, served_decision


def test_the_minimal_case_of_the_review_is_consistent_in_every_mode():
    # scores (0.5, 0.5), no good model, lambda = 0.5: C+ = {0, 1, 2}
    augmented = augmented_scores(np.array([[0.5, 0.5]]))
    quality = np.array([[0.0, 0.0]])
    flag = served_decision(augmented, 0.5, abstention="flag")
    assert flag.tolist() == [[True, True, True]]
    # flag mode serves both answers *with the flag*: a flagged answer to an
    # unanswerable query is not a misroute, and calibration counts it the same way
    assert served_losses("flag", flag, quality).tolist() == [0.0]
    assert point_losses(entry_levels(augmented), quality, 0.5).tolist() == [0.0]
    # strict: calling the models on an unanswerable query is a loss, abstaining is not
    called = served_decision(augmented, 0.5, abstention="strict", abstain_threshold=0.9)
    abstained = served_decision(augmented, 0.5, abstention="strict", abstain_threshold=0.5)
    assert called.tolist() == [[False, True, True]]
    assert abstained.tolist() == [[True, False, False]]
    assert served_losses("strict", called, quality).tolist() == [1.0]
    assert served_losses("strict", abstained, quality).tolist() == [0.0]


def test_strict_abstention_on_an_answerable_query_is_a_loss():
    decision = np.array([[True, False, False], [False, True, False], [False, False, True]])
    quality = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert served_losses("strict", decision, quality).tolist() == [1.0, 1.0, 0.0]


def test_off_mode_does_not_count_unanswerable_queries():
    decision = np.array([[False, True, False], [False, True, False]])
    quality = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert served_losses("off", decision, quality).tolist() == [0.0, 1.0]


@given(seed=st.integers(0, 10_000), lam=st.floats(0, 1), flag=st.booleans())
def test_calibration_loss_equals_served_loss_for_flag_and_off(seed, lam, flag):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(40, 3))
    quality = (rng.uniform(size=(40, 3)) < scores).astype(float)
    mode = "flag" if flag else "off"
    augmented = augmented_scores(scores)
    decision = served_decision(augmented, lam, abstention=mode)
    entry = entry_levels(augmented, abstention=flag, refusals=False)  # what is served
    assert np.array_equal(
        served_losses(mode, decision, quality), point_losses(entry, quality, lam, flag)
    )


@pytest.mark.parametrize("mode", ["flag", "strict", "off"])
@given(seed=st.integers(0, 10_000))
def test_unknown_labels_count_as_their_worst_completion(mode, seed):
    rng = np.random.default_rng(seed)
    m = 3
    decision = rng.uniform(size=(25, m + 1)) < 0.5
    if mode == "strict":
        decision[decision[:, 0], 1:] = False
    labels = (rng.uniform(size=(25, m)) < 0.4).astype(float)
    labels[rng.uniform(size=labels.shape) < 0.3] = np.nan
    worst = served_losses(mode, decision, labels)
    completions = []
    for values in itertools.product([0.0, 1.0], repeat=int(np.isnan(labels).sum())):
        filled = labels.copy()
        filled[np.isnan(labels)] = values
        completions.append(served_losses(mode, decision, filled))
        if len(completions) > 256:
            break
    completions = np.array(completions)
    assert np.all(worst >= completions.max(axis=0))
    # and it is attained row by row: fill each row's unknowns adversarially
    for i in range(len(labels)):
        row_unknown = np.isnan(labels[i])
        best = 0.0
        for values in itertools.product([0.0, 1.0], repeat=int(row_unknown.sum())):
            filled = labels[i].copy()
            filled[row_unknown] = values
            best = max(best, served_losses(mode, decision[i : i + 1], filled[None])[0])
        assert worst[i] == best


def test_mode_names():
    assert [abstention_mode(v) for v in (True, False, "flag", "strict")] == [
        "flag", "off", "flag", "strict",
    ]
    with pytest.raises(ValueError, match="abstention must be one of"):
        abstention_mode("sometimes")
    with pytest.raises(ValueError, match=r"shape \(n, M \+ 1\)"):
        served_losses("flag", np.zeros((2, 2), dtype=bool), np.zeros((2, 2)))
