"""Family-wise error procedures against their definitions, and their error rate."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from racer.fwer import bonferroni, control_fwer, fixed_sequence, holm

p_value_lists = st.lists(st.floats(0, 1), min_size=1, max_size=12)


@given(p=p_value_lists, delta=st.floats(0.01, 0.5))
def test_bonferroni_rejects_exactly_below_its_share(p, delta):
    p = np.array(p)
    assert np.array_equal(bonferroni(p, delta), p <= delta / p.size)


@given(p=p_value_lists, delta=st.floats(0.01, 0.5))
def test_holm_is_the_step_down_of_its_definition(p, delta):
    p = np.array(p)
    rejected = np.zeros(p.size, dtype=bool)
    for i, j in enumerate(np.argsort(p, kind="stable")):
        if p[j] > delta / (p.size - i):
            break
        rejected[j] = True
    assert np.array_equal(holm(p, delta), rejected)
    assert np.all(holm(p, delta) >= bonferroni(p, delta))  # never less powerful


def test_fixed_sequence_stops_at_the_first_failure_of_its_order():
    p = np.array([0.01, 0.5, 0.02, 0.03])
    assert fixed_sequence(p, 0.05).tolist() == [True, False, False, False]
    assert fixed_sequence(p, 0.05, order=np.array([3, 2, 0, 1])).tolist() == [
        True, False, True, True,
    ]


def test_chains_share_delta_equally():
    p = np.array([0.03, 0.01, 0.04, 0.02])
    chains = [np.array([0, 1]), np.array([3, 2])]
    # each chain is tested at 0.05 / 2 = 0.025
    assert fixed_sequence(p, 0.05, order=chains).tolist() == [False, False, False, True]


def test_unknown_method_and_bad_order_are_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        control_fwer(np.array([0.1]), 0.1, "sidak")
    with pytest.raises(ValueError, match="outside"):
        fixed_sequence(np.array([0.1]), 0.1, order=np.array([3]))


@pytest.mark.parametrize("method", ["fixed_sequence", "bonferroni", "holm"])
def test_family_wise_error_is_at_most_delta_under_the_global_null(method):
    # Valid p-values of true nulls are super-uniform: the chance of any rejection <= delta.
    rng = np.random.default_rng(0)
    trials, delta = 4000, 0.1
    rejections = [control_fwer(rng.uniform(size=20), delta, method).any() for _ in range(trials)]
    slack = 3 * np.sqrt(delta * (1 - delta) / trials)
    assert np.mean(rejections) <= delta + slack


def test_chained_fixed_sequence_error_with_true_nulls_first_in_some_chains():
    rng = np.random.default_rng(1)
    trials, delta = 4000, 0.1
    null = np.array([True, False, True, False, False, True])  # chains: (0,1,2), (3,4,5)
    errors = 0
    for _ in range(trials):
        p = np.where(null, rng.uniform(size=6), 0.0)
        rejected = fixed_sequence(p, delta, order=[np.array([0, 1, 2]), np.array([3, 4, 5])])
        errors += bool((rejected & null).any())
    assert errors / trials <= delta + 3 * np.sqrt(delta * (1 - delta) / trials)


def test_procedures_reject_everything_when_all_p_values_are_zero():
    for method, k in itertools.product(["fixed_sequence", "bonferroni", "holm"], [1, 5]):
        assert control_fwer(np.zeros(k), 0.1, method).all()
