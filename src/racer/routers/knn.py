"""k-nearest-neighbour router: similarity-weighted votes of the neighbours' correctness.

A query's k nearest neighbours are few, so their vote is noisy; it is shrunk towards
the vote of a wider neighbourhood (``wide_k`` neighbours), which on pooled data is
close to the accuracy of each model on the query's task. Without that shrinkage the
argmax of noisy per-model votes often misses the task's best model.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np

from racer.routers.base import (
    EmbeddingRouter,
    cross_validated_choice,
    fixed_or_grid,
    smoothed_accuracy,
)
from racer.routers.embeddings import Embedder

__all__ = ["KNNRouter", "nearest_neighbours", "neighbour_votes", "shrunk_votes"]

CHUNK = 1024  # queries scored at once: bounds the (chunk, n_train) similarity matrix


def _weighted_votes(weights: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Summed weights of correct answers and of known labels, per query and model."""
    known = ~np.isnan(labels)
    votes = np.einsum("nk,nkm->nm", weights, np.where(known, labels, 0.0))
    return votes, np.einsum("nk,nkm->nm", weights, known.astype(float))


def _depths(k: int, shrink: float, wide_k: int, n_train: int) -> tuple[int, int]:
    """Neighbours that vote (k), and neighbours searched (``wide_k`` when shrinking)."""
    k = min(k, n_train)
    return k, min(max(wide_k, k), n_train) if shrink > 0 else k


