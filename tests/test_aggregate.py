"""Aggregation: answer extraction, score-weighted vote, best-in-set, and real responses."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from racer.aggregate import (
    JUDGE_PROMPT_VERSION,
    answer_codes,
    any_correct,
    choose_in_sets,
    choose_response,
    chosen_correct,
    detect_answer_kind,
    extract_answer,
    judge_choice,
    judge_prompt,
    log_odds,
    weighted_vote,
)
from racer.data.load import load_dataset


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("B", "auto", "B"),
        ("C\n", "auto", "C"),
        ("(D) because", "auto", "D"),
        ("A) dry palms", "choice", "A"),
        ("D (the moon)", "auto", "D"),
        ("The answer is (B).", "auto", "B"),
        ("Answer: **C**", "choice", "C"),
        ("A chart would help here", "choice", None),
        ("I do not know", "auto", None),
        ("So the total is 1,200 dollars.", "number", "1200"),
        ("#### 42\nSome trailing 7", "number", "42"),
        ("we get \\boxed{3.50}", "number", "3.5"),
        ("The answer is -7.", "auto", "-7"),
        ("costs $18.00", "number", "18"),
        (None, "auto", None),
    ],
)
def test_extract_answer(text, kind, expected):
    assert extract_answer(text, kind) == expected


def test_extract_answer_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        extract_answer("A", kind="letter")


def test_vote_is_score_weighted_majority():
    # B has two voters (0.5 + 0.6 = 1.1) against A's 0.9; the top-scored B response wins.
    assert choose_response(["A", "B", "B"], [0.9, 0.5, 0.6]) == 2
    assert choose_response(["A", "B", "B"], [0.9, 0.5, 0.6], method="best") == 0


def test_vote_ties_go_to_the_higher_single_score():
    # 0.9 against 0.4 + 0.5: tied weight, A holds the higher single score.
    assert choose_response(["A", "B", "B"], [0.9, 0.4, 0.5]) == 0


def test_failed_backends_and_unextractable_answers():
    assert choose_response([None, "C", "I do not know"], [0.99, 0.1, 0.9]) == 1
    assert choose_response(["I do not know", None, "unsure"], [0.3, 0.99, 0.5]) == 2
    assert choose_response([None, None], [0.5, 0.5]) is None
    assert choose_response([], []) is None
    with pytest.raises(ValueError, match="same length"):
        choose_response(["A"], [0.1, 0.2])


def test_numbers_vote_across_formats():
    responses = ["The answer is 1,000.", "#### 1000", "so it is 999"]
    assert choose_response(responses, [0.3, 0.3, 0.5], answer_kind="number") == 0


def test_vectorised_choice_matches_string_level_choice():
    rng = np.random.default_rng(3)
    letters = np.array(list("ABCD") + [None, "I do"], dtype=object)
    responses = letters[rng.integers(len(letters), size=(300, 5))]
    scores = rng.uniform(size=(300, 5))
    invoked = rng.uniform(size=(300, 5)) < 0.6
    codes = answer_codes(responses)
    for method in ("vote", "best"):
        chosen = choose_in_sets(invoked, scores, codes, method)
        for i in range(300):
            columns = np.flatnonzero(invoked[i])
            picked = choose_response(list(responses[i, columns]), list(scores[i, columns]), method)
            expected = -1 if picked is None else columns[picked]
            assert chosen[i] == expected


def test_any_correct_bounds_every_aggregator():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(200, 4)) < 0.5).astype(float)
    invoked = rng.uniform(size=(200, 4)) < 0.5
    scores = rng.uniform(size=(200, 4))
    best = chosen_correct(choose_in_sets(invoked, scores, None, "best"), labels)
    assert np.all(best <= any_correct(invoked, labels))
    assert not chosen_correct(np.full(200, -1), labels).any()


def _independent_vote(responses, scores, labels):
    """Score-weighted vote written from scratch over replies that are a bare letter."""
    correct = 0
    for row in range(len(responses)):
        weight, top = defaultdict(float), defaultdict(float)
        voters = defaultdict(list)
        for j, text in enumerate(responses[row]):
            letter = text.strip().rstrip(").:").strip() if isinstance(text, str) else ""
            if len(letter) == 1 and letter in "ABCDEFG":
                weight[letter] += scores[row, j]
                top[letter] = max(top[letter], scores[row, j])
                voters[letter].append(j)
        if weight:
            winner = max(sorted(weight), key=lambda a: (weight[a], top[a]))
            column = max(voters[winner], key=lambda j: (scores[row, j], -j))
            correct += labels[row, column] == 1.0
    return correct / len(responses)


def test_vote_accuracy_on_routerbench_real_responses(shared_data):
    data = load_dataset(
        shared_data / "routerbench" / "arc_challenge_test.csv", missing="drop_queries"
    )
    # Weight every model by its (real) accuracy on this file: a fixed, query-independent score.
    scores = np.broadcast_to(data.labels.mean(axis=0), data.labels.shape)
    invoked = np.ones(data.labels.shape, dtype=bool)
    chosen = choose_in_sets(invoked, scores, answer_codes(data.responses), "vote")
    accuracy = chosen_correct(chosen, data.labels).mean()
    expected = _independent_vote(data.responses, scores, data.labels)
    assert accuracy == pytest.approx(expected, abs=3 / data.n_queries)
    # Voting all eleven models is real information: far above the average model.
    assert accuracy > data.labels.mean() + 0.05


def test_detect_answer_kind_tells_letters_numbers_and_free_text_apart():
    assert (
        detect_answer_kind(np.array([["B", "C\n"], ["A) yes", "I do"]], dtype=object)) == "choice"
    )
    numbers = ["She has 3 apples.\n#### 3", "The answer is 12.", "\\boxed{7}", None]
    assert detect_answer_kind(np.array(numbers, dtype=object)) == "number"
    code = ["def f(x):\n    return x + 1", "for i in range(10):\n    print(i)"]
    assert detect_answer_kind(np.array(code, dtype=object)) is None
    assert detect_answer_kind(np.array([None, None], dtype=object)) is None


@given(
    st.integers(1, 6),
    st.lists(st.floats(0.01, 0.99), min_size=6, max_size=6),
    st.lists(st.integers(-2, 3), min_size=6, max_size=6),
)
def test_log_odds_vote_with_one_model_returns_that_model(m, probabilities, codes):
    invoked = np.zeros((1, 6), dtype=bool)
    invoked[0, m - 1] = True
    code_row = np.array(codes)[None, :]
    chosen = choose_in_sets(invoked, np.array(probabilities)[None, :], code_row, "logodds")[0]
    assert chosen == (-1 if code_row[0, m - 1] == -2 else m - 1)


def test_log_odds_weights_keep_weak_models_from_outvoting_a_strong_one():
    # One model right 95 % of the time against two right 60 % of the time.
    probabilities = np.array([[0.95, 0.6, 0.6]])
    codes = np.array([[0, 1, 1]])
    invoked = np.ones((1, 3), dtype=bool)
    assert choose_in_sets(invoked, probabilities, codes, "vote")[0] == 1
    assert choose_in_sets(invoked, probabilities, codes, "logodds")[0] == 0
    np.testing.assert_allclose(log_odds(np.array([0.95, 0.6])), np.log([19.0, 1.5]))


def test_weighted_vote_margin_is_winner_minus_the_rest():
    codes = np.array([[0, 0, 1], [0, -1, -2]])
    weights = np.array([[1.0, 2.0, 0.5]] * 2)
    chosen, margin = weighted_vote(np.ones((2, 3), dtype=bool), weights, codes)
    assert chosen.tolist() == [1, 0]
    np.testing.assert_allclose(margin, [2.5, 1.0])


def _rule_based_judge(prompt: str) -> str:
    """A fake judge: names the first answer that contains the word 'Paris'."""
    assert prompt.startswith("You are judging answers")
    answers = prompt.split("Answer ")[1:]
    for block in answers:
        number, text = block.split(":", 1)
        if "Paris" in text:
            return f"Best: {number}"
    return "I cannot decide."


def test_judge_names_the_answer_and_falls_back_to_best_in_set():
    responses = ["Lyon", None, "It is Paris."]
    scores = [0.9, 0.99, 0.2]
    assert judge_choice("Capital of France?", responses, scores, _rule_based_judge) == (2, True)
    # Unparsable verdict, failed judge, or an answer that does not exist: best-in-set.
    assert judge_choice("Capital of Italy?", ["Rome", "Milan"], [0.3, 0.6], _rule_based_judge) == (
        1,
        False,
    )

    def broken(prompt: str) -> str:
        raise TimeoutError("judge down")

    assert judge_choice("q", ["a", "b"], [0.7, 0.1], broken) == (0, False)
    assert judge_choice("q", ["a", "b"], [0.7, 0.1], lambda p: "Best: 7") == (0, False)
    assert judge_choice("q", [None, None], [0.7, 0.1], broken) == (None, False)
    assert (
        "Answer 2" not in judge_prompt("q", ["a", None, "c"])
        and "racer-judge" in JUDGE_PROMPT_VERSION
    )


def test_aggregator_comparison_names_the_winner_on_the_test_side():
    from racer.evaluation.certified_trials import aggregator_accuracies

    # One strong model (training accuracy 0.9) against two weak ones (0.6) that agree
    # on a wrong answer: the accuracy-weighted vote follows the weak pair, log-odds the
    # strong model, and best-in-set is the strong model alone.
    codes = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 1], [2, 1, 1]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=float)
    result = aggregator_accuracies(np.array([0.9, 0.6, 0.6]), codes, labels)
    assert (result["best"], result["vote"], result["logodds"]) == (0.75, 0.5, 0.75)
    assert result["winner"] == "best"  # ties go to the simpler aggregator
