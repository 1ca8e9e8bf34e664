"""load_dataset: one entry point for files, folders and lists of files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from racer.data import DuplicateQueriesWarning, detect_format, load_dataset


@pytest.mark.parametrize(
    ("relative", "expected"),
    [("routerdc/mmlu_test.json", "routerdc"), ("routerbench/mbpp_test.csv", "routerbench")],
)
def test_format_is_detected_from_the_content(shared_data, relative, expected):
    assert detect_format(shared_data / relative) == expected


def test_generic_tables_are_detected(tmp_path):
    (tmp_path / "t.csv").write_text("query,a\nq,1\n")
    (tmp_path / "r.json").write_text('[{"query": "q", "a": 1}]')
    assert detect_format(tmp_path / "t.csv") == detect_format(tmp_path / "r.json") == "table"
    assert load_dataset(tmp_path / "r.json").model_names == ("a",)


def test_a_single_file_keeps_its_loader_options(shared_data):
    data = load_dataset(shared_data / "routerdc" / "gsm8k-test.json", pass_threshold=1.0)
    assert data.n_queries == 1319
    np.testing.assert_array_equal(data.labels, (data.quality == 1.0) * 1.0)


def test_a_folder_pools_its_files_with_the_stem_as_source(shared_data):
    data = load_dataset(shared_data / "routerdc")
    assert data.name == "routerdc"
    assert data.n_queries == 20600
    assert len(set(data.sources)) == 16
    assert (data.sources == "gsm8k-test").sum() == 1319
    assert len(set(data.query_ids)) == data.n_queries
    # quality exists for pass-fraction files and equals the label on multiple-choice rows
    mmlu = data.sources == "mmlu_train"
    np.testing.assert_array_equal(data.quality[mmlu], data.labels[mmlu])


def test_a_list_of_files_is_pooled_in_order(shared_data):
    files = [shared_data / "routerdc" / f for f in ("mmlu_train.json", "gsm8k-train.json")]
    data = load_dataset(files)
    assert data.name == "mmlu_train+gsm8k-train"
    assert list(np.unique(data.sources, return_counts=True)[1]) == [1000, 2000]
    assert data.sources[0] == "mmlu_train"


def test_models_selects_and_orders_columns(shared_data):
    chosen = ["meta-llama/Meta-Llama-3-8B", "mistralai/Mistral-7B-v0.1"]
    data = load_dataset(shared_data / "routerdc" / "humaneval_test.json", models=chosen)
    assert data.model_names == tuple(chosen)
    with pytest.raises(ValueError, match=r"Unknown model\(s\) \['gpt-5'\]"):
        load_dataset(shared_data / "routerdc" / "humaneval_test.json", models=["gpt-5"])


def test_files_with_different_models_are_not_pooled(shared_data):
    files = [
        shared_data / "routerdc" / "humaneval_test.json",
        shared_data / "routerbench" / "mbpp_test.csv",
    ]
    with pytest.raises(ValueError, match="their models differ"):
        load_dataset(files)


def test_unknown_options_name_the_accepted_ones(shared_data):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['threshhold'\]"):
        load_dataset(shared_data / "routerdc" / "mmlu_test.json", threshhold=0.5)


def test_user_mistakes_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No data file"):
        load_dataset(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match="No data files in the folder"):
        load_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format '.txt'"):
        load_dataset(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="format must be"):
        load_dataset(tmp_path / "notes.txt", format="excel")
    with pytest.raises(ValueError, match="non-empty list"):
        load_dataset([])
    (tmp_path / "broken.json").write_text('[{"question": "q", "scores": {"a": 1}}, {"q')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON: .* line 1"):
        load_dataset(tmp_path / "broken.json")


def test_pooled_routerbench_merges_queries_split_across_files(shared_data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(shared_data / "routerbench")
    merged = [str(w.message) for w in caught if w.category is DuplicateQueriesWarning]
    assert any("routerbench: merged 6 row(s)" in m for m in merged)
    assert data.n_queries == 1032 + 444 + 299 + 128 - 6
    assert not np.isnan(data.labels).any()