def nearest_neighbours(
    query_features: np.ndarray, train_features: np.ndarray, reach: int, power: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ``reach`` most cosine-similar training rows of each query, most similar first.

    Returns
    -------
    weights : numpy.ndarray of shape (n_queries, reach)
        ``max(similarity, 0) ** power``.
    neighbours : numpy.ndarray of int, shape (n_queries, reach)
        Their training row indices.
    """
    similarity = query_features @ train_features.T
    nearest = np.argpartition(-similarity, reach - 1, axis=1)[:, :reach]
    nearest_similarity = np.take_along_axis(similarity, nearest, axis=1)
    order = np.argsort(-nearest_similarity, axis=1, kind="stable")
    weights = np.maximum(np.take_along_axis(nearest_similarity, order, axis=1), 0.0) ** power
    return weights, np.take_along_axis(nearest, order, axis=1)


def shrunk_votes(
    weights: np.ndarray, labels: np.ndarray, prior: np.ndarray, k: int, shrink: float
) -> np.ndarray:
    """The vote of the first ``k`` neighbours, shrunk towards the vote of all of them.

    ``weights`` (n, reach) and ``labels`` (n, reach, M) are sorted, nearest first.
    """
    votes, total = _weighted_votes(weights[:, :k], labels[:, :k])
    if shrink <= 0:
        return (votes + prior) / (total + 1.0)
    wide_votes, wide_total = _weighted_votes(weights, labels)
    wide = (wide_votes + prior) / (wide_total + 1.0)
    return (votes + shrink * wide + prior) / (total + shrink + 1.0)


def neighbour_votes(
    query_features: np.ndarray,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    prior: np.ndarray,
    k: int,
    power: float,
    shrink: float = 0.0,
    wide_k: int = 400,
) -> np.ndarray:
    """Per-model correctness of the k most cosine-similar training queries.

    Each neighbour votes with weight ``max(similarity, 0) ** power``; unknown labels
    (NaN) do not vote. The vote gets one pseudo-vote of ``prior`` (so that empty
    neighbourhoods stay defined) and ``shrink`` pseudo-votes of the same estimate over
    the ``wide_k`` nearest neighbours.

    Returns
    -------
    numpy.ndarray of shape (n_queries, M)
    """
    k, reach = _depths(k, shrink, wide_k, len(train_features))
    weights, neighbours = nearest_neighbours(query_features, train_features, reach, power)
    return shrunk_votes(weights, train_labels[neighbours], prior, k, shrink)


class KNNRouter(EmbeddingRouter):
    """Cosine k-nearest neighbours over query embeddings, shrunk to a wider neighbourhood.

    Parameters
    ----------
    k : int or None, default=None
        Neighbours per query; None picks one of ``ks`` by cross-validated log-loss on
        the training data.
    ks : sequence of int, default=(20, 50, 100, 200)
        Candidates for ``k``.
    shrink : float or None, default=None
        Pseudo-votes (in units of one neighbour of similarity 1) given to the vote of
        the ``wide_k`` nearest neighbours; 0 turns the shrinkage off. None picks one of
        ``shrinks`` by cross-validation, jointly with ``k``.
    shrinks : sequence of float, default=(0.0, 5.0, 20.0, 50.0)
        Candidates for ``shrink``.
    wide_k : int, default=400
        Size of the wider neighbourhood (at least ``k``).
    power : float, default=1.0
        Vote weight = similarity ** power.
    embedder : str or Embedder, default="tfidf"
        The embedding step (see :class:`EmbeddingRouter`).
    cv : int, default=5
        Folds for choosing ``k`` and ``shrink``.
    random_state : int or None, default=0
        Seed of the folds.

    Attributes
    ----------
    k_ : int
        The number of neighbours used.
    shrink_ : float
        The shrinkage used.
    train_features_, train_labels_ : numpy.ndarray
        The stored training embeddings and labels.
    """

    name = "knn"

    def __init__(
        self,
        k: int | None = None,
        *,
        ks: Sequence[int] = (20, 50, 100, 200),
        shrink: float | None = None,
        shrinks: Sequence[float] = (0.0, 5.0, 20.0, 50.0),
        wide_k: int = 400,
        power: float = 1.0,
        embedder: str | Embedder = "tfidf",
        cv: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.k = k
        self.ks = ks
        self.shrink = shrink
        self.shrinks = shrinks
        self.wide_k = wide_k
        self.power = power
        self.embedder = embedder
        self.cv = cv
        self.random_state = random_state

    def _fit_embeddings(self, features: np.ndarray, labels: np.ndarray) -> None:
        ks, shrinks = fixed_or_grid(self.k, self.ks), fixed_or_grid(self.shrink, self.shrinks)
        candidates = list(product(ks, shrinks))

        def fit_fold(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray):
            # one neighbour search per fold, as deep as the deepest candidate needs
            n_train = len(train_x)
            reach = max(_depths(k, shrink, self.wide_k, n_train)[1] for k, shrink in candidates)
            weights, neighbours = nearest_neighbours(test_x, train_x, reach, self.power)
            neighbour_labels = train_y[neighbours]
            prior = smoothed_accuracy(train_y)

            def predict(candidate: tuple[int, float]) -> np.ndarray:
                k, shrink = candidate
                k, depth = _depths(k, shrink, self.wide_k, n_train)
                return shrunk_votes(
                    weights[:, :depth], neighbour_labels[:, :depth], prior, k, shrink
                )

            return predict

        (k, shrink), self.cv_losses_ = cross_validated_choice(
            candidates,
            fit_fold,
            features,
            labels,
            n_splits=self.cv,
            random_state=self.random_state,
        )
        self.k_, self.shrink_ = int(k), float(shrink)
        self.train_features_ = features.astype(np.float32)
        self.train_labels_ = labels.astype(np.float32)
        self.prior_ = smoothed_accuracy(labels)

    def _predict_embeddings(self, features: np.ndarray) -> np.ndarray:
        chunks = [
            neighbour_votes(
                features[start : start + CHUNK],
                self.train_features_,
                self.train_labels_,
                self.prior_,
                self.k_,
                self.power,
                self.shrink_,
                self.wide_k,
            )
            for start in range(0, len(features), CHUNK)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_models_))

    def _fitted_state(self) -> dict[str, Any]:
        return {
            "k": self.k_,
            "shrink": self.shrink_,
            "train_features": self.train_features_,
            "train_labels": self.train_labels_,
            "prior": self.prior_,
        }

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.k_ = int(state["k"])
        self.shrink_ = float(state.get("shrink", 0.0))
        self.train_features_ = np.asarray(state["train_features"], dtype=np.float32)
        self.train_labels_ = np.asarray(state["train_labels"], dtype=np.float32)
        self.prior_ = np.asarray(state["prior"], dtype=float)
