"""Fitting small differentiable scorers by full-batch L-BFGS on a masked log-loss.

The logistic, MLP and matrix-factorisation routers share this: each gives a forward
function that returns per-(query, model) logits and a backward function; unknown
(NaN) labels contribute nothing to the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from threadpoolctl import threadpool_limits

from racer.routers.base import EmbeddingRouter, cross_validated_choice, fixed_or_grid

__all__ = ["Forward", "Params", "PenalisedRouter", "fit_masked_log_loss"]

Params = dict[str, np.ndarray]
Backward = Callable[[np.ndarray], Params]
Forward = Callable[[Params, np.ndarray], tuple[np.ndarray, Backward]]


def fit_masked_log_loss(
    forward: Forward,
    initial: Params,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    alpha: float,
    penalised: tuple[str, ...],
    max_iter: int,
) -> Params:
    """Minimise the mean log-loss over known labels plus ``alpha / 2 * ||W||^2``.

    Parameters
    ----------
    forward : callable
        ``forward(params, features) -> (logits (n, M), backward)`` with
        ``backward(d_logits) -> gradients`` (same keys as ``params``).
    initial : dict of str to numpy.ndarray
        Starting parameters.
    features : numpy.ndarray of shape (n, d)
    labels : numpy.ndarray of shape (n, M)
        0/1 with NaN for unknown.
    alpha : float
        L2 strength on the parameters named in ``penalised`` (biases are not).
    penalised : tuple of str
        Parameter names that get the L2 penalty.
    max_iter : int
        L-BFGS iterations.

    Returns
    -------
    dict of str to numpy.ndarray
        The fitted parameters.
    """
    known = ~np.isnan(labels)
    targets = np.where(known, labels, 0.0)
    n_known = max(int(known.sum()), 1)
    names = list(initial)
    shapes = [initial[name].shape for name in names]
    splits = np.cumsum([int(np.prod(shape)) for shape in shapes])[:-1]

    def unflatten(flat: np.ndarray) -> Params:
        parts = np.split(flat, splits)
        return {n: p.reshape(s) for n, p, s in zip(names, parts, shapes, strict=True)}

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        params = unflatten(flat)
        logits, backward = forward(params, features)
        loss = np.sum(known * (np.logaddexp(0.0, logits) - targets * logits)) / n_known
        gradients = backward(known * (expit(logits) - targets) / n_known)
        for name in penalised:
            loss += 0.5 * alpha * float(np.sum(params[name] ** 2))
            gradients[name] = gradients[name] + alpha * params[name]
        return float(loss), np.concatenate([gradients[name].ravel() for name in names])

    start = np.concatenate([initial[name].ravel() for name in names]).astype(float)
    with threadpool_limits(limits=1, user_api="blas"):  # small products: threads only contend
        result = minimize(
            objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter}
        )
    return unflatten(result.x)


class PenalisedRouter(EmbeddingRouter):
    """An embedding router fitted by :func:`fit_masked_log_loss`, ``alpha`` tuned by CV.

    Subclasses set ``forward`` (a :data:`Forward`), ``penalised`` (weight names) and
    implement ``_initial(features, labels, rng)``; they take the constructor
    parameters ``alpha``, ``alphas``, ``cv``, ``max_iter`` and ``random_state``.
    """

    forward: Forward
    penalised: tuple[str, ...]
    alpha: float | None
    alphas: Sequence[float]
    cv: int
    max_iter: int
    random_state: int | None

    def _initial(self, features: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        raise NotImplementedError

    def _fit_params(self, features: np.ndarray, labels: np.ndarray, alpha: float) -> Params:
        initial = self._initial(features, labels, np.random.default_rng(self.random_state))
        return fit_masked_log_loss(
            self.forward,
            initial,
            features,
            labels,
            alpha=alpha,
            penalised=self.penalised,
            max_iter=self.max_iter,
        )

    def _fit_embeddings(self, features: np.ndarray, labels: np.ndarray) -> None:
        def fit_fold(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray):
            def predict(alpha: float) -> np.ndarray:
                return expit(self.forward(self._fit_params(train_x, train_y, alpha), test_x)[0])

            return predict

        best, self.cv_losses_ = cross_validated_choice(
            fixed_or_grid(self.alpha, self.alphas),
            fit_fold,
            features,
            labels,
            n_splits=self.cv,
            random_state=self.random_state,
        )
        self.alpha_ = float(best)
        self.params_ = self._fit_params(features, labels, self.alpha_)

    def _predict_embeddings(self, features: np.ndarray) -> np.ndarray:
        return expit(self.forward(self.params_, features)[0])

    def _fitted_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "params": dict(self.params_)}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.alpha_ = float(state["alpha"])
        self.params_ = {k: np.asarray(v, dtype=float) for k, v in state["params"].items()}
