"""Scores produced outside RACER: a file of per-model scores, or a Python callable.

This is how RouterDC, RouteLLM, a hosted router or any other scorer is calibrated:
RACER only needs its per-model scores in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from racer._validation import check_scores
from racer.data.generic import existing_file, read_table, to_float
from racer.routers.base import BaseRouter
from racer.routers.embeddings import QueryTexts, check_queries

__all__ = ["ExternalScoresRouter", "UnknownQueryError", "fit_external_scores", "read_scores"]

ScoreSource = str | Path | Callable[[list[str]], Any]
INDEX_COLUMNS = frozenset({"", "Unnamed: 0", "index"})


class UnknownQueryError(KeyError, ValueError):
    """A query routed through an :class:`ExternalScoresRouter` that its file has no score for.

    A ``KeyError`` (a lookup that failed) and a ``ValueError`` (the input does not fit),
    so that the command line shows it as one ``Error:`` line.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def read_scores(
    path: str | Path, query_column: str = "query"
) -> tuple[np.ndarray | None, np.ndarray, list[str] | None]:
    """Read per-model scores from a file.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet``: one row per query, the
        ``query_column`` (query text or id) and one numeric column per model.
        ``.npz``: arrays ``scores`` (n, M), ``queries`` (n,) and optionally
        ``model_names`` (M,). ``.npy``: a bare (n, M) array, keyed by row position.
    query_column : str, default="query"
        Key column of a table.

    Returns
    -------
    keys : numpy.ndarray of str or None
        The query key of each row (None for ``.npy``: keyed by position).
    scores : numpy.ndarray of shape (n, M)
    model_names : list of str or None
        Column names, when the file has them.
    """
    path = existing_file(path, "scores file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return None, np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "scores" not in data or "queries" not in data:
                raise ValueError(
                    f"{path.name} must hold arrays 'scores' and 'queries'; it has {list(data)}."
                )
            names = [str(m) for m in data["model_names"]] if "model_names" in data else None
            return data["queries"].astype(str), data["scores"], names
    columns, rows = read_table(path)
    if query_column not in columns:
        raise ValueError(
            f"{path.name} has no {query_column!r} column (columns: {columns}); pass "
            "query_column= naming the column that holds the query text or id."
        )
    names = [c for c in columns if c != query_column and c not in INDEX_COLUMNS]
    scores = np.array(
        [
            [to_float(row.get(m), f"{path.name}, row {i}, {m!r}") for m in names]
            for i, row in enumerate(rows)
        ]
    )
    return np.array([str(row[query_column]) for row in rows]), scores, names


class ExternalScoresRouter(BaseRouter):
    """A router whose scores come from a file or a callable instead of a fitted model.

    Parameters
    ----------
    source : str, pathlib.Path or callable
        A scores file (see :func:`read_scores`), or ``f(list_of_queries) -> (n, M)``
        returning scores in the column order of ``model_names`` passed to ``fit``.
    query_column : str, default="query"
        Key column of a table file.

    Attributes
    ----------
    keys_ : numpy.ndarray of str or None
        Query keys of a file source (None for a callable or a ``.npy`` file, which is
        queried by row position: pass ``["0", "5", ...]``).
    scores_ : numpy.ndarray of shape (n, M) or None
        Scores of a file source, columns in ``model_names_`` order.

    Examples
    --------
    >>> router = ExternalScoresRouter("routerdc_scores.csv")  # doctest: +SKIP
    >>> router.fit(queries, labels, model_names=data.model_names)  # doctest: +SKIP
    >>> router.predict_proba(["What is 2 + 2?"])  # doctest: +SKIP
    """

    name = "external"

    def __init__(self, source: ScoreSource, *, query_column: str = "query") -> None:
        self.source = source
        self.query_column = query_column

    def fit(
        self,
        queries: QueryTexts | None = None,
        labels: Any = None,
        model_names: Sequence[str] | None = None,
    ) -> ExternalScoresRouter:
        """Read the source and align its columns with ``model_names``; nothing is learned.

        ``queries`` and ``labels`` are accepted for the common interface; labels only
        fix the number of models when the source has no column names.
        """
        n_models = None if labels is None else np.shape(labels)[1]
        if callable(self.source):
            if model_names is None and n_models is None:
                raise ValueError("A callable source needs model_names (or labels) at fit.")
            self.keys_, self.scores_ = None, None
            self._set_models(model_names, len(model_names) if model_names else n_models)
            return self
        keys, scores, file_names = read_scores(self.source, self.query_column)
        scores = check_scores(scores, f"scores in {Path(self.source).name}")
        if file_names is not None and model_names is not None:
            missing = [m for m in model_names if m not in file_names]
            if missing:
                raise ValueError(
                    f"{Path(self.source).name} has no scores for {missing}; its models are "
                    f"{file_names}."
                )
            scores = scores[:, [file_names.index(m) for m in model_names]]
        names = list(model_names) if model_names is not None else file_names
        self._set_models(names, scores.shape[1])
        self._set_fitted_state({"keys": keys, "scores": scores})
        return self

    def _rows(self, texts: list[str]) -> np.ndarray:
        if self.keys_ is None:
            rows = [int(text) if text.strip().isdigit() else -1 for text in texts]
        else:
            rows = [self.row_of_.get(text, -1) for text in texts]
        rows = np.asarray(rows, dtype=int)
        unknown = (rows < 0) | (rows >= len(self.scores_))
        if unknown.any():
            first = texts[int(np.flatnonzero(unknown)[0])]
            raise UnknownQueryError(
                f"No external score for {int(unknown.sum())} of {len(texts)} queries (first: "
                f"{first[:80]!r}). The scores file must hold every query routed"
                + (", keyed by row position for a .npy file." if self.keys_ is None else ".")
            )
        return rows

    def _predict(self, queries: QueryTexts) -> np.ndarray:
        texts = check_queries(queries)
        if self.scores_ is not None:
            return self.scores_[self._rows(texts)]
        scores = check_scores(self.source(texts), "scores returned by the callable source")
        if scores.shape != (len(texts), self.n_models_):
            raise ValueError(
                f"The callable source returned shape {scores.shape}; expected "
                f"({len(texts)}, {self.n_models_}) for {len(texts)} queries and models "
                f"{self.model_names_}."
            )
        return scores

    def _params_state(self) -> dict[str, Any]:
        return {"source": str(self.source), "query_column": self.query_column}

    def _fitted_state(self) -> dict[str, Any]:
        if self.scores_ is None:
            raise TypeError(
                "An ExternalScoresRouter over a Python callable cannot be saved (no pickle); "
                "write its scores to a file and wrap that file instead."
            )
        keys = None if self.keys_ is None else self.keys_.astype(str)
        return {"keys": keys, "scores": self.scores_}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        keys = state["keys"]
        self.keys_ = None if keys is None else np.asarray(keys).astype(str)
        self.scores_ = np.asarray(state["scores"], dtype=float)
        self.row_of_ = {} if keys is None else {k: i for i, k in enumerate(self.keys_.tolist())}


def fit_external_scores(
    source: str | Path, model_names: Sequence[str], query_ids: Sequence[str], queries: Sequence[str]
) -> tuple[ExternalScoresRouter, np.ndarray]:
    """An :class:`ExternalScoresRouter` over a scores file, and the scores of given queries.

    The file's rows are matched to the queries by id when every id is a key of the file,
    otherwise by query text (a ``.npy`` file: by row position).

    Parameters
    ----------
    source : str or pathlib.Path
        The scores file (see :func:`read_scores`).
    model_names : sequence of str
        The models, in the column order of the returned scores.
    query_ids, queries : sequence of str
        The ids and texts of the queries to score, one per query.

    Returns
    -------
    router : ExternalScoresRouter
        Fitted on ``model_names``.
    scores : numpy.ndarray of shape (n, M)

    Raises
    ------
    ValueError
        When the file lacks a model or a query (the message names it).
    """
    router = ExternalScoresRouter(source).fit(model_names=list(model_names))
    if router.keys_ is None:
        keys = [str(i) for i in range(len(queries))]
    elif all(str(key) in router.row_of_ for key in query_ids):
        keys = [str(key) for key in query_ids]
    else:
        keys = [str(query) for query in queries]
    return router, router.predict_proba(keys)
