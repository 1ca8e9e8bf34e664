"""The RACER estimator: a scikit-learn style shell over the pure calibration functions."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from racer import bounds as bounds_module
from racer._validation import (
    check_choice,
    check_labels,
    check_level,
    check_model_names,
    check_scores,
    check_vector,
    column_names,
)
from racer.calibration import (
    BOUNDS,
    GUARANTEES,
    RiskCurve,
    calibrate,
    is_binary,
    point_losses,
)
from racer.sets import ABSTAIN_SCORES, FAMILIES, augmented_scores, entry_levels, lambda_range

BOUND_CHOICES = ("auto", *BOUNDS)
STATE_VERSION = 1


class RACER(BaseEstimator):
    """Calibrated set-valued routing with a finite-sample risk guarantee.

    Turns any router's per-model scores into a set of models to invoke (possibly empty:
    abstain) such that the misrouting risk is at most ``alpha`` with probability at
    least ``1 - delta`` over the calibration draw, with the smallest sets of the chosen
    nested family that keep that promise.

    Parameters
    ----------
    alpha : float, default=0.1
        Target misrouting risk, in (0, 1).
    delta : float, default=0.1
        Allowed probability that the calibration fails the promise, in (0, 1).
    bound : {"auto", "binomial", "hb", "hoeffding", "wsr"}, default="auto"
        Upper confidence bound. ``"auto"``: exact binomial for 0/1 labels,
        Waudby-Smith-Ramdas for graded labels. ``"binomial"`` and ``"hb"`` need 0/1
        labels.
    family : {"threshold", "cumulative", "cost"}, default="threshold"
        Nested set family (see :func:`racer.sets.entry_levels`).
    abstention : bool, default=True
        Allow the empty set (abstain). When False every set holds at least the top model
        and queries that no model answers are not counted as misroutes.
    abstain_score : {"max", "product", "given"}, default="max"
        Score of the abstain option: ``1 - max s``, ``prod(1 - s)``, or a column passed
        as ``abstain_scores=`` to ``fit`` and ``predict``.
    guarantee : {"pac", "expectation"}, default="pac"
        ``"pac"``: P(risk <= alpha) >= 1 - delta. ``"expectation"``: conformal risk
        control, E[risk] <= alpha (``delta`` unused).
    costs : array-like of shape (M,), optional
        Per-model cost (dollars per query); required by ``family="cost"``.
    cost_weight : float, default=1.0
        How strongly the ``"cost"`` family penalises expensive models.
    random_state : int or None, default=0
        Seed of the order of the WSR wealth process.

    Attributes
    ----------
    threshold_ : float
        The calibrated lambda.
    empirical_risk_ : float
        Calibration risk at ``threshold_``.
    risk_bound_ : float
        The bound's value at ``threshold_`` (at most ``alpha``).
    bound_ : str
        The bound used (``"crc"`` for the expectation guarantee).
    n_calibration_ : int
        Calibration rows used.
    n_dropped_ : int
        Calibration rows left out because a label was unknown (NaN).
    risk_curve_ : RiskCurve
        Empirical risk for every lambda.
    loss_kind_ : {"binary", "graded"}
        Whether the labels were 0/1 or graded.
    n_models_ : int
        Number of candidate models M.
    model_names_ : list of str or None
        Model names seen at fit, if any.

    Examples
    --------
    >>> import numpy as np
    >>> from racer import RACER
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.uniform(size=(1000, 3))
    >>> labels = (rng.uniform(size=(1000, 3)) < scores).astype(float)
    >>> router = RACER(alpha=0.1, delta=0.1).fit(scores, labels)
    >>> mask = router.predict(scores[:5])
    >>> mask.shape
    (5, 3)
    >>> bool(router.risk_bound_ <= 0.1)
    True
    """

    def __init__(
        self,
        alpha: float = 0.1,
        delta: float = 0.1,
        *,
        bound: str = "auto",
        family: str = "threshold",
        abstention: bool = True,
        abstain_score: str = "max",
        guarantee: str = "pac",
        costs: Sequence[float] | np.ndarray | None = None,
        cost_weight: float = 1.0,
        random_state: int | None = 0,
    ) -> None:
        self.alpha = alpha
        self.delta = delta
        self.bound = bound
        self.family = family
        self.abstention = abstention
        self.abstain_score = abstain_score
        self.guarantee = guarantee
        self.costs = costs
        self.cost_weight = cost_weight
        self.random_state = random_state

    def _check_params(self, n_models: int) -> tuple[float, float, np.ndarray | None]:
        alpha = check_level("alpha", self.alpha)
        delta = check_level("delta", self.delta)
        check_choice("bound", self.bound, BOUND_CHOICES)
        check_choice("family", self.family, FAMILIES)
        check_choice("abstain_score", self.abstain_score, ABSTAIN_SCORES)
        check_choice("guarantee", self.guarantee, GUARANTEES)
        costs = None
        if self.costs is not None:
            costs = check_vector(self.costs, "costs", n_models, 0.0, np.inf)
        elif self.family == "cost":
            raise ValueError(
                'family="cost" needs per-model costs: pass RACER(costs=[...]) with one cost '
                "per model, in column order."
            )
        if not np.isfinite(self.cost_weight) or self.cost_weight < 0:
            raise ValueError(f"cost_weight must be a finite number >= 0, got {self.cost_weight}.")
        return alpha, delta, costs

    def _entry(self, scores: np.ndarray, abstain_scores: Any) -> np.ndarray:
        if self.abstain_score == "given":
            if abstain_scores is None:
                raise ValueError('abstain_score="given" needs abstain_scores=, one per query.')
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(scores), 0, 1)
        augmented = augmented_scores(scores, self.abstain_score, abstain_scores)
        return entry_levels(
            augmented,
            self.family,
            abstention=self.abstention,
            costs=self._costs,
            cost_weight=self.cost_weight,
            overwrite=True,
        )

    def fit(
        self,
        scores: Any,
        labels: Any,
        *,
        abstain_scores: Any = None,
        model_names: Sequence[str] | None = None,
    ) -> RACER:
        """Calibrate the threshold on held-out scored and labelled queries.

        Parameters
        ----------
        scores : array-like of shape (n, M)
            Base-router scores in [0, 1] on calibration queries that the router never
            saw in training.
        labels : array-like of shape (n, M)
            1 if the model's answer is acceptable, 0 if not, NaN if unknown; or a graded
            quality in [0, 1]. Rows with an unknown label are left out (with a warning).
        abstain_scores : array-like of shape (n,), optional
            Needed with ``abstain_score="given"``.
        model_names : sequence of str, optional
            Column names; also read from data-frame columns.

        Returns
        -------
        RACER
            The fitted estimator.

        Raises
        ------
        InfeasibleCalibrationError
            If the guarantee cannot be certified (too few points, or a router whose
            largest sets miss too often); the message gives the n needed.
        """
        names = model_names if model_names is not None else column_names(scores)
        check_model_names(column_names(labels), names)
        score_matrix = check_scores(scores)
        label_matrix = check_labels(labels, score_matrix.shape)
        alpha, delta, self._costs = self._check_params(score_matrix.shape[1])

        if abstain_scores is not None:
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(score_matrix), 0, 1)
        known = _known_rows(label_matrix)
        if not known.any():
            raise ValueError(
                f"All {len(known)} calibration rows have an unknown (NaN) label; RACER "
                "needs queries whose outcome is known for every model."
            )
        if not known.all():
            warnings.warn(
                f"Left out {int((~known).sum())} of {len(known)} calibration rows with an "
                "unknown (NaN) label; the guarantee covers queries like the remaining ones.",
                UserWarning,
                stacklevel=2,
            )
            score_matrix, label_matrix = score_matrix[known], label_matrix[known]
            abstain_scores = None if abstain_scores is None else abstain_scores[known]
        graded = not is_binary(label_matrix)
        bound = self.bound
        if bound == "auto":
            bound = "wsr" if graded else "binomial"
        entry = self._entry(score_matrix, abstain_scores)
        result = calibrate(
            entry,
            label_matrix,
            alpha=alpha,
            delta=delta,
            bound=bound,
            guarantee=self.guarantee,
            abstention=self.abstention,
            lambda_range=lambda_range(self.family, self.cost_weight),
            random_state=self.random_state,
            binary=not graded,
        )
        self.threshold_ = result.threshold
        self.empirical_risk_ = result.empirical_risk
        self.risk_bound_ = result.risk_bound
        self.bound_ = result.bound
        self.risk_curve_ = result.curve
        self.n_calibration_ = int(known.sum())
        self.n_dropped_ = int((~known).sum())
        self.loss_kind_ = "graded" if graded else "binary"
        self.n_models_ = label_matrix.shape[1]
        self.n_features_in_ = self.n_models_
        self.model_names_ = None if names is None else [str(m) for m in names]
        return self

    def _checked_scores(self, scores: Any, model_names: Sequence[str] | None) -> np.ndarray:
        check_is_fitted(self, "threshold_")
        names = model_names if model_names is not None else column_names(scores)
        check_model_names(self.model_names_, names)
        score_matrix = check_scores(scores)
        if score_matrix.shape[1] != self.n_models_:
            raise ValueError(
                f"scores have {score_matrix.shape[1]} model columns, but RACER was fitted "
                f"on {self.n_models_}."
            )
        return score_matrix

    def predict(
        self,
        scores: Any,
        *,
        include_abstain: bool = False,
        abstain_scores: Any = None,
        model_names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """The calibrated set of every query.

        Parameters
        ----------
        scores : array-like of shape (n, M)
            Base-router scores in [0, 1].
        include_abstain : bool, default=False
            Also return the abstain option as column 0.
        abstain_scores : array-like of shape (n,), optional
            Needed with ``abstain_score="given"``.
        model_names : sequence of str, optional
            Checked against the names seen at fit.

        Returns
        -------
        numpy.ndarray of bool, shape (n, M) or (n, M + 1)
            The models to invoke; an all-False row means abstain.
        """
        score_matrix = self._checked_scores(scores, model_names)
        augmented_mask = self._entry(score_matrix, abstain_scores) <= self.threshold_
        return augmented_mask if include_abstain else augmented_mask[:, 1:]

    def risk(self, scores: Any, labels: Any, *, abstain_scores: Any = None) -> float:
        """Mean misrouting loss of the calibrated sets on labelled queries (NaN rows left out)."""
        score_matrix = self._checked_scores(scores, None)
        label_matrix = check_labels(labels, score_matrix.shape)
        known = _known_rows(label_matrix)
        if abstain_scores is not None:
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(known), 0, 1)[known]
        entry = self._entry(score_matrix[known], abstain_scores)
        losses = point_losses(entry, label_matrix[known], self.threshold_, self.abstention)
        return float(losses.mean())

    def get_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted estimator, as JSON values and arrays.

        Returns
        -------
        dict
            ``"params"`` (hyper-parameters), ``"fitted"`` (learned scalars) and
            ``"arrays"`` (the risk curve and costs as numpy arrays).
        """
        check_is_fitted(self, "threshold_")
        params = self.get_params()
        params["costs"] = None
        fitted = {
            "threshold_": self.threshold_,
            "empirical_risk_": self.empirical_risk_,
            "risk_bound_": self.risk_bound_,
            "bound_": self.bound_,
            "n_calibration_": self.n_calibration_,
            "n_dropped_": self.n_dropped_,
            "loss_kind_": self.loss_kind_,
            "n_models_": self.n_models_,
            "model_names_": self.model_names_,
        }
        arrays = {
            "risk_curve_lambdas": self.risk_curve_.lambdas,
            "risk_curve_loss_totals": self.risk_curve_.loss_totals,
        }
        if self._costs is not None:
            arrays["costs"] = self._costs
        return {"version": STATE_VERSION, "params": params, "fitted": fitted, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RACER:
        """Rebuild a fitted estimator from :meth:`get_state` output."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"Unsupported RACER state version {state.get('version')!r}; this version of "
                f"racer reads version {STATE_VERSION}."
            )
        arrays = state["arrays"]
        params = dict(state["params"])
        costs = arrays.get("costs")
        params["costs"] = None if costs is None else np.asarray(costs, dtype=float)
        estimator = cls(**params)
        estimator._costs = params["costs"]
        for name, value in state["fitted"].items():
            setattr(estimator, name, value)
        estimator.n_features_in_ = estimator.n_models_
        estimator.risk_curve_ = RiskCurve(
            lambdas=np.asarray(arrays["risk_curve_lambdas"], dtype=float),
            loss_totals=np.asarray(arrays["risk_curve_loss_totals"]),
            n=estimator.n_calibration_,
            binary=estimator.loss_kind_ == "binary",
        )
        return estimator


def _known_rows(labels: np.ndarray) -> np.ndarray:
    """Rows whose every label is known (one NaN-propagating sum first: no per-row pass
    unless some label is NaN)."""
    if not np.isnan(np.sum(labels)):
        return np.ones(len(labels), dtype=bool)
    return ~np.isnan(labels).any(axis=1)


def minimum_calibration_size(alpha: float, delta: float, bound: str = "binomial") -> int:
    """Smallest calibration size for which a zero-loss largest set can be certified."""
    return bounds_module.n_needed(bound, check_level("alpha", alpha), check_level("delta", delta))
