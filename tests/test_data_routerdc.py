"""RouterDC JSON: the loader reproduces the data README's reference figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from racer.data import MissingLabelsWarning, load_routerdc
from racer.data.routerdc import routerdc_kind

# file, queries, best single-model accuracy, any model correct (README table).
README_TABLE = [
    ("mmlu_train", 2000, 0.656, 0.852),
    ("mmlu_test", 4213, 0.646, 0.853),
    ("gsm8k-train", 1000, 0.827, 0.907),
    ("gsm8k-test", 1319, 0.720, 0.861),
    ("cmmlu_train", 2000, 0.484, 0.796),
    ("cmmlu_test", 3475, 0.518, 0.796),
    ("arc_challenge_train", 820, 0.570, 0.728),
    ("arc_challenge_test", 352, 0.580, 0.724),
    ("humaneval_train", 115, 0.539, 0.722),
    ("humaneval_test", 49, 0.531, 0.653),
    ("arc_easy_train", 1663, 0.824, 0.921),
    ("arc_easy_test", 713, 0.830, 0.931),
    ("MATH_prealgebra", 871, 0.397, 0.670),
    ("mbpp", 500, 0.482, 0.622),
    ("ceval", 1346, 0.520, 0.816),
]


@pytest.mark.parametrize(("stem", "n_queries", "best", "any_correct"), README_TABLE)
def test_reference_figures_match_the_readme(shared_data, stem, n_queries, best, any_correct):
    data = load_routerdc(shared_data / "routerdc" / f"{stem}.json", pass_threshold=0.5)
    assert data.n_queries == n_queries
    assert data.n_models == 7
    assert round(float(data.labels.mean(axis=0).max()), 3) == best
    assert round(float(data.labels.max(axis=1).mean()), 3) == any_correct


def test_multi_attempt_files_keep_the_pass_fraction_as_quality(shared_data):
    data = load_routerdc(shared_data / "routerdc" / "gsm8k-test.json")
    # the fraction of 10 sampled attempts that passed: exactly 0.0, 0.1, ..., 1.0
    np.testing.assert_allclose(np.unique(data.quality), np.arange(11) / 10)
    np.testing.assert_array_equal(data.labels, (data.quality >= 0.5).astype(float))


def test_pass_threshold_is_explicit_and_moves_the_labels(shared_data):
    path = shared_data / "routerdc" / "gsm8k-test.json"
    strict = load_routerdc(path, pass_threshold=1.0)
    lenient = load_routerdc(path, pass_threshold=0.1)
    assert strict.labels.sum() < load_routerdc(path).labels.sum() < lenient.labels.sum()
    np.testing.assert_array_equal(strict.labels, (strict.quality == 1.0).astype(float))


def test_multiple_choice_files_label_any_positive_score_correct(shared_data):
    data = load_routerdc(shared_data / "routerdc" / "mmlu_train.json")
    raw = json.loads((shared_data / "routerdc" / "mmlu_train.json").read_text())
    scores = np.array([[r["scores"][m] for m in data.model_names] for r in raw])
    assert data.quality is None
    np.testing.assert_array_equal(data.labels, (scores > 0).astype(float))


def test_kind_override_reads_pass_fractions_as_choices(shared_data):
    path = shared_data / "routerdc" / "gsm8k-test.json"
    as_choice = load_routerdc(path, kind="choice")
    assert as_choice.quality is None
    np.testing.assert_array_equal(as_choice.labels, (load_routerdc(path).quality > 0) * 1.0)


def test_ids_and_sources_come_from_the_file_stem(shared_data):
    data = load_routerdc(shared_data / "routerdc" / "humaneval_test.json")
    assert list(data.query_ids[:2]) == ["humaneval_test:0", "humaneval_test:1"]
    assert set(data.sources) == {"humaneval_test"}
    assert data.name == "humaneval_test"
    raw = json.loads((shared_data / "routerdc" / "humaneval_test.json").read_text())
    assert list(data.queries) == [r["question"] for r in raw]


def test_kind_detection_by_name():
    assert routerdc_kind("gsm8k-test") == "pass_fraction"
    assert routerdc_kind("MATH_prealgebra") == "choice"
    assert routerdc_kind("my_file", np.array([[0.0, 1.0]])) == "choice"
    with pytest.raises(ValueError, match="kind='choice' or kind='pass_fraction'"):
        routerdc_kind("my_file", np.array([[0.3, 1.0]]))


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def test_unknown_name_with_graded_scores_asks_for_kind(tmp_path):
    path = _write(tmp_path, "mine.json", json.dumps([{"question": "q", "scores": {"a": 0.4}}]))
    with pytest.raises(ValueError, match="Pass kind="):
        load_routerdc(path)
    assert load_routerdc(path, kind="pass_fraction", pass_threshold=0.4).labels[0, 0] == 1.0


def test_null_scores_are_missing_and_reported(tmp_path):
    records = [
        {"question": "q1", "scores": {"a": 1, "b": None}},
        {"question": "q2", "scores": {"a": 0}},
    ]
    path = _write(tmp_path, "mmlu_small.json", json.dumps(records))
    with pytest.warns(MissingLabelsWarning, match=r"2 of 4 .*b: 2"):
        data = load_routerdc(path)
    assert np.isnan(data.labels[:, 1]).all()
    assert data.labels[0, 0] == 1.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"question": "q", ', "not valid JSON"),
        ('{"question": "q"}', "expected a non-empty JSON list"),
        ("[]", "expected a non-empty JSON list"),
        ('[{"question": "q", "scores": {"a": "high"}}]', "expected a number"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        load_routerdc(_write(tmp_path, "mmlu_bad.json", content))


def test_records_with_other_models_are_rejected(tmp_path):
    records = [{"question": "q1", "scores": {"a": 1}}, {"question": "q2", "scores": {"b": 0}}]
    with pytest.raises(ValueError, match="every record must score the same models"):
        load_routerdc(_write(tmp_path, "mmlu_x.json", json.dumps(records)))


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_routerdc(tmp_path / "nope.json")
