"""Batch routing throughput: the local engine and Ray Data on 1 and 2 workers, in one run.

Trains a kNN router on SYNTHETIC queries (``racer.evaluation.synthetic``), calibrates it,
writes ``--n`` other synthetic queries to Parquet, then routes them with ``racer route``'s
engines: local (this process, one core), and Ray with 1 and 2 actors on a local
2-CPU cluster started once. It prints queries per second (wall time, including actor
start-up and the ordered write), the speed-up of 2 workers over 1 (issue 13's target:
>= 1.6x), and checks that the three outputs are identical, row for row.

    PYTHONPATH=src python benchmarks/batch_routing.py --n 1000000
    PYTHONPATH=src python benchmarks/batch_routing.py --n 100000 --json results.json

Run it on an otherwise idle machine: other processes on the same cores change the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from racer.artifact import save_artifact
from racer.batch import RouteSettings, route_files
from racer.batch.engines import import_ray, source_tree_on_path
from racer.data.split import train_test_split
from racer.estimator import RACER
from racer.evaluation.synthetic import make_synthetic_benchmark
from racer.routers import make_router

TARGET_SPEEDUP = 1.6


def _artifact(folder: Path) -> Path:
    data = make_synthetic_benchmark(4000, random_state=0)
    train, calibration = train_test_split(data, 0.5, random_state=0)
    names = list(train.model_names)
    router = make_router("knn").fit(list(train.queries), train.labels, model_names=names)
    racer = RACER(0.2, 0.1).fit(
        router.predict_proba(list(calibration.queries)), calibration.labels, model_names=names
    )
    return save_artifact(folder / "artifact", router, racer, calibration=calibration)


def _queries(path: Path, n: int, row_group_size: int) -> Path:
    queries = make_synthetic_benchmark(n, random_state=7).queries
    pq.write_table(pa.table({"query": list(queries)}), path, row_group_size=row_group_size)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="Queries to route per run.")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--unit-rows", type=int, default=16384)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = parser.parse_args()
    ray = import_ray()
    settings = RouteSettings(batch_size=args.batch_size, unit_rows=args.unit_rows)
    results = []
    with tempfile.TemporaryDirectory(prefix="racer-batch-bench-") as folder:
        root = Path(folder)
        start = time.perf_counter()
        artifact = _artifact(root)
        source = _queries(root / "queries.parquet", args.n, 4 * args.unit_rows)
        print(f"Set-up (artifact, {args.n} synthetic queries): {time.perf_counter() - start:.1f} s")
        runs = [("local", None), ("ray", 1), ("ray", 2)]
        source_tree_on_path()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for engine, workers in runs:
                out = root / f"{engine}-{workers}.parquet"
                stats = route_files(
                    artifact, [str(source)], str(out), engine=engine, settings=settings,
                    workers=workers,
                )  # fmt: skip
                rate = stats.n_rows / stats.seconds
                results.append(
                    {"engine": engine, "workers": workers or 1, "seconds": stats.seconds,
                     "queries_per_second": rate, "units": stats.n_units}
                )  # fmt: skip
                print(
                    f"{engine:>5} x{workers or 1}: {stats.seconds:7.1f} s  {rate:9,.0f} queries/s"
                )
        finally:
            ray.shutdown()
        tables = [pq.read_table(root / f"{e}-{w}.parquet") for e, w in runs]
        identical = all(t.sort_by("id").equals(tables[0].sort_by("id")) for t in tables[1:])
    speedup = results[2]["queries_per_second"] / results[1]["queries_per_second"]
    verdict = "PASS" if speedup >= TARGET_SPEEDUP else "FAIL"
    print(f"Ray 2 workers / 1 worker: {speedup:.2f}x (target >= {TARGET_SPEEDUP}x: {verdict})")
    print(f"Outputs of the three runs identical (every column, sorted by id): {identical}")
    print(f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()} at the end")
    if args.json is not None:
        document = {
            "n": args.n,
            "runs": results,
            "speedup_2_over_1": speedup,
            "identical": identical,
            "cpus": os.cpu_count(),
            "load_average_end": os.getloadavg(),
            "python": platform.python_version(),
            "ray": ray.__version__,
        }
        args.json.write_text(json.dumps(document, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
