"""The Ray engine (a local 2-CPU Ray cluster) gives exactly the local engine's output."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from batch_helpers import synthetic_artifact, synthetic_queries, write_parquet
from conftest import import_or_skip
from typer.testing import CliRunner

from racer.batch import RouteSettings, replay_data, route_files
from racer.batch.engines import replay
from racer.cli import app
from racer.evaluation.synthetic import make_synthetic_benchmark

ray = import_or_skip("ray", "ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module (2 CPUs), shut down at the end."""
    from racer.batch.engines import source_tree_on_path

    source_tree_on_path()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return synthetic_artifact(tmp_path_factory.mktemp("ray") / "artifact")


def test_ray_and_local_engines_write_identical_rows(ray_cluster, artifact, tmp_path):
    queries = synthetic_queries(3000, seed=3)
    source = write_parquet(tmp_path / "in.parquet", queries, row_group_size=1500)
    settings = RouteSettings(batch_size=250, unit_rows=500)
    local = route_files(artifact, [str(source)], str(tmp_path / "local.parquet"), settings=settings)
    distributed = route_files(
        artifact,
        [str(source)],
        str(tmp_path / "ray.parquet"),
        engine="ray",
        settings=settings,
        workers=2,
    )
    assert (local.n_rows, distributed.n_rows) == (3000, 3000)
    assert distributed.n_units == local.n_units == 6  # 3 units per 1500-row group
    expected = pq.read_table(tmp_path / "local.parquet")
    routed = pq.read_table(tmp_path / "ray.parquet")
    # every column, bit for bit, and already in the same (input) order
    assert routed.sort_by("id").equals(expected.sort_by("id"))
    assert routed.equals(expected)
    assert routed.column("id").to_pylist() == [str(i) for i in range(3000)]


def test_ray_route_command_reads_jsonl_files_and_keeps_their_ids(ray_cluster, artifact, tmp_path):
    queries = synthetic_queries(600, seed=4)
    for part, rows in enumerate((range(0, 300), range(300, 600))):
        with open(tmp_path / f"part{part}.jsonl", "w", encoding="utf-8") as handle:
            for i in rows:
                handle.write(json.dumps({"id": f"log-{i}", "query": queries[i]}) + "\n")
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.jsonl"
        args = ["route", "--artifact", str(artifact), "--output", str(out), "--engine", engine]
        inputs = [
            "--input",
            str(tmp_path / "part0.jsonl"),
            "--input",
            str(tmp_path / "part1.jsonl"),
        ]
        options = ["--batch-size", "128", "--workers", "1"]
        result = CliRunner().invoke(app, [*args, *inputs, *options])
        assert result.exit_code == 0, result.output
        outputs[engine] = out.read_text(encoding="utf-8")
    assert outputs["ray"] == outputs["local"]
    ids = [json.loads(line)["id"] for line in outputs["ray"].splitlines()]
    assert ids == [f"log-{i}" for i in range(600)]


def test_ray_replay_matches_the_local_replay(ray_cluster, artifact):
    logged = make_synthetic_benchmark(700, random_state=5)  # labels, dollar costs, answers
    data = replay_data(logged, list(logged.model_names))
    local = replay(artifact, data, batch_size=64, unit_rows=128)
    distributed = replay(artifact, data, engine="ray", batch_size=64, unit_rows=128, workers=2)
    assert distributed == local
    assert (local["n_queries"], local["aggregator"], local["cost_unit"]) == (700, "vote", "USD")
    # fresh queries like the calibration ones: the risk is near alpha, not far above it
    assert local["risk"] <= 0.2 + 3 * (0.2 * 0.8 / 700) ** 0.5


def test_two_workers_route_units_at_the_same_time(ray_cluster):
    import os
    import time

    import pyarrow as pa

    from racer.batch.engines import _ordered_ray_results

    class SlowUnit:  # defined here, so Ray ships it by value
        def __call__(self, batch: pa.Table) -> pa.Table:
            start = time.time()
            time.sleep(0.5)
            return pa.table({"pid": [os.getpid()], "start": [start], "end": [time.time()]})

    tables = list(_ordered_ray_results([{"i": i} for i in range(6)], SlowUnit, {}, 2, None))
    runs = pa.concat_tables(tables).to_pylist()
    assert len({run["pid"] for run in runs}) == 2
    overlapping = [
        (a, b)
        for a in runs
        for b in runs
        if a["pid"] < b["pid"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, runs
