"""The synthetic demo benchmark is labelled as such and has the structure it promises."""

from __future__ import annotations

import numpy as np
import pytest

from racer.aggregate import answer_codes
from racer.evaluation.synthetic import TOPICS, make_synthetic_benchmark


@pytest.fixture(scope="module")
def data():
    return make_synthetic_benchmark(3000, random_state=2)


def test_it_is_clearly_synthetic_and_reproducible(data):
    assert data.name.startswith("synthetic")
    assert all(q.startswith("Question (") and "synthetic" in q for q in data.queries[:50])
    again = make_synthetic_benchmark(3000, random_state=2)
    assert np.array_equal(again.labels, data.labels)
    assert not np.array_equal(make_synthetic_benchmark(3000, random_state=3).labels, data.labels)


def test_models_differ_by_topic_price_and_some_queries_are_unsolvable(data):
    per_topic_best = {
        topic: int(np.argmax(data.labels[data.sources == topic].mean(axis=0)[:-1]))
        for topic in TOPICS
    }
    # Excluding the frontier model, different topics have different best models.
    assert len(set(per_topic_best.values())) >= 3
    prices = data.mean_costs()
    assert prices.max() / prices.min() > 30
    unsolvable = (data.labels == 0).all(axis=1).mean()
    assert 0.05 < unsolvable < 0.2
    assert (data.labels == 1).any(axis=1).mean() > 0.8


def test_correct_responses_agree_and_wrong_ones_do_not_vote_for_the_key(data):
    codes = answer_codes(data.responses, kind="choice")
    assert (codes >= 0).all()
    for row in range(300):
        right = codes[row, data.labels[row] == 1]
        wrong = codes[row, data.labels[row] == 0]
        assert len(set(right)) <= 1
        assert not set(right) & set(wrong)


def test_rejects_bad_share():
    with pytest.raises(ValueError, match="unsolvable_share"):
        make_synthetic_benchmark(10, unsolvable_share=1.5)
