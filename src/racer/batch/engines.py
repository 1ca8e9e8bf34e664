"""The engines that run batch routing and replay: this process, or a Ray Data pipeline.

Both engines route the same work units (:mod:`racer.batch.io`) in the same batches and
hand the results to the caller in input order, so their outputs are identical. The Ray
engine ships the artifact's files once through the object store; each actor loads
(and verifies) it once, then routes one work unit per call. pyarrow is imported where
tables are built, so that this module imports without it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from racer.artifact import load_artifact
from racer.batch.io import (
    OrderedWriter,
    WorkUnit,
    input_files,
    read_unit,
    require_pyarrow,
    work_units,
)
from racer.batch.replay import ReplayData, replay_rows, replay_summary
from racer.batch.routing import BatchRouter, artifact_bundle, load_bundle
from racer.evaluation.metrics import OUTCOMES

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ENGINES",
    "RAY_INSTALL_HINT",
    "RouteSettings",
    "RouteStats",
    "import_ray",
    "replay",
    "route_files",
    "route_unit",
    "source_tree_on_path",
]

ENGINES = ("local", "ray")
RAY_INSTALL_HINT = 'pip install "racer-routing[ray]" (or pip install "ray[data]>=2.9")'


@dataclass(frozen=True)
class RouteSettings:
    """How input rows are read and batched.

    Parameters
    ----------
    query_column : str, default="query"
        The column with the query text.
    id_column : str, default="id"
        The column with the query id (optional in the input; see
        :mod:`racer.batch.routing`).
    batch_size : int, default=2048
        Queries embedded and scored at once.
    unit_rows : int, default=16384
        Rows per work unit (the Ray engine's unit of parallel work); a multiple of
        ``batch_size`` keeps every batch full.
    """

    query_column: str = "query"
    id_column: str = "id"
    batch_size: int = 2048
    unit_rows: int = 16384


@dataclass(frozen=True)
class RouteStats:
    """What a run routed: rows, work units, the engine, workers and wall time (seconds).

    ``workers`` is None for Ray with one actor per cluster CPU.
    """

    n_rows: int
    n_units: int
    engine: str
    workers: int | None
    seconds: float


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(f"--engine ray needs Ray Data: {RAY_INSTALL_HINT}.") from None
    return ray


def route_unit(
    router: BatchRouter,
    unit: WorkUnit,
    settings: RouteSettings,
    cache: dict[str, Any] | None = None,
) -> pa.Table:
    """Read and route one work unit (batches start at the unit's first row)."""
    table = read_unit(unit, [settings.id_column, settings.query_column], cache)
    if settings.query_column not in table.column_names:
        raise ValueError(
            f"The input {unit.uri!r} has no query column {settings.query_column!r}; name the "
            "text column with --query-column."
        )
    queries = table.column(settings.query_column).to_pylist()
    missing = [i for i, q in enumerate(queries) if not isinstance(q, str)]
    if missing:
        raise ValueError(
            f"The input {unit.uri!r} has {len(missing)} rows without a query text in column "
            f"{settings.query_column!r} (first at row {unit.start + missing[0]} of its block)."
        )
    ids = None
    if settings.id_column in table.column_names:
        ids = table.column(settings.id_column).to_pylist()
    return router.route(queries, ids)


def source_tree_on_path() -> None:
    """Let local Ray workers import racer when it runs from a source tree (PYTHONPATH=src)."""
    import racer

    root = str(Path(racer.__file__).resolve().parent.parent)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p]])


