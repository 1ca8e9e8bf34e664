"""Cluster router: each k-means region of the embedding space gets its own model accuracies.

On pooled benchmarks the per-query signal is weak but the embedding separates the
tasks well, so most of what a router can learn is "which model is best in this region".
The router clusters the training embeddings with k-means and scores a query with the
per-model accuracy of its region, shrunk towards each model's overall accuracy (a Beta
prior of ``prior_strength`` pseudo-counts), so that small regions stay close to the
global ranking. Optionally a query mixes the tables of nearby regions, weighted by a
softmax of minus the squared distance to each centroid over ``temperature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from racer.routers.base import (
    EmbeddingRouter,
    cross_validated_choice,
    fixed_or_grid,
    smoothed_accuracy,
)
from racer.routers.embeddings import Embedder

__all__ = ["ClusterRouter", "cluster_tables", "region_weights"]


def cluster_tables(
    assignments: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    prior: np.ndarray,
    prior_strength: float,
) -> np.ndarray:
    """Per-cluster, per-model accuracy shrunk towards ``prior``; NaN labels are ignored.

    Parameters
    ----------
    assignments : numpy.ndarray of int, shape (n,)
        The cluster of each training query.
    labels : numpy.ndarray of shape (n, M)
        1 correct, 0 wrong, NaN unknown.
    n_clusters : int
        Number of clusters (rows of the table).
    prior : numpy.ndarray of shape (M,)
        Each model's overall accuracy, the mean of the Beta prior.
    prior_strength : float
        Pseudo-counts of the prior (> 0): a cluster with no known label gets ``prior``.

    Returns
    -------
    numpy.ndarray of shape (n_clusters, M)
        ``(correct + prior_strength * prior) / (known + prior_strength)``.
    """
    if prior_strength <= 0:
        raise ValueError(f"prior_strength must be positive, got {prior_strength}.")
    known = ~np.isnan(labels)
    correct = np.zeros((n_clusters, labels.shape[1]))
    total = np.zeros_like(correct)
    np.add.at(correct, assignments, np.where(known, labels, 0.0))
    np.add.at(total, assignments, known.astype(float))
    return (correct + prior_strength * prior) / (total + prior_strength)


def region_weights(features: np.ndarray, centroids: np.ndarray, temperature: float) -> np.ndarray:
    """How much each query belongs to each cluster: one-hot, or a softmax over distances.

    Parameters
    ----------
    features : numpy.ndarray of shape (n, d)
    centroids : numpy.ndarray of shape (K, d)
    temperature : float
        0 gives the nearest centroid weight 1; a positive value gives weights
        proportional to ``exp(-squared_distance / temperature)``.

    Returns
    -------
    numpy.ndarray of shape (n, K)
        Rows sum to 1.
    """
    x = np.asarray(features, dtype=float)
    c = np.asarray(centroids, dtype=float)
    distance = (x**2).sum(axis=1)[:, None] - 2.0 * x @ c.T + (c**2).sum(axis=1)[None, :]
    distance -= distance.min(axis=1, keepdims=True)
    if temperature <= 0:
        weights = np.zeros_like(distance)
        weights[np.arange(len(x)), distance.argmin(axis=1)] = 1.0
        return weights
    weights = np.exp(-distance / temperature)
    return weights / weights.sum(axis=1, keepdims=True)


class ClusterRouter(EmbeddingRouter):
    """Per-region model accuracies over k-means clusters of the query embeddings.

    Parameters
    ----------
    n_clusters : int or None, default=None
        Number of k-means clusters; None picks one of ``n_clusters_grid`` by
        cross-validated log-loss on the training data.
    n_clusters_grid : sequence of int, default=(5, 10, 20, 40)
        Candidates for ``n_clusters``.
    prior_strength : float or None, default=None
        Pseudo-counts of the Beta prior that pulls each cluster's accuracy towards the
        model's overall training accuracy; None picks one of ``prior_strength_grid``
        jointly with ``n_clusters``.
    prior_strength_grid : sequence of float, default=(5.0, 20.0)
        Candidates for ``prior_strength``.
    temperature : float or None, default=None
        0 scores a query with its nearest centroid's table; a positive value mixes the
        tables with softmax weights of ``-squared_distance / temperature`` (embeddings
        have unit norm, so squared distances lie in [0, 4]). None picks one of
        ``temperature_grid`` jointly with the others.
    temperature_grid : sequence of float, default=(0.0, 0.05)
        Candidates for ``temperature``.
    n_init : int, default=3
        k-means restarts.
    embedder : str or Embedder, default="tfidf"
        The embedding step (see :class:`EmbeddingRouter`).
    cv : int, default=3
        Folds for the hyper-parameter choice.
    random_state : int or None, default=0
        Seed of the folds and of k-means.

    Attributes
    ----------
    n_clusters_ : int
        The number of clusters used.
    prior_strength_ : float
        The prior pseudo-counts used.
    temperature_ : float
        The assignment temperature used (0 = nearest centroid).
    centroids_ : numpy.ndarray of shape (n_clusters_, d)
        The k-means centroids.
    tables_ : numpy.ndarray of shape (n_clusters_, M)
        Each cluster's shrunk per-model accuracy.
    prior_ : numpy.ndarray of shape (M,)
        Each model's overall training accuracy (see :func:`smoothed_accuracy`).
    cv_losses_ : numpy.ndarray
        Mean validation log-loss of each candidate (NaN when nothing was tuned).

    Examples
    --------
    >>> router = ClusterRouter(n_clusters=10)
    >>> router.fit(train_queries, train_labels).predict_proba(["2 + 2?"])  # doctest: +SKIP
    """

    name = "cluster"

    def __init__(
        self,
        n_clusters: int | None = None,
        *,
        n_clusters_grid: Sequence[int] = (5, 10, 20, 40),
        prior_strength: float | None = None,
        prior_strength_grid: Sequence[float] = (5.0, 20.0),
        temperature: float | None = None,
        temperature_grid: Sequence[float] = (0.0, 0.05),
        n_init: int = 3,
        embedder: str | Embedder = "tfidf",
        cv: int = 3,
        random_state: int | None = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_clusters_grid = n_clusters_grid
        self.prior_strength = prior_strength
        self.prior_strength_grid = prior_strength_grid
        self.temperature = temperature
        self.temperature_grid = temperature_grid
        self.n_init = n_init
        self.embedder = embedder
        self.cv = cv
        self.random_state = random_state

    def _kmeans(self, features: np.ndarray, n_clusters: int) -> KMeans:
        k = max(1, min(int(n_clusters), len(features)))
        return KMeans(k, n_init=self.n_init, random_state=self.random_state).fit(features)

    def _fit_embeddings(self, features: np.ndarray, labels: np.ndarray) -> None:
        def fit_fold(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray):
            prior = smoothed_accuracy(train_y)
            fitted_kmeans: dict[int, KMeans] = {}  # one k-means per size, shared by candidates

            def predict(candidate: tuple[int, float, float]) -> np.ndarray:
                n_clusters, strength, temperature = candidate
                if n_clusters not in fitted_kmeans:
                    fitted_kmeans[n_clusters] = self._kmeans(train_x, n_clusters)
                kmeans = fitted_kmeans[n_clusters]
                tables = cluster_tables(kmeans.labels_, train_y, kmeans.n_clusters, prior, strength)
                return region_weights(test_x, kmeans.cluster_centers_, temperature) @ tables

            return predict

        candidates = product(
            fixed_or_grid(self.n_clusters, self.n_clusters_grid),
            fixed_or_grid(self.prior_strength, self.prior_strength_grid),
            fixed_or_grid(self.temperature, self.temperature_grid),
        )
        (n_clusters, strength, temperature), self.cv_losses_ = cross_validated_choice(
            list(candidates),
            fit_fold,
            features,
            labels,
            n_splits=self.cv,
            random_state=self.random_state,
        )
        kmeans = self._kmeans(features, n_clusters)
        self.n_clusters_ = int(kmeans.n_clusters)
        self.prior_strength_, self.temperature_ = float(strength), float(temperature)
        self.prior_ = smoothed_accuracy(labels)
        self.centroids_ = kmeans.cluster_centers_.astype(float)
        self.tables_ = cluster_tables(
            kmeans.labels_, labels, self.n_clusters_, self.prior_, self.prior_strength_
        )

    def _predict_embeddings(self, features: np.ndarray) -> np.ndarray:
        return region_weights(features, self.centroids_, self.temperature_) @ self.tables_

    def _fitted_state(self) -> dict[str, Any]:
        return {
            "n_clusters": self.n_clusters_,
            "prior_strength": self.prior_strength_,
            "temperature": self.temperature_,
            "centroids": self.centroids_,
            "tables": self.tables_,
            "prior": self.prior_,
        }

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.n_clusters_ = int(state["n_clusters"])
        self.prior_strength_ = float(state["prior_strength"])
        self.temperature_ = float(state["temperature"])
        self.centroids_ = np.asarray(state["centroids"], dtype=float)
        self.tables_ = np.asarray(state["tables"], dtype=float)
        self.prior_ = np.asarray(state["prior"], dtype=float)
