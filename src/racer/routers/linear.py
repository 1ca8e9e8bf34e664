"""Per-model logistic regression on query embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit, logit

from racer.routers._objective import Params, fit_masked_log_loss
from racer.routers.base import (
    EmbeddingRouter,
    cross_validated_choice,
    fixed_or_grid,
    smoothed_accuracy,
)
from racer.routers.embeddings import Embedder

__all__ = ["LogisticRouter", "fit_logistic"]


def _linear(params: Params, features: np.ndarray):
    def backward(d_logits: np.ndarray) -> Params:
        return {"coef": d_logits.T @ features, "intercept": d_logits.sum(axis=0)}

    return features @ params["coef"].T + params["intercept"], backward


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, C: float, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """L2-regularised logistic regressions of every label column at once, NaN left out.

    ``C`` has scikit-learn's meaning for each column (penalty ``||w||^2 / (2 C)``
    against the summed log-loss of its known rows); the intercept is not penalised.

    Returns
    -------
    coef : numpy.ndarray of shape (M, d)
    intercept : numpy.ndarray of shape (M,)
    """
    n_models = labels.shape[1]
    initial = {
        "coef": np.zeros((n_models, features.shape[1])),
        "intercept": logit(smoothed_accuracy(labels)),
    }
    alpha = 1.0 / (C * max(int((~np.isnan(labels)).sum()), 1))
    fitted = fit_masked_log_loss(
        _linear, initial, features, labels, alpha=alpha, penalised=("coef",), max_iter=max_iter
    )
    return fitted["coef"], fitted["intercept"]


class LogisticRouter(EmbeddingRouter):
    """One logistic regression per model on the query embedding.

    Parameters
    ----------
    C : float or None, default=None
        Inverse L2 strength (as in scikit-learn); None picks one of ``Cs`` by
        cross-validated log-loss on the training data (the regularisation matters more
        than the embedding).
    Cs : sequence of float, default=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
        Candidates for ``C``.
    embedder : str or Embedder, default="tfidf"
        The embedding step (see :class:`EmbeddingRouter`).
    cv : int, default=5
        Folds for choosing ``C``.
    max_iter : int, default=500
        L-BFGS iterations.
    random_state : int or None, default=0
        Seed of the folds.

    Attributes
    ----------
    C_ : float
        The regularisation used.
    coef_ : numpy.ndarray of shape (M, d)
    intercept_ : numpy.ndarray of shape (M,)

    Examples
    --------
    >>> router = LogisticRouter(C=1.0)
    >>> router.fit(train_queries, train_labels).predict_proba(["What is 2 + 2?"])  # doctest: +SKIP
    """

    name = "logistic"

    def __init__(
        self,
        C: float | None = None,
        *,
        Cs: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
        embedder: str | Embedder = "tfidf",
        cv: int = 5,
        max_iter: int = 500,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.Cs = Cs
        self.embedder = embedder
        self.cv = cv
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit_embeddings(self, features: np.ndarray, labels: np.ndarray) -> None:
        def fit_fold(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray):
            def predict(C: float) -> np.ndarray:
                coef, intercept = fit_logistic(train_x, train_y, C, self.max_iter)
                return expit(test_x @ coef.T + intercept)

            return predict

        best, self.cv_losses_ = cross_validated_choice(
            fixed_or_grid(self.C, self.Cs),
            fit_fold,
            features,
            labels,
            n_splits=self.cv,
            random_state=self.random_state,
        )
        self.C_ = float(best)
        self.coef_, self.intercept_ = fit_logistic(features, labels, self.C_, self.max_iter)

    def _predict_embeddings(self, features: np.ndarray) -> np.ndarray:
        return expit(features @ self.coef_.T + self.intercept_)

    def _fitted_state(self) -> dict[str, Any]:
        return {"C": self.C_, "coef": self.coef_, "intercept": self.intercept_}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.C_ = float(state["C"])
        self.coef_ = np.asarray(state["coef"], dtype=float)
        self.intercept_ = np.asarray(state["intercept"], dtype=float)
