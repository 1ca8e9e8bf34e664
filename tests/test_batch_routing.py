"""Batch routing with the local engine: columns, order, ids, decisions and certificate."""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from batch_helpers import synthetic_artifact, synthetic_queries, write_parquet
from typer.testing import CliRunner

from racer.artifact import load_artifact
from racer.batch import RouteSettings, output_columns, route_files
from racer.batch.io import OrderedWriter, input_files, read_unit, work_units
from racer.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return synthetic_artifact(tmp_path_factory.mktemp("batch") / "artifact")


@pytest.fixture(scope="module")
def queries():
    return synthetic_queries(1200)


def _scores(table, names):
    return np.column_stack([table.column(f"score:{n}").to_numpy() for n in names])


def test_route_keeps_order_numbers_rows_and_serves_the_calibrated_sets(artifact, queries, tmp_path):
    source = write_parquet(tmp_path / "in.parquet", queries, row_group_size=500)
    settings = RouteSettings(batch_size=128, unit_rows=256)
    stats = route_files(artifact, [str(source)], str(tmp_path / "out.parquet"), settings=settings)
    table = pq.read_table(tmp_path / "out.parquet")
    loaded = load_artifact(artifact)
    names = loaded.model_names

    assert stats.n_rows == len(queries) == table.num_rows
    # 500-row groups cut into 256-row units: 2 + 2 + 1
    assert stats.n_units == 5
    assert table.column_names == output_columns(names)
    assert table.column("id").to_pylist() == [str(i) for i in range(len(queries))]
    scores = _scores(table, names)
    # Row i holds query i: its scores are the router's scores of that query.
    np.testing.assert_allclose(scores, loaded.predict_proba(queries), rtol=0, atol=1e-6)
    decision = loaded.racer.predict(scores, include_abstain=True)
    served = [[names[j] for j in np.flatnonzero(row)] for row in decision[:, 1:]]
    assert table.column("models").to_pylist() == served
    refused = ~decision[:, 1:].any(axis=1)
    assert table.column("refused").to_pylist() == refused.tolist()
    assert table.column("flagged").to_pylist() == (decision[:, 0] & ~refused).tolist()
    assert any(len(m) > 1 for m in served) and any(len(m) == 1 for m in served)


def test_every_row_carries_the_artifact_id_and_certificate(artifact, queries, tmp_path):
    source = write_parquet(tmp_path / "in.parquet", queries[:50])
    route_files(artifact, [str(source)], str(tmp_path / "out.parquet"))
    table = pq.read_table(tmp_path / "out.parquet")
    loaded = load_artifact(artifact)
    expected = {
        "artifact_id": loaded.metadata["metadata_sha256"],
        "alpha": 0.2,
        "delta": 0.1,
        "n_calibration": loaded.racer.n_calibration_,
        "bound": loaded.racer.bound_,
        "risk_bound": loaded.racer.risk_bound_,
        "abstention_mode": "flag",
    }
    for column, value in expected.items():
        assert set(table.column(column).to_pylist()) == {value}
    assert loaded.racer.risk_bound_ <= 0.2


@pytest.mark.parametrize("mode", ["off", "strict"])
def test_the_refused_column_follows_the_artifacts_mode(tmp_path, queries, mode):
    # free refusals on a fine tau grid, so that strict mode abstains on this synthetic data
    artifact = synthetic_artifact(
        tmp_path / mode, abstention=mode, refusal_cost=0.0, abstain_grid_size=20
    )
    source = write_parquet(tmp_path / "in.parquet", queries[:600])
    route_files(artifact, [str(source)], str(tmp_path / "out.parquet"))
    table = pq.read_table(tmp_path / "out.parquet")
    refused = np.array(table.column("refused").to_pylist())
    reasons = table.column("refusal_reason").to_pylist()
    models = table.column("models").to_pylist()
    assert set(table.column("abstention_mode").to_pylist()) == {mode}
    assert not any(table.column("flagged").to_pylist())  # flags exist in mode flag only
    if mode == "off":
        assert not refused.any() and set(reasons) == {None}
    else:  # a refused query calls no model and says why; every other calls at least one
        assert refused.any()
        assert all((len(m) == 0) == r for m, r in zip(models, refused, strict=True))
        assert all(
            (reason or "").startswith("the abstain score ") == r
            for reason, r in zip(reasons, refused, strict=True)
        )


