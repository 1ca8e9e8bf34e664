"""The in-memory routing dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class RoutingDataset:
    """Per-query, per-model outcomes of a pool of candidate LLMs.

    Parameters
    ----------
    queries : numpy.ndarray of str, shape (n,)
        The query texts (the prompt each model answered).
    model_names : tuple of str, length M
        The candidate models, in column order.
    labels : numpy.ndarray of float, shape (n, M)
        1.0 when the model's answer is acceptable, 0.0 when it is not, NaN when
        unknown (the model was not run on that query).
    quality : numpy.ndarray of float, shape (n, M), optional
        A graded quality in [0, 1] (a pass fraction, a judge score) when the source
        has one; ``labels`` is then the thresholded quality. NaN = unknown.
    costs : numpy.ndarray of float, shape (n, M), optional
        Dollars spent on each (query, model) call. NaN = unknown.
    responses : numpy.ndarray of object, shape (n, M), optional
        The recorded response texts (None where unknown).
    logprobs : numpy.ndarray of object, shape (n, M), optional
        Each recorded response's token log-probabilities (a 1-D float array) or None
        where the backend returned none (:mod:`racer.signals`).
    query_ids : numpy.ndarray of str, shape (n,)
        A stable identifier of each query; splits never put one id on both sides.
    sources : numpy.ndarray of str, shape (n,)
        Where each query comes from (a task or file name), for stratified splits.
    name : str
        A short name for reports.
    """

    queries: np.ndarray
    model_names: tuple[str, ...]
    labels: np.ndarray
    quality: np.ndarray | None = None
    costs: np.ndarray | None = None
    responses: np.ndarray | None = None
    logprobs: np.ndarray | None = None
    query_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    sources: np.ndarray = field(default=None)  # type: ignore[assignment]
    name: str = "dataset"

    def __post_init__(self) -> None:
        queries = np.asarray(self.queries, dtype=object)
        labels = np.asarray(self.labels, dtype=float)
        n = queries.shape[0]
        names = tuple(str(m) for m in self.model_names)
        if labels.shape != (n, len(names)):
            raise ValueError(
                f"labels must have shape (n_queries, n_models) = ({n}, {len(names)}), "
                f"got {labels.shape}."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"model_names must be unique, got {list(names)}.")
        known = labels[~np.isnan(labels)]
        if known.size and not np.isin(known, (0.0, 1.0)).all():
            raise ValueError(
                "labels must be 0, 1 or NaN (unknown); put graded values in `quality`."
            )
        object.__setattr__(self, "queries", queries)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "model_names", names)
        for attr in ("quality", "costs"):
            value = getattr(self, attr)
            if value is not None:
                value = np.asarray(value, dtype=float)
                if value.shape != labels.shape:
                    raise ValueError(f"{attr} must have shape {labels.shape}, got {value.shape}.")
                object.__setattr__(self, attr, value)
        if self.responses is not None:
            responses = np.asarray(self.responses, dtype=object)
            if responses.shape != labels.shape:
                raise ValueError(
                    f"responses must have shape {labels.shape}, got {responses.shape}."
                )
            object.__setattr__(self, "responses", responses)
        if self.logprobs is not None:
            logprobs = np.empty(labels.shape, dtype=object)
            given = np.asarray(self.logprobs, dtype=object)
            if given.shape[:2] != labels.shape:
                raise ValueError(f"logprobs must have shape {labels.shape}, got {given.shape}.")
            for i, j in np.ndindex(*labels.shape):
                values = given[i, j]
                logprobs[i, j] = None if values is None else np.asarray(values, dtype=float).ravel()
            object.__setattr__(self, "logprobs", logprobs)
        ids = self.query_ids
        ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
        sources = self.sources
        sources = np.full(n, self.name) if sources is None else np.asarray(sources).astype(str)
        if ids.shape != (n,) or sources.shape != (n,):
            raise ValueError("query_ids and sources must each hold one entry per query.")
        object.__setattr__(self, "query_ids", ids)
        object.__setattr__(self, "sources", sources)

    @property
    def n_queries(self) -> int:
        """Number of queries (rows)."""
        return int(self.labels.shape[0])

    @property
    def n_models(self) -> int:
        """Number of candidate models (columns)."""
        return int(self.labels.shape[1])

    def __len__(self) -> int:
        return self.n_queries

    def subset(self, rows: np.ndarray) -> RoutingDataset:
        """Return the dataset restricted to ``rows`` (indices or a boolean mask)."""
        rows = np.asarray(rows)

        def take(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[rows]

        return replace(
            self,
            queries=self.queries[rows],
            labels=self.labels[rows],
            quality=take(self.quality),
            costs=take(self.costs),
            responses=take(self.responses),
            logprobs=take(self.logprobs),
            query_ids=self.query_ids[rows],
            sources=self.sources[rows],
        )

    def select_models(self, model_names: list[str] | tuple[str, ...]) -> RoutingDataset:
        """Return the dataset with only ``model_names``, in that order."""
        missing = [m for m in model_names if m not in self.model_names]
        if missing:
            raise ValueError(
                f"Unknown model(s) {missing}; this dataset has {list(self.model_names)}."
            )
        cols = np.array([self.model_names.index(m) for m in model_names], dtype=int)

        def take(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[:, cols]

        return replace(
            self,
            model_names=tuple(model_names),
            labels=self.labels[:, cols],
            quality=take(self.quality),
            costs=take(self.costs),
            responses=take(self.responses),
            logprobs=take(self.logprobs),
        )

    def mean_costs(self) -> np.ndarray | None:
        """Mean dollars per query of each model over the known cells, or None."""
        if self.costs is None:
            return None
        with np.errstate(invalid="ignore"):
            return np.nanmean(self.costs, axis=0)
