"""Generic long and wide tables in CSV, JSONL, JSON records and Parquet."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from racer.data import MissingLabelsWarning, RoutingDataset, load_table, merge_duplicate_ids
from racer.data.generic import read_table

LONG_CSV = """query,model,label,cost,response
What is 2+2?,small,1,0.001,4
What is 2+2?,large,1,0.01,Four
Capital of France?,small,0,0.001,Lyon
Capital of France?,large,1,0.01,Paris
"""

WIDE_CSV = """query,small,large,small|cost,large|cost,small|response,large|response
What is 2+2?,1,1,0.001,0.01,4,Four
Capital of France?,0,1,0.001,0.01,Lyon,Paris
"""


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def _assert_the_example(data: RoutingDataset) -> None:
    assert data.model_names == ("small", "large")
    np.testing.assert_array_equal(data.labels, [[1, 1], [0, 1]])
    np.testing.assert_allclose(data.costs, [[0.001, 0.01], [0.001, 0.01]])
    assert data.responses[1].tolist() == ["Lyon", "Paris"]
    assert list(data.queries) == ["What is 2+2?", "Capital of France?"]
    assert data.quality is None


@pytest.mark.parametrize("content", [LONG_CSV, WIDE_CSV], ids=["long", "wide"])
def test_long_and_wide_csv_give_the_same_dataset(tmp_path, content):
    data = load_table(_write(tmp_path, "example.csv", content))
    _assert_the_example(data)
    assert list(data.query_ids) == ["example:0", "example:1"]
    assert set(data.sources) == {"example"}


def test_jsonl_long_form(tmp_path):
    lines = [
        {"query": q, "model": m, "label": y, "cost": c, "response": r}
        for q, m, y, c, r in [
            ("What is 2+2?", "small", 1, 0.001, "4"),
            ("What is 2+2?", "large", True, 0.01, "Four"),
            ("Capital of France?", "small", 0, 0.001, "Lyon"),
            ("Capital of France?", "large", 1.0, 0.01, "Paris"),
        ]
    ]
    path = _write(tmp_path, "example.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    _assert_the_example(load_table(path))


def test_parquet_wide_form(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    columns, rows = read_table(_write(tmp_path, "example.csv", WIDE_CSV))
    table = pyarrow.Table.from_pylist(rows)
    parquet.write_table(table, tmp_path / "example.parquet")
    _assert_the_example(load_table(tmp_path / "example.parquet"))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = _write(tmp_path, "example.parquet", "not really parquet")
    with pytest.raises(ImportError, match=r"pip install racer-routing\[parquet\]"):
        load_table(path)


def test_graded_labels_go_to_quality_with_a_threshold(tmp_path):
    path = _write(tmp_path, "graded.csv", "query,a,b\nq1,0.2,0.9\nq2,0.7,1\n")
    data = load_table(path, threshold=0.7)
    np.testing.assert_allclose(data.quality, [[0.2, 0.9], [0.7, 1.0]])
    np.testing.assert_array_equal(data.labels, [[0, 1], [1, 1]])
    np.testing.assert_array_equal(load_table(path, threshold=0.95).labels, [[0, 0], [0, 1]])


def test_ids_and_sources_columns_are_used(tmp_path):
    content = "query_id,source,query,model,label\nx7,math,q1,a,1\nx7,math,q1,b,0\ny2,code,q2,a,0\n"
    with pytest.warns(MissingLabelsWarning, match=r"1 of 4 .*b: 1"):
        data = load_table(_write(tmp_path, "ids.csv", content))
    assert list(data.query_ids) == ["x7", "y2"]
    assert list(data.sources) == ["math", "code"]
    assert np.isnan(data.labels[1, 1])  # y2 was never run on b: unknown, not wrong


def test_empty_wide_cells_are_missing_and_can_drop_queries(tmp_path):
    path = _write(tmp_path, "holes.csv", "query,a,b\nq1,1,\nq2,0,1\nq3,,\n")
    with pytest.warns(MissingLabelsWarning, match="3 of 6 .*in 2 of 3 queries; dropped"):
        data = load_table(path, missing="drop_queries")
    assert list(data.queries) == ["q2"]


def test_duplicated_query_model_pairs_are_an_error(tmp_path):
    content = "query,model,label\nq1,a,1\nq1,b,0\nq1,a,0\n"
    with pytest.raises(ValueError, match=r"1 duplicated \(query, model\).*rows 1 and 3"):
        load_table(_write(tmp_path, "dup.csv", content))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", "query,a\nq1,yes\n", r"row 1, column 'a': expected a number"),
        ("range.csv", "query,a\nq1,3\n", r"must lie in \[0, 1\]"),
        ("empty.csv", "query,a\n", "no data rows"),
        ("nomodel.csv", "query,query_id\nq1,1\n", "no model columns"),
        ("noquery.csv", "question,model,label\nq,a,1\n", r"missing column\(s\) \['query'\]"),
        ("extra.csv", "query,a\nq1,1,0\n", "more fields than the header"),
        ("bad.jsonl", '{"query": "q", "a": 1}\n{"query": \n', "line 2: malformed JSON"),
        ("list.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("table.xlsx", "x", "unknown table format '.xlsx'"),
    ],
)
def test_user_mistakes_raise_clear_errors(tmp_path, name, content, message):
    with pytest.raises(ValueError, match=message):
        load_table(_write(tmp_path, name, content), layout="auto")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No data file"):
        load_table(tmp_path / "absent.csv")


def test_pandas_index_column_is_not_a_model(tmp_path):
    data = load_table(_write(tmp_path, "pd.csv", ",query,a\n0,q1,1\n1,q2,0\n"))
    assert data.model_names == ("a",)


def _two_rows(ids: list[str], labels: list[list[float]]) -> RoutingDataset:
    return RoutingDataset(
        queries=np.array(["q"] * len(ids), dtype=object),
        model_names=("a", "b"),
        labels=np.array(labels, dtype=float),
        costs=np.array([[1.0, 2.0], [3.0, 4.0]]),
        query_ids=np.array(ids),
    )


def test_merge_takes_each_cell_from_the_row_that_knows_it():
    merged, n_merged = merge_duplicate_ids(_two_rows(["x", "x"], [[1, np.nan], [np.nan, 0]]))
    assert n_merged == 1
    np.testing.assert_array_equal(merged.labels, [[1, 0]])
    np.testing.assert_array_equal(merged.costs, [[1.0, 4.0]])


def test_merge_refuses_rows_that_disagree():
    with pytest.raises(ValueError, match=r"'x' appears twice with different labels for \['a'\]"):
        merge_duplicate_ids(_two_rows(["x", "x"], [[1, 0], [0, 0]]))


def test_merge_leaves_unique_ids_alone():
    data = _two_rows(["x", "y"], [[1, 0], [0, 0]])
    assert merge_duplicate_ids(data) == (data, 0)


def test_logprobs_cells_load_from_csv_json_text_and_jsonl_lists(tmp_path):
    """``<model>|logprobs`` (wide CSV: JSON text) and ``logprobs`` (long JSONL: lists) load
    into RoutingDataset.logprobs; empty cells are None; a malformed cell names its place."""
    wide = WIDE_CSV.replace("large|response\n", 'large|response,small|logprobs\n')
    wide = wide.replace("Four\n", 'Four,"[-0.5, -0.25]"\n').replace("Paris\n", "Paris,\n")
    data = load_table(_write(tmp_path, "wide.csv", wide))
    _assert_the_example(data)
    assert data.logprobs[0, 0].tolist() == [-0.5, -0.25]
    assert data.logprobs[1, 0] is None and data.logprobs[0, 1] is None
    lines = [
        {"query": "q1", "model": "small", "label": 1, "logprobs": [-0.125, -1.0]},
        {"query": "q1", "model": "large", "label": 1, "logprobs": None},
        {"query": "q2", "model": "large", "label": 0, "logprobs": [-3.0]},
        {"query": "q2", "model": "small", "label": 0},
    ]
    path = _write(tmp_path, "long.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    data = load_table(path)
    assert data.logprobs[0, 0].tolist() == [-0.125, -1.0] and data.logprobs[1, 1].tolist() == [-3.0]
    assert data.logprobs[0, 1] is None and data.logprobs[1, 0] is None
    broken = _write(tmp_path, "broken.csv", wide.replace('"[-0.5, -0.25]"', "high"))
    with pytest.raises(ValueError, match=r"row 1, column 'small\|logprobs'.*JSON list"):
        load_table(broken)