def _start_ray(address: str | None) -> tuple[Any, bool]:
    """Ray, connected to ``address`` (or a new local cluster); True when started here."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    source_tree_on_path()
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray, True


def _ordered_ray_results(
    items: list[dict[str, Any]],
    actor_class: type,
    constructor: dict[str, Any],
    workers: int | None,
    address: str | None,
) -> Iterator[pa.Table]:
    """Run ``actor_class`` over ``items`` (one per call) on Ray; yield its tables in order."""
    if not items:
        return
    ray, started = _start_ray(address)
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    try:
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        routed = dataset.map_batches(
            actor_class,
            fn_constructor_kwargs=constructor,
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        yield from routed.iter_batches(batch_size=None, batch_format="pyarrow")
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if started:
            ray.shutdown()


def _unit_item(unit: WorkUnit) -> dict[str, Any]:
    return {
        "uri": unit.uri,
        "format": unit.format,
        "row_group": -1 if unit.row_group is None else unit.row_group,
        "start": unit.start,
        "stop": -1 if unit.stop is None else unit.stop,
    }


def _item_unit(item: dict[str, Any]) -> WorkUnit:
    return WorkUnit(
        item["uri"],
        item["format"],
        None if item["row_group"] < 0 else int(item["row_group"]),
        int(item["start"]),
        None if item["stop"] < 0 else int(item["stop"]),
    )


class _RouteActor:
    """A Ray actor: loads the artifact once, then routes one work unit per call."""

    def __init__(self, bundle: dict[str, str], settings: dict[str, Any]) -> None:
        self.settings = RouteSettings(**settings)
        self.router = BatchRouter(load_bundle(bundle), self.settings.batch_size)
        self.cache: dict[str, Any] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        tables = [
            route_unit(self.router, _item_unit(item), self.settings, self.cache)
            for item in batch.to_pylist()
        ]
        return pa.concat_tables(tables)


def route_files(
    artifact: str | Path,
    inputs: Sequence[str],
    output: str,
    *,
    engine: str = "local",
    settings: RouteSettings | None = None,
    workers: int | None = None,
    address: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> RouteStats:
    """Route Parquet/JSONL files with an artifact and write the decisions.

    Parameters
    ----------
    artifact : str or pathlib.Path
        The artifact folder (``racer calibrate``).
    inputs : sequence of str
        Files, folders or URIs (see :func:`racer.batch.io.input_files`).
    output : str
        A ``.parquet`` or ``.jsonl`` file, or a folder of Parquet parts.
    engine : {"local", "ray"}
        This process, or a Ray Data pipeline with ``workers`` actors.
    settings : RouteSettings, optional
        Columns and batching.
    workers : int, optional
        Ray actors (each loads the artifact once); all the cluster's CPUs by default.
    address : str, optional
        The Ray cluster (``"auto"``: the running one); a local cluster when omitted.
    progress : callable, optional
        Called with the number of rows written so far.

    Returns
    -------
    RouteStats

    Examples
    --------
    >>> route_files("artifact", ["logs/"], "routed.parquet", engine="ray")  # doctest: +SKIP
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}; got {engine!r}.")
    require_pyarrow()
    settings = settings or RouteSettings()
    files, file_format = input_files(inputs)
    units = work_units(files, file_format, settings.unit_rows)
    start = time.perf_counter()
    if engine == "ray":
        bundle = artifact_bundle(artifact)
        load_bundle(bundle)  # refuse a damaged artifact here, not in every actor
        tables: Iterator[pa.Table] = _ordered_ray_results(
            [_unit_item(u) for u in units],
            _RouteActor,
            {"bundle": bundle, "settings": settings.__dict__},
            workers,
            address,
        )
    else:
        router = BatchRouter(load_artifact(artifact), settings.batch_size)
        cache: dict[str, Any] = {}
        tables = (route_unit(router, unit, settings, cache) for unit in units)
    writer = OrderedWriter(output)
    try:
        for table in tables:
            writer.write(table)
            if progress is not None:
                progress(writer.n_rows)
    finally:
        writer.close()
    used = 1 if engine == "local" else workers
    return RouteStats(writer.n_rows, len(units), engine, used, time.perf_counter() - start)


class _ReplayActor:
    """A Ray actor: loads the artifact once, then replays one row range per call."""

    def __init__(self, bundle: dict[str, str], data: Any, batch_size: int) -> None:
        self.router = BatchRouter(load_bundle(bundle), batch_size)
        self.data = data

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        tables = [
            pa.table(replay_rows(self.router, self.data, item["start"], item["stop"]))
            for item in batch.to_pylist()
        ]
        return pa.concat_tables(tables)


def replay(
    artifact: str | Path,
    data: ReplayData,
    *,
    engine: str = "local",
    batch_size: int = 2048,
    unit_rows: int = 16384,
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """The would-have-been risk, accuracy and cost of the artifact's policy on ``data``.

    Parameters
    ----------
    artifact : str or pathlib.Path
        The artifact folder.
    data : ReplayData
        From :func:`racer.batch.replay.replay_data`.
    engine, batch_size, unit_rows, workers, address
        As in :func:`route_files`; units are ``unit_rows`` consecutive pool queries.

    Returns
    -------
    dict
        See :func:`racer.batch.replay.replay_summary`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}; got {engine!r}.")
    n = len(data.queries)
    ranges = [(s, min(s + unit_rows, n)) for s in range(0, n, unit_rows)]
    if engine == "ray":
        bundle = artifact_bundle(artifact)
        router = BatchRouter(load_bundle(bundle), batch_size)
        tables = _ordered_ray_results(
            [{"start": s, "stop": e} for s, e in ranges],
            _ReplayActor,
            {"bundle": bundle, "data": data, "batch_size": batch_size},
            workers,
            address,
        )
        parts = [{name: t.column(name).to_numpy() for name in OUTCOMES} for t in tables]
    else:
        router = BatchRouter(load_artifact(artifact), batch_size)
        parts = [replay_rows(router, data, s, e) for s, e in ranges]
    rows = {name: np.concatenate([p[name] for p in parts]) for name in OUTCOMES}
    return replay_summary(rows, data, router)
