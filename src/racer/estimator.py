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
    calibrate_strict,
    is_binary,
)
from racer.losses import abstention_mode, served_losses
from racer.sets import (
    ABSTAIN_SCORES,
    FAMILIES,
    augmented_scores,
    entry_levels,
    lambda_range,
    served_decision,
)

BOUND_CHOICES = ("auto", *BOUNDS)
MISSING_CHOICES = ("worst_case", "drop")
STATE_VERSION = 2
FLAG_RATE_WARNING = 0.5


class RACER(BaseEstimator):
    """Calibrated set-valued routing with a finite-sample risk guarantee.

    Turns any router's per-model scores into a set of models to invoke (possibly empty:
    abstain) such that the risk of what is *served* is at most ``alpha`` with probability
    at least ``1 - delta`` over the calibration draw, with the smallest sets of the chosen
    nested family that keep that promise.

    What is served and the loss that is certified, per ``abstention`` mode (calibration,
    :meth:`risk`, the evaluation, the gateway's feedback and its monitor all use
    :func:`racer.losses.served_losses`):

    ============ ========================================== ===================================
    mode         served                                     loss
    ============ ========================================== ===================================
    ``"flag"``   the answer of C, plus ``abstain_flag`` =    1{C+ and Y+ disjoint}: a flagged
                 1{0 in C+}; an empty C is a refusal        answer to a query no model answers
                                                            is not a misroute
    ``"strict"`` no model called iff ``s_0 >= tau``;         1{abstained and some model good} +
                 otherwise C (at least the top model)       1{not abstained and no invoked
                                                            model good}
    ``False``    C, never empty (the top model always in)   1{some model good and C misses}
    ============ ========================================== ===================================

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
    abstention : {"flag", "strict", True, False}, default=True
        The abstention mode (table above); ``True`` means ``"flag"`` (the paper's
        augmented set). ``"strict"`` calibrates the model threshold lambda and the
        abstain threshold tau jointly by Learn-then-Test on fixed grids
        (:func:`racer.calibration.calibrate_strict`).
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
    missing : {"worst_case", "drop"}, default="worst_case"
        Unknown (NaN) labels. ``"worst_case"`` counts each point at the largest loss over
        all completions of its unknown labels, which keeps the guarantee whatever the
        reason the labels are missing. ``"drop"`` leaves such rows out; the guarantee then
        assumes the labels are missing at random.
    lambda_grid_size, abstain_grid_size : int, default=201, 20
        Grid sizes of strict abstention (lambdas over the family's range; taus in
        (0, 1] plus "never abstain").

    Attributes
    ----------
    abstention_mode_ : {"flag", "strict", "off"}
        The mode served.
    threshold_ : float
        The calibrated lambda.
    abstain_threshold_ : float or None
        Strict mode: the calibrated tau (abstain iff ``s_0 >= tau``); None otherwise.
    empirical_risk_ : float
        Calibration risk at ``threshold_``.
    risk_bound_ : float
        The bound's value at ``threshold_`` (at most ``alpha``).
    bound_ : str
        The bound used (``"crc"`` for the expectation guarantee).
    n_calibration_ : int
        Calibration rows used.
    n_imputed_ : int
        Calibration rows with an unknown label counted at their worst case.
    n_dropped_ : int
        Calibration rows left out because a label was unknown (``missing="drop"``).
    flag_rate_ : float or None
        Flag mode: share of calibration queries whose answer carries the abstain flag.
    abstention_rate_ : float
        Share of calibration queries on which no model is called (strict abstentions,
        or refusals: an empty C in flag mode).
    mean_set_size_ : float
        Mean number of models called per calibration query.
    unanswerable_share_ : float
        Share of calibration queries that no model answers (worst case for unknowns).
    risk_curve_ : RiskCurve or None
        Empirical risk for every lambda (flag and off modes).
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
        missing: str = "worst_case",
        lambda_grid_size: int = 201,
        abstain_grid_size: int = 20,
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
        self.missing = missing
        self.lambda_grid_size = lambda_grid_size
        self.abstain_grid_size = abstain_grid_size

    def _check_params(self, n_models: int) -> tuple[float, float, np.ndarray | None]:
        alpha = check_level("alpha", self.alpha)
        delta = check_level("delta", self.delta)
        check_choice("bound", self.bound, BOUND_CHOICES)
        check_choice("family", self.family, FAMILIES)
        check_choice("abstain_score", self.abstain_score, ABSTAIN_SCORES)
        check_choice("guarantee", self.guarantee, GUARANTEES)
        check_choice("missing", self.missing, MISSING_CHOICES)
        mode = abstention_mode(self.abstention)
        if mode == "strict" and self.guarantee != "pac":
            raise ValueError(
                'abstention="strict" is certified by Learn-then-Test, a PAC guarantee; use '
                'guarantee="pac" or another abstention mode.'
            )
        if mode == "strict" and self.bound == "hoeffding":
            raise ValueError(
                'abstention="strict" takes bound="auto", "binomial", "hb" or "wsr" '
                "(Learn-then-Test p-values); got 'hoeffding'."
            )
        for name in ("lambda_grid_size", "abstain_grid_size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}.")
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

    def _augmented(self, scores: np.ndarray, abstain_scores: Any) -> np.ndarray:
        if self.abstain_score == "given":
            if abstain_scores is None:
                raise ValueError('abstain_score="given" needs abstain_scores=, one per query.')
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(scores), 0, 1)
        return augmented_scores(scores, self.abstain_score, abstain_scores)

    def _entry(self, augmented: np.ndarray, mode: str) -> np.ndarray:
        """Entry levels of the calibrated family (overwrites ``augmented``)."""
        return entry_levels(
            augmented,
            self.family,
            abstention=mode == "flag",
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
        """Calibrate the thresholds on held-out scored and labelled queries.

        Parameters
        ----------
        scores : array-like of shape (n, M)
            Base-router scores in [0, 1] on calibration queries that the router never
            saw in training.
        labels : array-like of shape (n, M)
            1 if the model's answer is acceptable, 0 if not, NaN if unknown; or a graded
            quality in [0, 1]. Unknown labels are handled per ``missing``.
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
            If the guarantee cannot be certified (too few points, a router whose
            largest sets miss too often, or, in strict mode, too many queries that no
            model answers); the message says why and what would be needed.
        """
        names = model_names if model_names is not None else column_names(scores)
        check_model_names(column_names(labels), names)
        score_matrix = check_scores(scores)
        label_matrix = check_labels(labels, score_matrix.shape)
        alpha, delta, self._costs = self._check_params(score_matrix.shape[1])
        mode = abstention_mode(self.abstention)

        if abstain_scores is not None:
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(score_matrix), 0, 1)
        known = _known_rows(label_matrix)
        n_unknown = int((~known).sum())
        if not known.any():
            raise ValueError(
                f"All {len(known)} calibration rows have an unknown (NaN) label; RACER "
                "needs queries whose outcome is known for at least some rows."
            )
        if self.missing == "drop" and n_unknown:
            warnings.warn(
                f"Left out {n_unknown} of {len(known)} calibration rows with an unknown (NaN) "
                'label (missing="drop"): the guarantee now assumes labels are missing at '
                'random. missing="worst_case" (the default) keeps it whatever the reason.',
                UserWarning,
                stacklevel=2,
            )
            score_matrix, label_matrix = score_matrix[known], label_matrix[known]
            abstain_scores = None if abstain_scores is None else abstain_scores[known]
        graded = not is_binary(label_matrix)
        bound = self.bound
        if bound == "auto":
            bound = "wsr" if graded else "binomial"
        augmented = self._augmented(score_matrix, abstain_scores)
        family_range = lambda_range(self.family, self.cost_weight)
        if mode == "strict":
            abstain_column = augmented[:, 0].copy()
            model_entry = entry_levels(
                augmented,
                self.family,
                abstention=False,
                costs=self._costs,
                cost_weight=self.cost_weight,
                overwrite=True,
            )[:, 1:]
            strict = calibrate_strict(
                model_entry,
                abstain_column,
                label_matrix,
                alpha=alpha,
                delta=delta,
                bound=bound,
                lambda_range=family_range,
                lambda_grid_size=int(self.lambda_grid_size),
                abstain_grid_size=int(self.abstain_grid_size),
                random_state=self.random_state,
            )
            self.threshold_ = strict.threshold
            self.abstain_threshold_ = strict.abstain_threshold
            self.empirical_risk_ = strict.empirical_risk
            self.risk_bound_ = strict.risk_bound
            self.bound_ = bound
            self.risk_curve_ = None
            decision = np.column_stack(
                [abstain_column >= strict.abstain_threshold, model_entry <= strict.threshold]
            )
            decision[decision[:, 0], 1:] = False
        else:
            entry = self._entry(augmented, mode)
            result = calibrate(
                entry,
                label_matrix,
                alpha=alpha,
                delta=delta,
                bound=bound,
                guarantee=self.guarantee,
                abstention=mode == "flag",
                lambda_range=family_range,
                random_state=self.random_state,
                binary=not graded,
            )
            self.threshold_ = result.threshold
            self.abstain_threshold_ = None
            self.empirical_risk_ = result.empirical_risk
            self.risk_bound_ = result.risk_bound
            self.bound_ = result.bound
            self.risk_curve_ = result.curve
            decision = entry <= result.threshold
        self.abstention_mode_ = mode
        self._set_rates(decision, label_matrix)
        self.n_calibration_ = len(label_matrix)
        self.n_imputed_ = 0 if self.missing == "drop" else n_unknown
        self.n_dropped_ = n_unknown if self.missing == "drop" else 0
        self.loss_kind_ = "graded" if graded else "binary"
        self.n_models_ = label_matrix.shape[1]
        self.n_features_in_ = self.n_models_
        self.model_names_ = None if names is None else [str(m) for m in names]
        if self.flag_rate_ is not None and self.flag_rate_ > FLAG_RATE_WARNING:
            warnings.warn(
                f"The abstain flag is raised on {self.flag_rate_:.0%} of the calibration "
                f"queries ({self.unanswerable_share_:.1%} of them have no good model): the "
                "certificate mostly rests on flagged answers. Consider abstention='strict', a "
                "higher alpha, or a better abstain score.",
                UserWarning,
                stacklevel=2,
            )
        return self

    def _set_rates(self, decision: np.ndarray, labels: np.ndarray) -> None:
        """Flag, abstention and set-size rates of the calibration decisions."""
        invoked = decision[:, 1:]
        self.mean_set_size_ = float(invoked.sum(axis=1).mean())
        if self.abstention_mode_ == "flag":
            self.flag_rate_ = float(np.mean(decision[:, 0] & invoked.any(axis=1)))
        else:
            self.flag_rate_ = None
        self.abstention_rate_ = float(np.mean(~invoked.any(axis=1)))
        self.unanswerable_share_ = float(np.mean(~np.any(np.nan_to_num(labels) > 0, axis=1)))

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

    def _decision(self, score_matrix: np.ndarray, abstain_scores: Any) -> np.ndarray:
        return served_decision(
            self._augmented(score_matrix, abstain_scores),
            self.threshold_,
            family=self.family,
            abstention=self.abstention_mode_,
            abstain_threshold=self.abstain_threshold_,
            costs=self._costs,
            cost_weight=self.cost_weight,
        )

    def predict(
        self,
        scores: Any,
        *,
        include_abstain: bool = False,
        abstain_scores: Any = None,
        model_names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """The served decision of every query.

        Parameters
        ----------
        scores : array-like of shape (n, M)
            Base-router scores in [0, 1].
        include_abstain : bool, default=False
            Also return column 0: the abstain flag (``"flag"``), the abstain decision
            (``"strict"``: such rows call no model), always False (off).
        abstain_scores : array-like of shape (n,), optional
            Needed with ``abstain_score="given"``.
        model_names : sequence of str, optional
            Checked against the names seen at fit.

        Returns
        -------
        numpy.ndarray of bool, shape (n, M) or (n, M + 1)
            The models to invoke; an all-False row means no model is called.
        """
        score_matrix = self._checked_scores(scores, model_names)
        decision = self._decision(score_matrix, abstain_scores)
        return decision if include_abstain else decision[:, 1:]

    def risk(self, scores: Any, labels: Any, *, abstain_scores: Any = None) -> float:
        """Mean loss of the served decisions on labelled queries (the mode's loss).

        Unknown labels follow ``missing``: worst case, or rows left out with ``"drop"``.
        On the calibration data this reproduces ``empirical_risk_``.
        """
        score_matrix = self._checked_scores(scores, None)
        label_matrix = check_labels(labels, score_matrix.shape)
        if abstain_scores is not None:
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(score_matrix), 0, 1)
        if self.missing == "drop":
            known = _known_rows(label_matrix)
            score_matrix, label_matrix = score_matrix[known], label_matrix[known]
            abstain_scores = None if abstain_scores is None else abstain_scores[known]
        decision = self._decision(score_matrix, abstain_scores)
        return float(served_losses(self.abstention_mode_, decision, label_matrix).mean())

    def score(self, scores: Any, labels: Any, *, abstain_scores: Any = None) -> float:
        """``1 - risk``: the share of queries served without a loss (higher is better).

        For scikit-learn's model-selection tools. Lower risk usually means larger sets,
        so tune on it with a cost constraint in mind, and never on the calibration split.
        """
        return 1.0 - self.risk(scores, labels, abstain_scores=abstain_scores)

    def __sklearn_tags__(self) -> Any:
        """RACER's inputs: scores in [0, 1] (no NaN) and a 2-D label matrix."""
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.two_d_labels = True
        tags.target_tags.single_output = False
        tags.target_tags.multi_output = True
        tags.input_tags.positive_only = True
        tags.input_tags.allow_nan = False
        return tags

    _FITTED = (
        "abstention_mode_",
        "threshold_",
        "abstain_threshold_",
        "empirical_risk_",
        "risk_bound_",
        "bound_",
        "n_calibration_",
        "n_imputed_",
        "n_dropped_",
        "flag_rate_",
        "abstention_rate_",
        "mean_set_size_",
        "unanswerable_share_",
        "loss_kind_",
        "n_models_",
        "model_names_",
    )

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
        fitted = {name: getattr(self, name) for name in self._FITTED}
        arrays: dict[str, np.ndarray] = {}
        if self.risk_curve_ is not None:
            arrays["risk_curve_lambdas"] = self.risk_curve_.lambdas
            arrays["risk_curve_loss_totals"] = self.risk_curve_.loss_totals
        if self._costs is not None:
            arrays["costs"] = self._costs
        return {"version": STATE_VERSION, "params": params, "fitted": fitted, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RACER:
        """Rebuild a fitted estimator from :meth:`get_state` output (versions 1 and 2)."""
        version = state.get("version")
        if version not in (1, STATE_VERSION):
            raise ValueError(
                f"Unsupported RACER state version {version!r}; this version of "
                f"racer reads versions 1 and {STATE_VERSION}."
            )
        arrays = state["arrays"]
        params = dict(state["params"])
        costs = arrays.get("costs")
        params["costs"] = None if costs is None else np.asarray(costs, dtype=float)
        estimator = cls(**params)
        estimator._costs = params["costs"]
        fitted = dict(state["fitted"])
        if version == 1:
            fitted.update(
                abstention_mode_=abstention_mode(params["abstention"]),
                abstain_threshold_=None,
                n_imputed_=0,
                flag_rate_=None,
                abstention_rate_=float("nan"),
                mean_set_size_=float("nan"),
                unanswerable_share_=float("nan"),
            )
        missing = [name for name in cls._FITTED if name not in fitted]
        if missing:
            raise ValueError(f"RACER state lacks the fitted values {missing}.")
        for name in cls._FITTED:
            setattr(estimator, name, fitted[name])
        abstention_mode(estimator.abstention_mode_)
        estimator.n_features_in_ = estimator.n_models_
        estimator.risk_curve_ = None
        if "risk_curve_lambdas" in arrays:
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
