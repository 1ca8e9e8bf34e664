"""Ensemble router: the mean of several embedding routers' probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from racer.routers.base import EmbeddingRouter
from racer.routers.embeddings import Embedder
from racer.routers.knn import KNNRouter
from racer.routers.linear import LogisticRouter
from racer.routers.mf import MatrixFactorizationRouter
from racer.routers.mlp import MLPRouter

__all__ = ["EnsembleRouter"]

MEMBERS: dict[str, type[EmbeddingRouter]] = {
    router.name: router
    for router in (KNNRouter, LogisticRouter, MLPRouter, MatrixFactorizationRouter)
}


class EnsembleRouter(EmbeddingRouter):
    """The average of the probabilities of several routers that share one embedding.

    Each member tunes its own hyper-parameters by cross-validation on the training
    data, as it does alone. A local vote (kNN) and a smooth global model (logistic)
    make different errors, so their mean ranks queries better than either.

    Parameters
    ----------
    members : sequence of str, default=("knn", "logistic")
        Router names among ``"knn"``, ``"logistic"``, ``"mlp"`` and ``"mf"``, each
        built with its default hyper-parameters.
    embedder : str or Embedder, default="tfidf"
        The embedding step, fitted once and shared by the members.
    random_state : int or None, default=0
        Seed of every member's folds and initial weights.

    Attributes
    ----------
    members_ : list of EmbeddingRouter
        The fitted members.

    Examples
    --------
    >>> router = EnsembleRouter(members=("knn", "logistic"))
    >>> router.fit(train_queries, train_labels).predict_proba(["2 + 2?"])  # doctest: +SKIP
    """

    name = "ensemble"

    def __init__(
        self,
        members: Sequence[str] = ("knn", "logistic"),
        *,
        embedder: str | Embedder = "tfidf",
        random_state: int | None = 0,
    ) -> None:
        self.members = members
        self.embedder = embedder
        self.random_state = random_state

    def _new_members(self) -> list[EmbeddingRouter]:
        unknown = [name for name in self.members if name not in MEMBERS]
        if unknown or not self.members:
            raise ValueError(
                f"members must be names among {list(MEMBERS)}, got {list(self.members)}."
            )
        return [MEMBERS[name](random_state=self.random_state) for name in self.members]

    def _fit_embeddings(self, features: np.ndarray, labels: np.ndarray) -> None:
        self.members_ = self._new_members()
        for member in self.members_:
            member._fit_embeddings(features, labels)
            member._set_models(None, labels.shape[1])

    def _predict_embeddings(self, features: np.ndarray) -> np.ndarray:
        return np.mean([member._predict_embeddings(features) for member in self.members_], axis=0)

    def _fitted_state(self) -> dict[str, Any]:
        return {"members": [member._fitted_state() for member in self.members_]}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.members_ = self._new_members()
        for member, fitted in zip(self.members_, state["members"], strict=True):
            member._set_models(None, self.n_models_)
            member._set_fitted_state(fitted)
