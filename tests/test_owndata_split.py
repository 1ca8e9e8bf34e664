"""`racer split`: train, calibration and test files of the input's format, seeded,
stratified, and never one query in two splits."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from racer.cli import app
from racer.owndata.split import query_groups, split_file, split_queries


def test_records_sharing_an_id_or_a_text_are_one_query():
    records = [
        {"query_id": "a", "query": "What is 2+2?", "model": "m1"},
        {"query_id": "a", "query": "What is 2+2?", "model": "m2"},
        {"query_id": "b", "query": "what is  2+2?", "model": "m1"},  # same text, other id
        {"query_id": "c", "query": "Other", "model": "m1"},
        {"sample_id": "c", "prompt": "Other again"},  # same id as c, other text field
    ]
    assert query_groups(records).tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="record 1 has no query id"):
        query_groups([{"model": "m1"}])


def test_each_stratum_is_split_in_the_given_proportions_and_the_draw_is_seeded():
    strata = ["x"] * 100 + ["y"] * 10
    split = split_queries(strata, (0.6, 0.2, 0.2), seed=3)
    assert np.bincount(split[:100]).tolist() == [60, 20, 20]
    assert np.bincount(split[100:]).tolist() == [6, 2, 2]
    assert split.tolist() == split_queries(strata, (0.6, 0.2, 0.2), seed=3).tolist()
    assert split.tolist() != split_queries(strata, (0.6, 0.2, 0.2), seed=4).tolist()


def test_long_jsonl_keeps_every_model_row_of_a_query_together(tmp_path):
    rows = [
        {"query_id": f"q{i}", "query": f"question {i}", "model": m, "label": i % 2}
        for i in range(40)
        for m in ("m1", "m2", "m3")
    ]
    source = tmp_path / "graded.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = split_file(source, tmp_path / "out", fractions=(0.5, 0.25, 0.25), seed=1)
    assert [(w.name, w.n_queries, w.n_records) for w in written] == [
        ("train", 20, 60), ("calibration", 10, 30), ("test", 10, 30)
    ]  # fmt: skip
    seen = [
        {json.loads(line)["query_id"] for line in w.path.read_text().splitlines()}
        for w in written
    ]
    assert set.union(*seen) == {f"q{i}" for i in range(40)}
    assert all(a.isdisjoint(b) for i, a in enumerate(seen) for b in seen[i + 1 :])


def test_routerbench_csv_keeps_its_header_and_loads(shared_data, tmp_path):
    from racer.data.load import load_dataset

    source = shared_data / "routerbench" / "arc_challenge_test.csv"
    written = split_file(source, tmp_path / "out", group_by="eval_name")
    with source.open(newline="") as handle:
        header = next(csv.reader(handle))
    sizes = []
    for part in written:
        with part.path.open(newline="") as handle:
            assert next(csv.reader(handle)) == header
        with pytest.warns(UserWarning):  # the benchmark's missing cells
            sizes.append(load_dataset(part.path).n_queries)
    assert sizes == [w.n_queries for w in written] and sum(sizes) == 444


def test_split_command_refuses_existing_files_and_bad_fractions(tmp_path):
    source = tmp_path / "d.jsonl"
    source.write_text("".join(json.dumps({"id": i, "query": f"q{i}"}) + "\n" for i in range(9)))
    out = tmp_path / "out"
    args = ["split", "--data", str(source), "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "calibration: 2 queries (2 records)" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    bad = CliRunner().invoke(app, [*args, "--overwrite", "--fractions", "0.5,0.5"])
    assert bad.exit_code == 2 and "3 positive shares summing to 1" in bad.output
