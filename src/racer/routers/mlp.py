"""A small multi-output MLP on query embeddings (numpy, full-batch L-BFGS)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import logit

from racer.routers._objective import Params, PenalisedRouter
from racer.routers.base import smoothed_accuracy
from racer.routers.embeddings import Embedder

__all__ = ["MLPRouter"]


def mlp_forward(params: Params, features: np.ndarray):
    """Logits of a one-hidden-layer ReLU network, and its backward function."""
    hidden = np.maximum(features @ params["hidden_weights"] + params["hidden_bias"], 0.0)

    def backward(d_logits: np.ndarray) -> Params:
        d_hidden = (d_logits @ params["output_weights"].T) * (hidden > 0)
        return {
            "hidden_weights": features.T @ d_hidden,
            "hidden_bias": d_hidden.sum(axis=0),
            "output_weights": hidden.T @ d_logits,
            "output_bias": d_logits.sum(axis=0),
        }

    return hidden @ params["output_weights"] + params["output_bias"], backward


class MLPRouter(PenalisedRouter):
    """A one-hidden-layer network mapping the query embedding to every model's score.

    Parameters
    ----------
    hidden : int, default=64
        Hidden ReLU units (shared by all models; one sigmoid output per model).
    alpha : float or None, default=None
        L2 strength (on the mean log-loss per label cell); None picks one of
        ``alphas`` by cross-validated log-loss on the training data.
    alphas : sequence of float, default=(3e-4, 1e-3, 3e-3)
        Candidates for ``alpha``.
    embedder : str or Embedder, default="tfidf"
        The embedding step (see :class:`~racer.routers.base.EmbeddingRouter`).
    cv : int, default=3
        Folds for choosing ``alpha``.
    max_iter : int, default=300
        Full-batch L-BFGS iterations.
    random_state : int or None, default=0
        Seed of the initial weights and the folds.

    Attributes
    ----------
    alpha_ : float
        The regularisation used.
    params_ : dict of str to numpy.ndarray
        Fitted weights.
    """

    name = "mlp"
    forward = staticmethod(mlp_forward)
    penalised = ("hidden_weights", "output_weights")

    def __init__(
        self,
        hidden: int = 64,
        *,
        alpha: float | None = None,
        alphas: Sequence[float] = (3e-4, 1e-3, 3e-3),
        embedder: str | Embedder = "tfidf",
        cv: int = 3,
        max_iter: int = 300,
        random_state: int | None = 0,
    ) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.alphas = alphas
        self.embedder = embedder
        self.cv = cv
        self.max_iter = max_iter
        self.random_state = random_state

    def _initial(self, features: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        n_features, n_models = features.shape[1], labels.shape[1]
        return {
            "hidden_weights": rng.normal(0.0, np.sqrt(2.0 / n_features), (n_features, self.hidden)),
            "hidden_bias": np.zeros(self.hidden),
            "output_weights": rng.normal(0.0, 0.1 / np.sqrt(self.hidden), (self.hidden, n_models)),
            "output_bias": logit(smoothed_accuracy(labels)),
        }
