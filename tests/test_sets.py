"""Nested set families: the property the calibration relies on."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from racer.sets import augmented_scores, entry_levels, lambda_range, score_entry_levels, sets_at

score_matrices = st.integers(1, 6).flatmap(
    lambda m: arrays(
        float,
        st.tuples(st.integers(1, 8), st.just(m)),
        elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0])
        | st.floats(0, 1),
    )
)
families = st.sampled_from(["threshold", "cumulative", "cost"])


def entries_for(scores, family, abstention, abstain_score="max"):
    costs = np.linspace(1.0, 3.0, scores.shape[1])
    return entry_levels(
        augmented_scores(scores, abstain_score), family, abstention=abstention, costs=costs
    )


@settings(max_examples=150, deadline=None)
@given(
    scores=score_matrices,
    family=families,
    abstention=st.booleans(),
    abstain=st.sampled_from(["max", "product"]),
    lams=st.lists(st.floats(-0.5, 2.5), min_size=2, max_size=6),
)
def test_sets_are_nested_in_lambda(scores, family, abstention, abstain, lams):
    entry = entries_for(scores, family, abstention, abstain)
    previous = None
    for lam in sorted(lams):
        current = sets_at(entry, lam)
        if previous is not None:
            assert np.all(previous <= current)  # previous subset of current
        previous = current


@settings(max_examples=100, deadline=None)
@given(scores=score_matrices, family=families)
def test_without_abstention_sets_hold_the_top_model_and_never_abstain(scores, family):
    entry = entries_for(scores, family, abstention=False)
    smallest = sets_at(entry, -1.0)
    assert np.all(smallest[:, 1:].sum(axis=1) == 1)
    assert not sets_at(entry, 10.0)[:, 0].any()


@settings(max_examples=100, deadline=None)
@given(scores=score_matrices, family=families, abstention=st.booleans())
def test_range_goes_from_empty_to_full(scores, family, abstention):
    lo, hi = lambda_range(family)
    entry = entries_for(scores, family, abstention)
    full = sets_at(entry, hi)
    assert full[:, 1:].all()
    assert full[:, 0].all() if abstention else not full[:, 0].any()
    if abstention:
        assert not sets_at(entry, lo - 1e-12).any()


def test_threshold_family_is_score_at_least_one_minus_lambda():
    scores = np.array([[0.9, 0.5, 0.2]])
    aug = augmented_scores(scores)
    assert aug[0, 0] == pytest.approx(0.1)
    members = sets_at(entry_levels(aug), 0.5)
    assert members.tolist() == [[False, True, True, False]]


def test_product_abstain_score():
    aug = augmented_scores(np.array([[0.5, 0.5]]), "product")
    assert aug[0, 0] == pytest.approx(0.25)


def test_cumulative_family_keeps_shortest_prefix_reaching_lambda():
    # normalised augmented masses: abstain 0.1, models 0.5, 0.3, 0.1 (total 1)
    scores = np.array([[0.5, 0.3, 0.1]])
    aug = augmented_scores(scores, "given", np.array([0.1]))
    entry = entry_levels(aug, "cumulative")
    for lam, expected in [
        (0.0, [0, 0, 0, 0]),
        (0.4, [0, 1, 0, 0]),
        (0.5, [0, 1, 0, 0]),
        (0.51, [0, 1, 1, 0]),
        (0.85, [1, 1, 1, 0]),  # ties (0.1, 0.1) broken by index: abstain (0) first
        (0.95, [1, 1, 1, 1]),
    ]:
        assert sets_at(entry, lam).astype(int).tolist() == [expected], lam


def test_cumulative_ties_break_by_candidate_index():
    entry = entry_levels(augmented_scores(np.array([[0.4, 0.4]]), "given", np.array([0.4])),
                         "cumulative")
    assert entry[0, 0] < entry[0, 1] < entry[0, 2]


def test_cost_family_prefers_cheaper_models_at_equal_score():
    scores = np.array([[0.8, 0.8]])
    entry = entry_levels(augmented_scores(scores), "cost", costs=np.array([10.0, 1.0]))
    assert entry[0, 2] < entry[0, 1]
    with pytest.raises(ValueError, match="needs per-model costs"):
        entry_levels(augmented_scores(scores), "cost")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        entry_levels(augmented_scores(np.ones((1, 2)) / 2), "bogus")
    with pytest.raises(ValueError, match="abstain_score must be one of"):
        augmented_scores(np.ones((1, 2)) / 2, "mean")
    with pytest.raises(ValueError, match="abstain_scores="):
        augmented_scores(np.ones((1, 2)) / 2, "given")


@settings(max_examples=150, deadline=None)
@given(
    scores=score_matrices,
    family=families,
    abstain_score=st.sampled_from(["max", "product", "given"]),
    abstention=st.booleans(),
    refusals=st.booleans(),
)
def test_entry_levels_straight_from_scores_equal_the_augmented_path_bit_for_bit(
    scores, family, abstain_score, abstention, refusals
):
    scores = np.vstack([scores, np.full(scores.shape[1], 1e-17)])
    scores[-1, -1] = 2e-17  # a top score that ties with another only after 1 - s
    given_scores = np.linspace(0.0, 1.0, len(scores))
    costs = np.linspace(1.0, 3.0, scores.shape[1])
    expected = entry_levels(
        augmented_scores(scores, abstain_score, given_scores),
        family,
        abstention=abstention,
        refusals=refusals,
        costs=costs,
    )
    entry = score_entry_levels(
        scores,
        family,
        abstain_score=abstain_score,
        abstain_scores=given_scores,
        abstention=abstention,
        refusals=refusals,
        costs=costs,
    )
    assert np.array_equal(entry, expected)
