"""Per-group (Mondrian) certificates: each group is calibrated on its own rows only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from racer import RACER, InfeasibleCalibrationError
from racer.bounds import n_needed
from racer.groups import POOLED, encode_groups, group_delta, group_risk_table, pool_small_groups


def two_groups(seed=0, n_easy=900, n_hard=700, m=4):
    """An easy group (good models likely) and a hard one (scores say less)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(n_easy + n_hard, m))
    power = np.r_[np.full(n_easy, 0.5), np.full(n_hard, 3.0)][:, None]
    labels = (rng.uniform(size=scores.shape) < scores**power).astype(float)
    groups = np.r_[np.full(n_easy, "easy"), np.full(n_hard, "hard")]
    order = rng.permutation(len(groups))
    return scores[order], labels[order], groups[order]


@pytest.mark.parametrize("abstention", ["flag", "strict", False])
def test_per_group_predict_equals_the_groups_own_fit(abstention):
    scores, labels, groups = two_groups()
    router = RACER(alpha=0.4, abstention=abstention).fit(scores, labels, groups=groups)
    decision = router.predict(scores, groups=groups, include_abstain=True)
    for name in ("easy", "hard"):
        rows = groups == name
        alone = RACER(alpha=0.4, abstention=abstention).fit(scores[rows], labels[rows])
        assert router.groups_[name].threshold == alone.threshold_
        assert router.groups_[name].abstain_threshold == alone.abstain_threshold_
        assert router.groups_[name].risk_bound == alone.risk_bound_
        assert router.groups_[name].n == rows.sum()
        assert np.array_equal(decision[rows], alone.predict(scores[rows], include_abstain=True))
    assert router.threshold_ is None
    assert router.risk(scores, labels, groups=groups) == pytest.approx(router.empirical_risk_)


def test_a_groups_certificate_does_not_depend_on_other_groups_data():
    scores, labels, groups = two_groups()
    easy = groups == "easy"
    other = two_groups(seed=5)
    changed_scores = np.vstack([scores[easy], other[0][other[2] == "hard"][:100]])
    changed_labels = np.vstack([labels[easy], other[1][other[2] == "hard"][:100]])
    changed_groups = np.r_[groups[easy], np.full(100, "hard")]
    first = RACER(alpha=0.2).fit(scores, labels, groups=groups).groups_["easy"]
    second = RACER(alpha=0.2).fit(changed_scores, changed_labels, groups=changed_groups)
    assert second.groups_["easy"] == first


def test_the_marginal_certificate_can_leave_a_group_above_alpha_that_per_group_fixes():
    scores, labels, groups = two_groups(n_easy=4000, n_hard=1000)
    test = two_groups(seed=9, n_easy=4000, n_hard=1000)
    marginal = RACER(alpha=0.1).fit(scores, labels)
    per_group = RACER(alpha=0.1).fit(scores, labels, groups=groups)
    marginal_table = marginal.group_risk(*test)
    per_group_table = per_group.group_risk(*test)
    assert marginal_table.names == ("easy", "hard")
    assert marginal_table.above_alpha.tolist() == [False, True]
    assert marginal_table.risk[1] > 0.25  # the hard group at 2.5 alpha
    assert np.all(per_group_table.risk < 0.11)  # each group at alpha, up to test noise


def test_too_small_groups_are_named_with_their_n_and_the_n_needed():
    scores, labels, groups = two_groups()
    groups = groups.astype(object)
    groups[:10], groups[10:15] = "tiny", "smaller"
    needed = n_needed("binomial", 0.1, 0.1)
    with pytest.raises(InfeasibleCalibrationError) as error:
        RACER(alpha=0.1).fit(scores, labels, groups=groups)
    message = str(error.value)
    assert f"n={needed}" in message and "'smaller' (n=5)" in message and "'tiny' (n=10)" in message
    assert "'easy'" not in message and "small_groups='pool'" in message


