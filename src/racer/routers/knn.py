"""k-nearest-neighbour router: similarity-weighted votes of the neighbours' correctness."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from racer.routers.base import EmbeddingRouter, cross_validated_choice, smoothed_accuracy
from racer.routers.embeddings import Embedder

__all__ = ["KNNRouter"]

CHUNK = 1024  # queries scored at once: bounds the (chunk, n_train) similarity matrix


def neighbour_votes(
    query_features: np.ndarray,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    prior: np.ndarray,
    k: int,
    power: float,
) -> np.ndarray:
    """Per-model correctness of the k most cosine-similar training queries.

    Each neighbour votes with weight ``max(similarity, 0) ** power``; unknown labels
    (NaN) do not vote; one pseudo-vote of ``prior`` keeps empty neighbourhoods defined.
    """
    k = min(k, len(train_features))
    similarity = query_features @ train_features.T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.maximum(np.take_along_axis(similarity, nearest, axis=1), 0.0) ** power
    neighbour_labels = train_labels[nearest]
    known = ~np.isnan(neighbour_labels)
    votes = np.einsum("nk,nkm->nm", weights, np.where(known, neighbour_labels, 0.0))
    total = np.einsum("nk,nkm->nm", weights, known.astype(float))
    return (votes + prior) / (total + 1.0)


class KNNRouter(EmbeddingRouter):
    """Cosine k-nearest neighbours over query embeddings.

    Parameters
    ----------
    k : int or None, default=None
        Neighbours per query; None picks one of ``ks`` by cross-validated log-loss on
        the training data.
    ks : sequence of int, default=(10, 20, 50, 100, 200, 400)
        Candidates for ``k``.
    power : float, default=1.0
        Vote weight = similarity ** power.
    embedder : str or Embedder, default="tfidf"
        The embedding step (see :class:`EmbeddingRouter`).
    cv : int, default=5
        Folds for choosing ``k``.
    random_state : int or None, default=0
        Seed of the folds.

    Attributes
    ----------
    k_ : int
        The number of neighbours used.
    train_features_, train_labels_ : numpy.ndarray
        The stored training embeddings and labels.
    """

    name = "knn"

    def __init__(
        self,
        k: int | None = None,
        *,
        ks: Sequence[int] = (10, 20, 50, 100, 200, 400),
        power: float = 1.0,
        embedder: str | Embedder = "tfidf",
        cv: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.k = k
        self.ks = ks
        self.power = power
        self.embedder = embedder
        self.cv = cv
        self.random_state = random_state

    def _fit_embeddings(self, features: np.ndarray, labels: np.ndarray) -> None:
        def fit_predict(k: int, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray):
            prior = smoothed_accuracy(train_y)
            return neighbour_votes(test_x, train_x, train_y, prior, k, self.power)

        candidates = [self.k] if self.k is not None else list(self.ks)
        self.k_, self.cv_losses_ = cross_validated_choice(
            candidates,
            fit_predict,
            features,
            labels,
            n_splits=self.cv,
            random_state=self.random_state,
        )
        self.k_ = int(self.k_)
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
            )
            for start in range(0, len(features), CHUNK)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_models_))

    def _fitted_state(self) -> dict[str, Any]:
        return {
            "k": self.k_,
            "train_features": self.train_features_,
            "train_labels": self.train_labels_,
            "prior": self.prior_,
        }

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.k_ = int(state["k"])
        self.train_features_ = np.asarray(state["train_features"], dtype=np.float32)
        self.train_labels_ = np.asarray(state["train_labels"], dtype=np.float32)
        self.prior_ = np.asarray(state["prior"], dtype=float)
