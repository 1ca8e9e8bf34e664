"""RouteLLM's response CSVs: prompt, a True/False column per model, <model>_response."""

from __future__ import annotations

import numpy as np
import pytest

from racer.data import MissingLabelsWarning, detect_format, load_dataset, load_routellm

CSV = (
    "prompt,gpt-4-1106-preview,mixtral-8x7b,gpt-4-1106-preview_response,mixtral-8x7b_response\n"
    '"What is 2+2?",True,False,4,5\n'
    '"Capital of France, please?",true,TRUE,Paris,"Paris, France"\n'
    '"Unanswered",False,,no,\n'
)


def test_a_routellm_csv_is_detected_and_read_with_labels_and_responses(tmp_path):
    path = tmp_path / "mmlu_responses.csv"
    path.write_text(CSV, encoding="utf-8")
    assert detect_format(path) == "routellm"
    with pytest.warns(MissingLabelsWarning, match="mixtral-8x7b: 1"):
        data = load_dataset(path)
    assert data.model_names == ("gpt-4-1106-preview", "mixtral-8x7b")
    assert data.queries.tolist() == ["What is 2+2?", "Capital of France, please?", "Unanswered"]
    assert np.array_equal(data.labels, [[1, 0], [1, 1], [0, np.nan]], equal_nan=True)
    assert data.responses.tolist() == [["4", "5"], ["Paris", "Paris, France"], ["no", None]]
    assert data.name == "mmlu_responses"
    with pytest.warns(MissingLabelsWarning):
        assert load_dataset(path, missing="drop_queries").n_queries == 2


def test_a_csv_without_response_columns_is_refused_with_what_was_expected(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("prompt,a\nq,True\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a RouteLLM response CSV.*'<model>_response'"):
        load_routellm(path)
