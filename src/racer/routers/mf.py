"""Matrix factorisation router (EmbedLLM / RouteLLM-MF style), in numpy.

The logit of model m on query x is ``<P^T x, v_m> + b_m``: the query embedding is
projected to a ``rank``-dimensional space in which every model has a learned embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import logit

from racer.routers._objective import Params, PenalisedRouter
from racer.routers.base import smoothed_accuracy
from racer.routers.embeddings import Embedder

__all__ = ["MatrixFactorizationRouter"]


def factorised_forward(params: Params, features: np.ndarray):
    """Bilinear logits between projected queries and model embeddings, and the backward."""
    projected = features @ params["projection"]

    def backward(d_logits: np.ndarray) -> Params:
        return {
            "projection": features.T @ (d_logits @ params["model_embeddings"]),
            "model_embeddings": d_logits.T @ projected,
            "model_bias": d_logits.sum(axis=0),
        }

    return projected @ params["model_embeddings"].T + params["model_bias"], backward


class MatrixFactorizationRouter(PenalisedRouter):
    """Scores from a projected query embedding and a learned embedding per model.

    Parameters
    ----------
    rank : int, default=16
        Dimension of the shared query/model space.
    alpha : float or None, default=None
        L2 strength (on the mean log-loss per label cell); None picks one of
        ``alphas`` by cross-validated log-loss on the training data.
    alphas : sequence of float, default=(1e-3, 3e-3, 1e-2)
        Candidates for ``alpha``.
    embedder : str or Embedder, default="tfidf"
        The embedding step (see :class:`~racer.routers.base.EmbeddingRouter`).
    cv : int, default=3
        Folds for choosing ``alpha``.
    max_iter : int, default=300
        Full-batch L-BFGS iterations.
    random_state : int or None, default=0
        Seed of the initial factors and the folds.

    Attributes
    ----------
    alpha_ : float
        The regularisation used.
    params_ : dict of str to numpy.ndarray
        ``projection`` (d, rank), ``model_embeddings`` (M, rank), ``model_bias`` (M,).
    """

    name = "mf"
    forward = staticmethod(factorised_forward)
    penalised = ("projection", "model_embeddings")

    def __init__(
        self,
        rank: int = 16,
        *,
        alpha: float | None = None,
        alphas: Sequence[float] = (1e-3, 3e-3, 1e-2),
        embedder: str | Embedder = "tfidf",
        cv: int = 3,
        max_iter: int = 300,
        random_state: int | None = 0,
    ) -> None:
        self.rank = rank
        self.alpha = alpha
        self.alphas = alphas
        self.embedder = embedder
        self.cv = cv
        self.max_iter = max_iter
        self.random_state = random_state

    def _initial(self, features: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        return {
            "projection": rng.normal(0.0, 0.1, (features.shape[1], self.rank)),
            "model_embeddings": rng.normal(0.0, 0.1, (labels.shape[1], self.rank)),
            "model_bias": logit(smoothed_accuracy(labels)),
        }
