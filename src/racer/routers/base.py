"""The base-router interface, and the shared machinery of routers that embed queries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold

from racer._validation import check_matrix
from racer.routers.embeddings import (
    Embedder,
    QueryTexts,
    check_queries,
    embedder_from_state,
    make_embedder,
)

__all__ = [
    "BaseRouter",
    "EmbeddingRouter",
    "check_router_labels",
    "cross_validated_choice",
    "fixed_or_grid",
    "masked_log_loss",
]

EPSILON = 1e-6


def check_router_labels(labels: Any, n_queries: int) -> np.ndarray:
    """Labels of shape (n_queries, M): 1 correct, 0 wrong, NaN unknown (ignored)."""
    matrix = check_matrix(labels, "labels")
    if matrix.shape[0] != n_queries:
        raise ValueError(
            f"labels have {matrix.shape[0]} rows but there are {n_queries} queries; "
            "give one row of per-model labels per query."
        )
    known = matrix[~np.isnan(matrix)]
    if not np.isin(known, (0.0, 1.0)).all():
        raise ValueError(
            "labels must be 0 (wrong), 1 (correct) or NaN (unknown); threshold graded "
            "quality first, for example (quality >= 0.5).astype(float)."
        )
    if known.size == 0:
        raise ValueError("labels hold no known value (all NaN); nothing to learn from.")
    return matrix


def check_names(model_names: Sequence[str] | None, n_models: int) -> list[str]:
    """The given model names, or ``model_0 .. model_{M-1}``."""
    if model_names is None:
        return [f"model_{j}" for j in range(n_models)]
    names = [str(name) for name in model_names]
    if len(names) != n_models or len(set(names)) != n_models:
        raise ValueError(
            f"model_names must be {n_models} unique names (one per label column), got {names}."
        )
    return names


def smoothed_accuracy(labels: np.ndarray) -> np.ndarray:
    """Per-model accuracy over known labels, shrunk towards 1/2 by one pseudo-count."""
    known = ~np.isnan(labels)
    return (np.nansum(labels, axis=0) + 0.5) / (known.sum(axis=0) + 1.0)


def masked_log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary log-loss over the known (non-NaN) label cells."""
    known = ~np.isnan(labels)
    p = np.clip(probabilities[known], EPSILON, 1 - EPSILON)
    y = labels[known]
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fixed_or_grid(value: Any, grid: Sequence[Any]) -> list[Any]:
    """``[value]`` when a hyper-parameter is fixed, else its candidate grid."""
    return [value] if value is not None else list(grid)


def cross_validated_choice(
    candidates: Sequence[Any],
    fit_fold: Callable[[np.ndarray, np.ndarray, np.ndarray], Callable[[Any], np.ndarray]],
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_splits: int,
    random_state: int | None,
) -> tuple[Any, np.ndarray]:
    """The candidate with the lowest cross-validated masked log-loss.

    Parameters
    ----------
    candidates : sequence
        Hyper-parameter values to compare.
    fit_fold : callable
        ``fit_fold(train_features, train_labels, validation_features)`` is called once
        per fold and returns ``predict(candidate)``, the probabilities of shape
        (n_validation, M) under that candidate; work that every candidate shares (a
        similarity matrix, a k-means fit) is done once per fold there.
    features, labels : numpy.ndarray
        Training data only (tuning on calibration data voids RACER's guarantee).
    n_splits : int
        Folds.
    random_state : int or None
        Seed of the fold shuffle.

    Returns
    -------
    best : object
        The chosen candidate (the first one on ties).
    losses : numpy.ndarray
        Mean validation log-loss of each candidate.
    """
    if len(candidates) == 1:
        return candidates[0], np.array([np.nan])
    folds = KFold(min(n_splits, len(features)), shuffle=True, random_state=random_state)
    losses = np.zeros(len(candidates))
    for train, validation in folds.split(features):
        predict = fit_fold(features[train], labels[train], features[validation])
        for i, candidate in enumerate(candidates):
            losses[i] += masked_log_loss(predict(candidate), labels[validation])
    return candidates[int(np.argmin(losses))], losses / folds.get_n_splits()


