"""Splits by query: an id or a text never lands on both sides; strata keep their shares."""

from __future__ import annotations

import numpy as np
import pytest

from racer.data import (
    RoutingDataset,
    calibration_test_split,
    load_dataset,
    load_routerdc,
    query_groups,
    split_dataset,
    train_test_split,
)


@pytest.fixture(scope="module")
def mmlu_test(shared_data) -> RoutingDataset:
    return load_routerdc(shared_data / "routerdc" / "mmlu_test.json")  # 8 repeated texts


@pytest.fixture(scope="module")
def pooled_train(shared_data) -> RoutingDataset:
    names = ("mmlu_train", "gsm8k-train", "arc_challenge_train", "humaneval_train")
    return load_dataset([shared_data / "routerdc" / f"{n}.json" for n in names])


def _toy(ids: list[str], texts: list[str], sources: list[str] | None = None) -> RoutingDataset:
    return RoutingDataset(
        queries=np.array(texts, dtype=object),
        model_names=("a",),
        labels=np.ones((len(ids), 1)),
        query_ids=np.array(ids),
        sources=None if sources is None else np.array(sources),
    )


def test_groups_join_rows_through_shared_ids_and_texts():
    data = _toy(["a", "b", "b", "c", "d"], ["x", "x", "y", "z", "z"])
    np.testing.assert_array_equal(query_groups(data), [0, 0, 0, 1, 1])


def test_repeated_texts_never_cross_the_split(mmlu_test):
    assert mmlu_test.n_queries - len(set(mmlu_test.queries)) == 8
    for seed in range(5):
        train, test = train_test_split(mmlu_test, 0.5, random_state=seed)
        assert not set(train.queries) & set(test.queries)
        assert not set(train.query_ids) & set(test.query_ids)
        assert train.n_queries + test.n_queries == mmlu_test.n_queries


def test_repeated_ids_never_cross_the_split():
    data = _toy([str(i // 3) for i in range(300)], [f"t{i}" for i in range(300)])
    train, test = train_test_split(data, 0.3, random_state=1)
    assert not set(train.query_ids) & set(test.query_ids)
    assert test.n_queries == 3 * 30


def test_sizes_count_distinct_queries(mmlu_test):
    n_groups = int(query_groups(mmlu_test).max()) + 1
    train, test = train_test_split(mmlu_test, test_size=0.3)
    assert abs(int(query_groups(test).max()) + 1 - 0.3 * n_groups) <= 0.5
    calibration, rest = calibration_test_split(mmlu_test, 500)
    assert int(query_groups(calibration).max()) + 1 == 500
    assert calibration.n_queries + rest.n_queries == mmlu_test.n_queries


def test_three_way_split_covers_every_row_once(mmlu_test):
    parts = split_dataset(mmlu_test, (0.4, 0.3, 0.3), random_state=3)
    ids = np.concatenate([p.query_ids for p in parts])
    assert sorted(ids) == sorted(mmlu_test.query_ids)
    assert [round(p.n_queries / mmlu_test.n_queries, 2) for p in parts] == [0.4, 0.3, 0.3]


def test_stratified_split_keeps_each_source_share(pooled_train):
    train, test = train_test_split(pooled_train, 0.25, stratify_by_source=True, random_state=7)
    for source in np.unique(pooled_train.sources):
        total = int((pooled_train.sources == source).sum())
        assert abs((test.sources == source).sum() - 0.25 * total) <= 1


def test_unstratified_split_drifts_on_a_small_source(pooled_train):
    shares = [
        (train_test_split(pooled_train, 0.25, random_state=s)[1].sources == "humaneval_train").sum()
        for s in range(20)
    ]
    assert np.ptp(shares) > 2  # 115 humaneval rows: the share varies when not stratified


def test_a_seed_reproduces_the_split_and_another_changes_it(mmlu_test):
    first = train_test_split(mmlu_test, random_state=11)[1].query_ids
    again = train_test_split(mmlu_test, random_state=11)[1].query_ids
    other = train_test_split(mmlu_test, random_state=12)[1].query_ids
    np.testing.assert_array_equal(first, again)
    assert set(first) != set(other)


def test_rows_keep_their_original_order(mmlu_test):
    _, test = train_test_split(mmlu_test, 0.5)
    positions = [int(i.split(":")[1]) for i in test.query_ids]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("size", "message"),
    [(0.0, "fraction in"), (1.0, "fraction in"), (5, "between 1 and 2"), (-1, "between 1")],
)
def test_impossible_sizes_are_refused(size, message):
    data = _toy(["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(ValueError, match=message):
        train_test_split(data, size)


def test_sizes_that_empty_a_part_are_refused():
    data = _toy(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="leave part"):
        split_dataset(data, (0.8, 0.1, 0.1))
    with pytest.raises(ValueError, match="sum to 1"):
        split_dataset(data, (0.5, 0.4))
