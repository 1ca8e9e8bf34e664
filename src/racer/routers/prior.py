"""The prior router: every query gets each model's training accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from racer.routers.base import BaseRouter, check_router_labels, smoothed_accuracy
from racer.routers.embeddings import QueryTexts, check_queries

__all__ = ["PriorRouter"]


class PriorRouter(BaseRouter):
    """Each model's training accuracy, the same for every query.

    Its top-1 choice is "always the best training model", the floor that any router
    that reads the query must beat; its per-model AUROC is 0.5 by construction.

    Attributes
    ----------
    accuracy_ : numpy.ndarray of shape (M,)
        Training accuracy over known labels, shrunk towards 1/2 by one pseudo-count.

    Examples
    --------
    >>> router = PriorRouter().fit(["q1", "q2"], [[1, 0], [1, 1]], model_names=["a", "b"])
    >>> router.predict_proba(["new query"]).round(2)
    array([[0.83, 0.5 ]])
    """

    name = "prior"

    def fit(
        self, queries: QueryTexts, labels: Any, model_names: Sequence[str] | None = None
    ) -> PriorRouter:
        """Record each model's training accuracy; the query texts are not read."""
        label_matrix = check_router_labels(labels, len(check_queries(queries)))
        self.accuracy_ = smoothed_accuracy(label_matrix)
        self._set_models(model_names, label_matrix.shape[1])
        return self

    def _predict(self, queries: QueryTexts) -> np.ndarray:
        return np.tile(self.accuracy_, (len(check_queries(queries)), 1))

    def _fitted_state(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy_}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.accuracy_ = np.asarray(state["accuracy"], dtype=float)