class BaseRouter(BaseEstimator):
    """A base router: per-model probabilities that each model answers correctly.

    Subclasses implement ``fit(queries, labels, model_names=None)`` (setting
    ``model_names_``) and ``_predict(queries)``, and for saving ``_fitted_state`` and
    ``_set_fitted_state``. Hyper-parameters are stored unchanged by ``__init__``;
    learned state lives in attributes ending in ``_``.

    Attributes
    ----------
    model_names_ : list of str
        The candidate models, in column order.
    n_models_ : int
        Number of candidates M.
    """

    name = "base"

    def fit(
        self, queries: QueryTexts, labels: Any, model_names: Sequence[str] | None = None
    ) -> BaseRouter:
        """Learn from training queries and their (n, M) 0/1 labels (NaN = unknown)."""
        raise NotImplementedError

    def _predict(self, queries: Any) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_names_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet. Call fit(queries, labels) "
                "before predict_proba."
            )

    def _set_models(self, model_names: Sequence[str] | None, n_models: int) -> None:
        self.model_names_ = check_names(model_names, n_models)
        self.n_models_ = n_models

    def predict_proba(self, queries: QueryTexts) -> np.ndarray:
        """Probability that each model answers each query correctly.

        Parameters
        ----------
        queries : sequence of str
            The query texts (a list, even for one query).

        Returns
        -------
        numpy.ndarray of float, shape (n, M)
            Scores in [0, 1], columns in the order of ``model_names_``.
        """
        self._check_fitted()
        return np.clip(np.asarray(self._predict(queries), dtype=float), 0.0, 1.0)

    def _fitted_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _params_state(self) -> dict[str, Any]:
        return self.get_params(deep=False)

    def get_state(self) -> dict[str, Any]:
        """The fitted router as JSON values and numpy arrays (see :mod:`racer.artifact`)."""
        self._check_fitted()
        return {
            "name": self.name,
            "params": self._params_state(),
            "model_names": list(self.model_names_),
            "fitted": self._fitted_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BaseRouter:
        """Rebuild a fitted router of this class from :meth:`get_state` output."""
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in state["params"].items()}
        router = cls(**params)
        router._set_models(state["model_names"], len(state["model_names"]))
        router._set_fitted_state(state["fitted"])
        return router


class EmbeddingRouter(BaseRouter):
    """A router that embeds queries, then maps embeddings to per-model scores.

    Subclasses implement ``_fit_embeddings(features, labels)`` and
    ``_predict_embeddings(features)``. The ``embedder`` parameter is a name from
    :data:`racer.routers.embeddings.EMBEDDER_NAMES` or an :class:`Embedder`; an
    embedder that is already fitted is used as is, so several routers can share one.
    """

    embedder: str | Embedder

    def _fit_embeddings(self, features: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_embeddings(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _resolve_embedder(self, texts: list[str]) -> Embedder:
        if isinstance(self.embedder, str):
            return make_embedder(self.embedder).fit(texts)
        if self.embedder.is_fitted:
            return self.embedder
        return clone(self.embedder).fit(texts)

    def fit(
        self, queries: QueryTexts, labels: Any, model_names: Sequence[str] | None = None
    ) -> EmbeddingRouter:
        """Embed the training queries and fit the per-model scorer.

        Parameters
        ----------
        queries : sequence of str
            Training queries.
        labels : array-like of shape (n, M)
            1 when the model answered correctly, 0 when not, NaN when unknown (ignored).
        model_names : sequence of str, optional
            Column names; ``model_0 ..`` by default.

        Returns
        -------
        self
        """
        texts = check_queries(queries)
        label_matrix = check_router_labels(labels, len(texts))
        self.embedder_ = self._resolve_embedder(texts)
        self._fit_embeddings(self.embedder_.transform(texts), label_matrix)
        self._set_models(model_names, label_matrix.shape[1])
        return self

    def _predict(self, queries: QueryTexts) -> np.ndarray:
        return self._predict_embeddings(self.embedder_.transform(check_queries(queries)))

    def _params_state(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        params["embedder"] = self.embedder_.name
        return params

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["embedder"] = self.embedder_.get_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EmbeddingRouter:
        router = super().from_state(state)
        router.embedder_ = embedder_from_state(state["embedder"])
        return router  # type: ignore[return-value]
