"""The synthetic demo benchmark is labelled as such and has the structure it promises."""

from __future__ import annotations

import numpy as np
import pytest

from racer.aggregate import answer_codes, detect_answer_kind
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


@pytest.fixture(scope="module")
def story():
    from racer.evaluation.synthetic import answer_level_story

    return answer_level_story(n_trials=100, random_state=1)


def _records(story, task):
    return {r["alpha"]: r for r in story if r["task"] == f"synthetic-{task}"}


def test_story_tasks_have_the_structure_they_promise():
    from racer.evaluation.synthetic import TRAP_SHARE, make_answer_level_task

    agree = make_answer_level_task("cheap-models-agree", 4000, random_state=5)
    codes = answer_codes(agree.responses, kind="choice")
    both_wrong = (agree.labels[:, 0] == 0) & (agree.labels[:, 1] == 0)
    # Wrong cheap answers rarely coincide: agreement is evidence of being right.
    assert ((codes[:, 0] == codes[:, 1]) & both_wrong).mean() < 0.01
    trapped = make_answer_level_task("cheap-models-wrong-together", 4000, random_state=5)
    codes = answer_codes(trapped.responses, kind="choice")
    together = (codes[:, 0] == codes[:, 1]) & (codes[:, 1] == codes[:, 2])
    wrong_together = together & (trapped.labels[:, :3] == 0).all(axis=1)
    assert wrong_together.mean() > 0.8 * TRAP_SHARE
    assert trapped.labels[wrong_together, 3].mean() > 0.85
    open_ended = make_answer_level_task("open-ended", 500, random_state=5)
    assert detect_answer_kind(open_ended.responses) is None
    with pytest.raises(ValueError, match="story must be one of"):
        make_answer_level_task("easy", 10)


def test_certification_saves_money_where_cheap_models_agree_and_are_right(story):
    from racer.evaluation.report import monte_carlo_limit

    for alpha in (0.03, 0.05):
        record = _records(story, "cheap-models-agree")[alpha]
        assert record["refused"] < 0.5 and record["cost_share"] < 0.6
        assert record["policy"].startswith("cascade")
        assert record["accuracy"] >= record["reference_accuracy"] - alpha
    for record in story:
        assert record["violation_rate"] <= monte_carlo_limit(record["delta"], record["trials"])


def test_certification_refuses_where_cheap_models_are_wrong_together_or_cannot_agree(story):
    for task in ("cheap-models-wrong-together", "open-ended"):
        for record in _records(story, task).values():
            assert record["refused"] >= 0.9, (task, record["alpha"])
            assert record["cost_share"] > 0.9
            assert record["policy"] == "always call frontier"


def test_the_story_reports_the_frontier_model_s_real_accuracy(story):
    from racer.data.split import train_test_split
    from racer.evaluation.synthetic import STORIES, make_answer_level_task

    for offset, name in enumerate(STORIES):
        data = make_answer_level_task(name, 2000, random_state=1 + offset)
        pool = train_test_split(data, 0.5, random_state=1)[1]
        for record in _records(story, name).values():
            assert record["reference_accuracy"] == pytest.approx(pool.labels[:, 3].mean())