def test_jsonl_ids_are_kept_and_folders_are_read_in_path_order(artifact, queries, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    halves = {"b.jsonl": queries[100:200], "a.jsonl": queries[:100]}
    for name, part in halves.items():
        with open(folder / name, "w", encoding="utf-8") as handle:
            for text in part:
                handle.write(json.dumps({"id": f"{name}:{queries.index(text)}", "query": text}))
                handle.write("\n")
    route_files(artifact, [str(folder)], str(tmp_path / "out.jsonl"))
    rows = [json.loads(line) for line in open(tmp_path / "out.jsonl", encoding="utf-8")]
    assert [row["id"] for row in rows] == (
        [f"a.jsonl:{i}" for i in range(100)] + [f"b.jsonl:{i}" for i in range(100, 200)]
    )
    reference = load_artifact(artifact).predict_proba(queries[:200])
    scores = np.array(
        [[row[f"score:{n}"] for n in load_artifact(artifact).model_names] for row in rows]
    )
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-6)


def test_units_cut_row_groups_and_a_folder_output_gets_ordered_parts(tmp_path):
    source = write_parquet(
        tmp_path / "in.parquet", [f"q{i}" for i in range(250)], row_group_size=100
    )
    files, kind = input_files([str(source)])
    units = work_units(files, kind, 64)
    assert [(u.row_group, u.start, u.stop) for u in units] == [
        (0, 0, 64), (0, 64, 100), (1, 0, 64), (1, 64, 100), (2, 0, 50)
    ]  # fmt: skip
    writer = OrderedWriter(str(tmp_path / "parts"), rows_per_part=100)
    for unit in units:
        writer.write(read_unit(unit, ["query"]))
    writer.close()
    parts = sorted((tmp_path / "parts").iterdir())
    assert [p.name for p in parts] == [f"part-0000{i}.parquet" for i in range(3)]
    tables = [pq.read_table(p) for p in parts]
    assert [t.num_rows for t in tables] == [100, 100, 50]
    assert sum((t.column("id").to_pylist() for t in tables), []) == [str(i) for i in range(250)]
    assert sum((t.column("query").to_pylist() for t in tables), []) == [f"q{i}" for i in range(250)]
    with pytest.raises(ValueError, match="is not empty"):
        OrderedWriter(str(tmp_path / "parts"))


def test_batches_start_at_fixed_rows_so_units_do_not_change_the_output(artifact, queries, tmp_path):
    source = write_parquet(tmp_path / "in.parquet", queries, row_group_size=1200)
    small = RouteSettings(batch_size=200, unit_rows=400)
    large = RouteSettings(batch_size=200, unit_rows=1200)
    route_files(artifact, [str(source)], str(tmp_path / "a.parquet"), settings=small)
    route_files(artifact, [str(source)], str(tmp_path / "b.parquet"), settings=large)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda a, d: ["--input", str(d / "nowhere.parquet"), "--output", "o.parquet"],
         "does not exist"),
        (lambda a, d: ["--input", str(d / "in.parquet")], "needs --output FILE"),
        (lambda a, d: ["--input", str(d / "in.parquet"), "--output", str(d / "o.parquet"),
                       "--query-column", "text"], "no query column 'text'"),
        (lambda a, d: ["--input", str(d / "in.parquet"), "--output", str(d / "o.parquet"),
                       "--engine", "spark"], "--engine takes one of"),
    ],
)  # fmt: skip
def test_route_mistakes_give_one_error_line(artifact, tmp_path, make_args, message):
    write_parquet(tmp_path / "in.parquet", ["What is 2 + 2?"])
    args = ["route", "--artifact", str(artifact), *make_args(artifact, tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_engine_ray_without_ray_says_how_to_install_it(artifact, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    write_parquet(tmp_path / "in.parquet", ["What is 2 + 2?"])
    args = ["route", "--artifact", str(artifact), "--input", str(tmp_path / "in.parquet")]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "o.parquet"), "--engine", "ray"])
    assert result.exit_code == 2
    assert 'pip install "racer-routing[ray]"' in " ".join(result.output.split())
    assert not (tmp_path / "o.parquet").exists()


def test_cli_route_parquet_and_plain_text_still_routes_line_by_line(artifact, queries, tmp_path):
    source = write_parquet(tmp_path / "in.parquet", queries[:40], ids=[f"q{i}" for i in range(40)])
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        app, ["route", "--artifact", str(artifact), "--input", str(source), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("id").to_pylist() == [f"q{i}" for i in range(40)]
    result = runner.invoke(
        app, ["route", "--artifact", str(artifact)], input="\n".join(queries[:3])
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["query"] for line in lines] == queries[:3]


def test_plain_text_routes_without_pyarrow_and_jsonl_says_how_to_add_it(
    artifact, queries, tmp_path, without_pyarrow
):
    text = "\n".join(queries[:3])
    result = runner.invoke(app, ["route", "--artifact", str(artifact)], input=text)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["query"] for line in lines] == queries[:3]
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"query": queries[0]}) + "\n")
    args = ["route", "--artifact", str(artifact), "--input", str(source)]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2
    assert 'needs pyarrow: pip install "racer-routing[parquet]"' in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists()
