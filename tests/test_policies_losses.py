"""Answer-level losses: error, regret against a reference, set misrouting, unknowns worst case."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from racer.losses import is_binary
from racer.policies.losses import answer_losses

LABELS = np.array(
    [
        [1.0, 0.0, 1.0],  # served 1 wrong, reference 0 right: regret
        [0.0, 1.0, 0.0],  # served 1 right
        [0.0, 0.0, 1.0],  # served 1 wrong, reference wrong: error but no regret
        [1.0, np.nan, 0.0],  # served unknown: counted wrong
    ]
)


def test_error_and_regret_count_what_the_user_receives():
    served = np.array([1, 1, 1, 1])
    assert answer_losses("error", served, None, LABELS).tolist() == [1, 0, 1, 1]
    assert answer_losses("regret", served, None, LABELS, reference=0).tolist() == [1, 0, 0, 1]


def test_a_refusal_is_wrong_and_an_unknown_reference_counts_as_right():
    labels = np.array([[np.nan, 0.0], [1.0, 1.0]])
    served = np.array([1, -1])
    assert answer_losses("error", served, None, labels).tolist() == [1, 1]
    assert answer_losses("regret", served, None, labels, reference=0).tolist() == [1, 1]


def test_set_loss_is_misrouting_of_the_invoked_models():
    invoked = np.array(
        [[True, False, False], [True, False, False], [False, True, True], [False, False, True]]
    )
    losses = answer_losses("set", np.zeros(4, dtype=int), invoked, LABELS)
    # Row 3: the unknown model outside the set might have been right.
    assert losses.tolist() == [0, 1, 0, 1]


def test_graded_regret_is_the_quality_gap():
    quality = np.array([[0.9, 0.4], [0.2, 0.7]])
    losses = answer_losses("regret", np.array([1, 1]), None, quality, reference=0)
    np.testing.assert_allclose(losses, [0.5, 0.0])


def test_regret_without_reference_is_refused():
    with pytest.raises(ValueError, match="needs a reference"):
        answer_losses("regret", np.array([0]), None, np.ones((1, 2)))
    with pytest.raises(ValueError, match="objective must be one of"):
        answer_losses("accuracy", np.array([0]), None, np.ones((1, 2)))


@given(arrays(np.float64, (30, 4), elements=st.sampled_from([0.0, 1.0])), st.integers(0, 3))
def test_regret_risk_bounds_the_accuracy_lost_against_the_reference(labels, reference):
    rng = np.random.default_rng(0)
    served = rng.integers(0, 4, size=30)
    regret = answer_losses("regret", served, None, labels, reference=reference).mean()
    accuracy = labels[np.arange(30), served].mean()
    assert labels[:, reference].mean() - accuracy <= regret + 1e-12
    # Serving the reference itself has no regret.
    assert (
        answer_losses("regret", np.full(30, reference), None, labels, reference=reference).sum()
        == 0
    )


def _brute_force(objective, served, invoked, labels, reference):
    """Largest loss over every 0/1 completion of the unknown labels (one query)."""
    unknown = np.flatnonzero(np.isnan(labels))
    worst = 0.0
    for bits in range(2 ** unknown.size):
        filled = labels.copy()
        filled[unknown] = [(bits >> i) & 1 for i in range(unknown.size)]
        served_right = served >= 0 and filled[served] == 1
        if objective == "error":
            loss = float(not served_right)
        elif objective == "regret":
            loss = float(not served_right and filled[reference] == 1)
        else:
            loss = float(filled.any() and not (filled[invoked] == 1).any())
        worst = max(worst, loss)
    return worst


@given(
    arrays(np.float64, (12, 4), elements=st.sampled_from([0.0, 1.0, np.nan])),
    arrays(np.bool_, (12, 4)),
    arrays(np.int64, (12,), elements=st.integers(-1, 3)),
    st.integers(0, 3),
)
def test_unknowns_count_at_their_worst_completion_exactly(labels, invoked, served, reference):
    for objective in ("error", "regret", "set"):
        got = answer_losses(objective, served, invoked, labels, reference=reference)
        expected = [
            _brute_force(objective, served[i], invoked[i], labels[i], reference)
            for i in range(labels.shape[0])
        ]
        assert got.tolist() == expected, objective


def test_an_unknown_label_the_set_called_is_not_a_misroute_when_the_others_are_wrong():
    # Old rule: counted 1 (unknown outside-the-set-as-right); no completion is a misroute.
    labels = np.array([[np.nan, 0.0, 0.0]])
    invoked = np.array([[True, False, False]])
    assert answer_losses("set", np.array([0]), invoked, labels).tolist() == [0.0]
    # Serving the reference has no regret even when its label is unknown.
    assert answer_losses("regret", np.array([0]), None, labels, reference=0).tolist() == [0.0]


def _graded_worst(objective, served, invoked, quality, reference, grid):
    """Largest loss over completions of the unknowns on a grid."""
    unknown = np.flatnonzero(np.isnan(quality))
    worst = 0.0
    for values in product(grid, repeat=unknown.size):
        filled = quality.copy()
        filled[unknown] = values
        got = 0.0 if served < 0 else filled[served]
        if objective == "error":
            loss = 1.0 - got
        elif objective == "regret":
            loss = 0.0 if served == reference else max(filled[reference] - got, 0.0)
        else:
            loss = 0.0 if not (filled > 0).any() else 1.0 - filled[invoked].max(initial=0.0)
        worst = max(worst, loss)
    return worst


@given(
    arrays(np.float64, (8, 3), elements=st.sampled_from([0.0, 0.3, 0.8, 1.0, np.nan])),
    arrays(np.bool_, (8, 3)),
    arrays(np.int64, (8,), elements=st.integers(-1, 2)),
    st.integers(0, 2),
)
def test_graded_unknowns_count_at_their_worst_completion(quality, invoked, served, reference):
    # A task whose known values are all 0/1 has 0/1 labels (main's rule, is_binary);
    # otherwise an unknown can be any value in [0, 1], a tiny positive one included.
    grid = (0.0, 1.0) if is_binary(quality) else (0.0, 1e-9, 0.5, 1.0)
    for objective in ("error", "regret", "set"):
        got = answer_losses(objective, served, invoked, quality, reference=reference)
        for i in range(quality.shape[0]):
            expected = _graded_worst(objective, served[i], invoked[i], quality[i], reference, grid)
            # The sup over [0, 1]: the grid reaches it up to the tiny positive value.
            assert expected - 1e-12 <= got[i] <= expected + 1e-6, (objective, i)
