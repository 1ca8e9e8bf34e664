"""Routing one batch of queries with an artifact, engine-independent.

Output columns, the same for every engine (see ``docs/ray.md``):

``id`` (string)
    The input's id column cast to string, or the 0-based row number over the whole input
    (files in the order given, folders sorted by path, rows in file order).
``models`` (list of string)
    The models invoked, in the artifact's column order; empty when nothing is invoked.
``refused`` (bool)
    No model is called (:mod:`racer.refusal`): mode ``flag``, the calibrated set is empty;
    mode ``strict``, the abstain score reached tau; mode ``off``, always false.
``flagged`` (bool)
    An answer is served with the abstain flag raised (mode ``flag`` only).
``refusal_reason`` (string or null)
    Why a refused query calls no model: the calibrated level and the best model's score.
``score:<model>`` (float64), one per model
    The base router's score of each model, in the artifact's column order.
``artifact_id`` (string)
    The sha256 of the artifact's metadata (it changes with any re-calibration).
``alpha``, ``delta`` (float64), ``n_calibration`` (int64), ``bound`` (string),
``risk_bound`` (float64), ``abstention_mode`` (string)
    The certificate: with probability at least ``1 - delta`` over the ``n_calibration``
    calibration queries, the served misrouting risk of the mode is at most ``alpha``
    (``risk_bound`` is the ``bound`` upper bound that certified it).

Rows keep the input order; a batch is embedded and scored as given, on one BLAS thread
(matrix products round differently with other thread counts), so equal batches give
bit-identical rows whatever process runs them. Deciding needs no pyarrow; building the
output table imports it.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from threadpoolctl import threadpool_limits

from racer.artifact import METADATA_FILE, RouterArtifact, load_artifact
from racer.route_record import (
    Decided,
    abstention_mode,
    certificate,
    decide,
    decision_fields,
    output_columns,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BatchRouter",
    "abstention_mode",
    "artifact_bundle",
    "certificate",
    "load_bundle",
    "output_columns",
]


def artifact_bundle(directory: str | Path) -> dict[str, str]:
    """The artifact's files as base64 text, to ship to workers that cannot see the folder."""
    directory = Path(directory)
    if not (directory / METADATA_FILE).is_file():
        raise FileNotFoundError(f"No artifact at {directory}: {METADATA_FILE} is missing.")
    return {
        path.name: base64.b64encode(path.read_bytes()).decode("ascii")
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def load_bundle(bundle: dict[str, str]) -> RouterArtifact:
    """Load an :func:`artifact_bundle` (verified by :func:`racer.artifact.load_artifact`)."""
    with tempfile.TemporaryDirectory(prefix="racer-artifact-") as folder:
        for name, data in bundle.items():
            (Path(folder) / name).write_bytes(base64.b64decode(data))
        return load_artifact(folder)


class BatchRouter:
    """Routes batches of queries with one loaded artifact (loaded once, reused per batch).

    Parameters
    ----------
    artifact : RouterArtifact
        The loaded artifact.
    batch_size : int, default=2048
        Queries embedded and scored at once; batches start every ``batch_size`` rows of
        the rows given to :meth:`route`.
    """

    def __init__(self, artifact: RouterArtifact, batch_size: int = 2048) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        self.artifact = artifact
        self.batch_size = batch_size
        self.model_names = artifact.model_names
        self.certificate = certificate(artifact)

    def decide(self, queries: Sequence[str], groups: Sequence[str] | None = None) -> Decided:
        """Scores (n, M), served decision (n, M + 1), abstain scores and groups of a batch.

        Computed on one BLAS thread, so that the same batch gives the same bits in any
        process (parallelism comes from running several routers). ``groups``: each
        query's group, for an artifact calibrated per group
        (:meth:`racer.artifact.RouterArtifact.groups_of`).
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return decide(self.artifact, queries, groups)

    def _batch_table(self, queries: list[str]) -> pa.Table:
        import pyarrow as pa

        decided = self.decide(queries)
        fields = decision_fields(self.artifact, *decided)
        scores = decided.scores
        types = {"models": pa.list_(pa.string()), "refused": pa.bool_(), "flagged": pa.bool_()}
        columns: dict[str, Any] = {
            name: pa.array(values, types.get(name, pa.string()))
            for name, values in fields.items()
            if not name.startswith("score:")
        }
        for j, name in enumerate(self.model_names):
            columns[f"score:{name}"] = pa.array(scores[:, j], pa.float64())
        n = len(queries)
        for key, value in self.certificate.items():
            columns[key] = pa.array([value] * n)
        return pa.table(columns)

    def route(self, queries: Sequence[str], ids: Sequence[Any] | None = None) -> pa.Table:
        """The output rows of ``queries`` (columns of :func:`output_columns`).

        ``ids`` (one per query, any type, cast to str) become the ``id`` column; without
        them the table has no ``id`` column and the writer numbers the rows.
        """
        import pyarrow as pa

        queries = list(queries)
        parts = [
            self._batch_table(queries[start : start + self.batch_size])
            for start in range(0, len(queries), self.batch_size)
        ]
        table = pa.concat_tables(parts) if parts else _empty(self.model_names)
        if ids is not None:
            table = table.add_column(0, "id", pa.array([str(i) for i in ids], pa.string()))
        return table


def _empty(model_names: Sequence[str]) -> pa.Table:
    import pyarrow as pa

    schema = pa.schema(
        [
            ("models", pa.list_(pa.string())),
            ("refused", pa.bool_()),
            ("flagged", pa.bool_()),
            ("refusal_reason", pa.string()),
            *((f"score:{name}", pa.float64()) for name in model_names),
            ("artifact_id", pa.string()),
            ("alpha", pa.float64()),
            ("delta", pa.float64()),
            ("n_calibration", pa.int64()),
            ("bound", pa.string()),
            ("risk_bound", pa.float64()),
            ("abstention_mode", pa.string()),
        ]
    )
    return schema.empty_table()
