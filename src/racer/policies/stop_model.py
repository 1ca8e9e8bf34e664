"""A small saved classifier: L2-regularised logistic regression on standardised features.

:class:`StopModel` is what a learned stop rule (:mod:`racer.policies.learned`) reads
after each tier: the probability that serving the answer so far loses nothing. It is
fitted by damped Newton steps (deterministic: no random start, no sampling) on features
standardised by their training mean and standard deviation, minimising

    sum_i w_i * logloss(y_i, sigmoid(b + x_i . beta)) + l2 / 2 * ||beta||^2

with the intercept ``b`` not penalised (the objective of scikit-learn's
``LogisticRegression(C=1 / l2)`` on the standardised features). Targets may be graded
(in [0, 1]). Its state is JSON (feature names, mean, scale, coefficients, intercept,
format version): no pickle, and every number round-trips exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, log_expit

STOP_MODEL_FORMAT_VERSION = 1
DEFAULT_L2 = 1.0
_MAX_NEWTON = 100
_GRADIENT_TOLERANCE = 1e-10


@dataclass(frozen=True)
class StopModel:
    """A fitted logistic regression on standardised features.

    Attributes
    ----------
    feature_names : tuple of str
        What each feature column is (checked against what a caller computes).
    mean, scale : tuple of float
        Standardisation: ``(x - mean) / scale`` (scale 1 for a constant feature).
    coef : tuple of float
        Coefficients of the standardised features.
    intercept : float
    l2 : float
        The penalty it was fitted with (recorded, not used to predict).
    """

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    l2: float = DEFAULT_L2

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        targets: np.ndarray,
        feature_names: tuple[str, ...] | None = None,
        *,
        l2: float = DEFAULT_L2,
        sample_weight: np.ndarray | None = None,
    ) -> StopModel:
        """Fit on ``features`` (n, F) and targets in [0, 1] (n,).

        A constant target (every row 1, or every row 0) gives zero coefficients and the
        intercept of a shrunk rate ``(sum y + 0.5) / (n + 1)``, where the unpenalised
        optimum would be infinite.

        Examples
        --------
        >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> model = StopModel.fit(x, np.array([0, 0, 1, 1]), ("x",))
        >>> bool(model.predict_proba(np.array([[3.0]]))[0] > 0.5)
        True
        """
        x = np.asarray(features, dtype=float)
        y = np.asarray(targets, dtype=float)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"features must be (n, F) and targets (n,); got {x.shape}, {y.shape}.")
        if x.shape[0] == 0:
            raise ValueError("A stop model needs at least one training row.")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("Stop-model features and targets must be finite.")
        if (y < 0).any() or (y > 1).any():
            raise ValueError("Stop-model targets must lie in [0, 1].")
        if l2 <= 0:
            raise ValueError(f"l2 must be positive, got {l2}.")
        names = feature_names or tuple(f"x{j}" for j in range(x.shape[1]))
        if len(names) != x.shape[1]:
            raise ValueError(f"{len(names)} feature names for {x.shape[1]} features.")
        w = np.ones(y.size) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = (x - mean) / scale
        rate = float(np.sum(w * y) / np.sum(w))
        if rate in (0.0, 1.0):
            shrunk = (np.sum(w * y) + 0.5) / (np.sum(w) + 1.0)
            coef, intercept = np.zeros(x.shape[1]), float(np.log(shrunk / (1.0 - shrunk)))
        else:
            coef, intercept = _newton(z, y, w, l2, float(np.log(rate / (1.0 - rate))))
        return cls(
            tuple(str(n) for n in names),
            tuple(float(v) for v in mean),
            tuple(float(v) for v in scale),
            tuple(float(v) for v in coef),
            float(intercept),
            float(l2),
        )

    def decision(self, features: np.ndarray) -> np.ndarray:
        """The linear score ``b + z . beta`` of features of shape (..., F)."""
        x = np.asarray(features, dtype=float)
        if x.shape[-1] != len(self.coef):
            raise ValueError(
                f"The stop model reads {len(self.coef)} features "
                f"({', '.join(self.feature_names)}); got {x.shape[-1]}."
            )
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef) + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """P(target = 1) for features of shape (..., F); shape (...)."""
        return expit(self.decision(features))

    def state(self) -> dict[str, Any]:
        """JSON-ready state (:meth:`from_state` reads it back exactly)."""
        return {
            "stop_model_format_version": STOP_MODEL_FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "l2": self.l2,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StopModel:
        """The model of :meth:`state`'s dictionary.

        Raises
        ------
        ValueError
            For a state of another format version, or arrays of unequal lengths.
        """
        version = state.get("stop_model_format_version")
        if version != STOP_MODEL_FORMAT_VERSION:
            raise ValueError(
                f"This stop model was saved in format version {version!r}; this version of "
                f"racer reads version {STOP_MODEL_FORMAT_VERSION}. Calibrate the policy again."
            )
        names = tuple(str(n) for n in state["feature_names"])
        arrays = [tuple(float(v) for v in state[key]) for key in ("mean", "scale", "coef")]
        if any(len(a) != len(names) for a in arrays):
            raise ValueError("A stop model's mean, scale and coef need one value per feature.")
        return cls(names, *arrays, float(state["intercept"]), float(state.get("l2", DEFAULT_L2)))

    @property
    def digest(self) -> str:
        """A short digest of the state: equal models, equal digests."""
        text = json.dumps(self.state(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _newton(
    z: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, start: float
) -> tuple[np.ndarray, float]:
    """Penalised logistic regression by damped Newton steps from zero coefficients.

    The objective is strictly convex (the penalty covers the coefficients; the intercept's
    curvature is positive), so Newton's method with step halving converges to its unique
    minimum in a handful of iterations, deterministically.
    """
    x = np.column_stack([z, np.ones(z.shape[0])])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0

    def objective(theta: np.ndarray) -> float:
        s = x @ theta
        loss = -np.sum(w * (y * log_expit(s) + (1.0 - y) * log_expit(-s)))
        return float(loss + 0.5 * np.sum(penalty * theta * theta))

    theta = np.zeros(x.shape[1])
    theta[-1] = start
    value = objective(theta)
    scale = max(float(np.sum(w)), 1.0)
    for _ in range(_MAX_NEWTON):
        p = expit(x @ theta)
        grad = x.T @ (w * (p - y)) + penalty * theta
        if np.max(np.abs(grad)) <= _GRADIENT_TOLERANCE * scale:
            break
        hessian = (x * (w * p * (1.0 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hessian, grad)
        size = 1.0
        # Step halving; the slack absorbs rounding once the minimum is reached.
        while size >= 1e-6:
            candidate = theta - size * step
            new_value = objective(candidate)
            if new_value <= value + 1e-12 * abs(value):
                break
            size /= 2.0
        else:
            break
        theta, value = candidate, new_value
        if np.max(np.abs(size * step)) <= 1e-12:
            break
    return theta[:-1], float(theta[-1])