def test_pooled_small_groups_share_one_certificate_that_serves_unseen_groups():
    scores, labels, groups = two_groups()
    groups = groups.astype(object)
    groups[:10], groups[10:15] = "tiny", "smaller"
    router = RACER(alpha=0.2, small_groups="pool").fit(scores, labels, groups=groups)
    assert sorted(router.groups_) == sorted(["easy", "hard", POOLED])
    assert router.groups_[POOLED].members == ("smaller", "tiny") and router.groups_[POOLED].n == 15
    unseen = router.predict(scores[:3], groups=["new"] * 3, include_abstain=True)
    pooled = router.predict(scores[:3], groups=["tiny"] * 3, include_abstain=True)
    assert np.array_equal(unseen, pooled)


def test_an_unseen_group_without_a_pooled_certificate_is_refused_by_name():
    scores, labels, groups = two_groups()
    router = RACER(alpha=0.2).fit(scores, labels, groups=groups)
    with pytest.raises(ValueError, match=r"Groups \['new'\] were not seen at fit"):
        router.predict(scores[:2], groups=["easy", "new"])
    with pytest.raises(ValueError, match="pass groups="):
        router.predict(scores[:2])
    with pytest.raises(ValueError, match="calibrated marginally"):
        RACER(alpha=0.2).fit(scores, labels).predict(scores[:2], groups=["easy", "hard"])


def test_all_groups_at_once_certifies_each_at_delta_over_the_number_of_groups():
    scores, labels, groups = two_groups()
    router = RACER(alpha=0.2, delta=0.1, group_guarantee="all").fit(scores, labels, groups=groups)
    rows = groups == "hard"
    alone = RACER(alpha=0.2, delta=0.05).fit(scores[rows], labels[rows])
    assert router.groups_["hard"].delta == 0.05
    assert router.groups_["hard"].threshold == alone.threshold_
    assert group_delta(0.1, 4, "each") == 0.1 and group_delta(0.1, 4, "all") == 0.025


def test_per_group_state_round_trips_through_json():
    scores, labels, groups = two_groups()
    groups = groups.astype(object)
    groups[:10], groups[10:15] = "tiny", "smaller"
    router = RACER(alpha=0.2, small_groups="pool").fit(scores, labels, groups=groups)
    state = router.get_state()
    state["fitted"] = json.loads(json.dumps(state["fitted"]))
    loaded = RACER.from_state(state)
    assert loaded.groups_ == router.groups_
    assert np.array_equal(
        loaded.predict(scores, groups=groups, include_abstain=True),
        router.predict(scores, groups=groups, include_abstain=True),
    )


def test_group_labels_are_encoded_as_sorted_strings_and_checked():
    names, codes = encode_groups([3, "a", 3, "b"], 4)
    assert names == ("3", "a", "b") and codes.tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match="one label per query"):
        encode_groups(["a"], 2)
    with pytest.raises(ValueError, match="missing label"):
        encode_groups(["a", None], 2)
    names, codes, pooled = pool_small_groups(("a", "b", "c"), np.array([0, 1, 2, 1]),
                                             np.array([True, False, True]))
    assert names == ("b", POOLED) and codes.tolist() == [1, 0, 1, 0] and pooled == ("a", "c")


@pytest.mark.parametrize("wide", [False, True])
def test_integer_group_labels_are_named_in_string_order_whatever_their_range(wide):
    labels = np.array([10, -2, 9, 10, 100_000 if wide else 7], dtype=np.int32)
    names, codes = encode_groups(labels, 5)
    top = "100000" if wide else "7"
    assert names == tuple(sorted(["-2", "10", "9", top]))
    assert [names[c] for c in codes] == [str(v) for v in labels.tolist()]


def test_string_group_labels_are_coded_by_their_position_among_the_sorted_names():
    labels = np.random.default_rng(0).choice(["mmlu", "arc", "", "gsm 8k", "é"], 200)
    names, codes = encode_groups(labels.astype(object), 200)
    assert names == tuple(sorted(set(labels.tolist())))
    assert np.array_equal(np.array(names)[codes], labels)


def test_group_risk_table_counts_each_groups_mean_loss():
    table = group_risk_table(np.array([1.0, 0, 0, 1, 1, 0]), ["x", "y", "x", "y", "y", "x"], 0.5)
    assert table.n.tolist() == [3, 3]
    assert table.risk.tolist() == pytest.approx([1 / 3, 2 / 3])
    assert table.rows()[1] == {"group": "y", "n": 3, "risk": pytest.approx(2 / 3),
                               "above_alpha": True}
