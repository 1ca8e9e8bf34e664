"""Shared set-up of the batch tests: a small fitted artifact and query files."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from racer.artifact import save_artifact
from racer.data.split import train_test_split
from racer.estimator import RACER
from racer.evaluation.synthetic import make_synthetic_benchmark
from racer.routers import make_router


@functools.cache
def _router_and_calibration() -> tuple:
    data = make_synthetic_benchmark(1600, random_state=0)
    train, calibration = train_test_split(data, 0.5, random_state=0)
    names = list(train.model_names)
    router = make_router("knn", k=20, shrink=5.0)
    router.fit(list(train.queries), train.labels, model_names=names)
    return router, calibration, router.predict_proba(list(calibration.queries))


def synthetic_artifact(
    directory: Path, *, abstention: bool | str = True, **racer_options: Any
) -> Path:
    """A kNN router on synthetic queries, calibrated at alpha = 0.2, saved to ``directory``."""
    router, calibration, scores = _router_and_calibration()
    racer = RACER(0.2, 0.1, abstention=abstention, **racer_options).fit(
        scores, calibration.labels, model_names=list(calibration.model_names)
    )
    return save_artifact(directory, router, racer, calibration=calibration)


def synthetic_queries(n: int, seed: int = 1) -> list[str]:
    """``n`` synthetic query texts (not the artifact's training or calibration queries)."""
    return [str(q) for q in make_synthetic_benchmark(n, random_state=seed).queries]


def write_parquet(
    path: Path, queries: list[str], *, ids: list[str] | None = None, row_group_size: int = 1000
) -> Path:
    """Queries (and ids) as a Parquet file with row groups of ``row_group_size`` rows."""
    columns = {"query": queries} if ids is None else {"id": ids, "query": queries}
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path
