"""The RACER class: parameters, and fit / predict / risk as thin calls.

Each step of a fit lives in its own module of :mod:`racer.estimator`: the inputs checked
once (:mod:`~racer.estimator.inputs`), the hyper-parameters (:mod:`~racer.estimator.params`),
the levels of the calibration points (:mod:`~racer.estimator.levels`), the certificates,
marginal or per group (:mod:`~racer.estimator.certificates`), the diagnostics
(:mod:`~racer.estimator.fit_rates`) and the saved state (:mod:`~racer.estimator.state`).
Importing it loads neither scikit-learn nor scipy; scipy loads at the first fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from racer import bounds as bounds_module
from racer._params import ParamsMixin, not_fitted_error
from racer._validation import (
    check_labels,
    check_level,
    check_model_names,
    check_scores,
    column_names,
)
from racer.estimator.certificates import (
    GroupCalibration,
    certify,
    certify_groups,
    group_thresholds,
)
from racer.estimator.fit_rates import calibration_rates
from racer.estimator.inputs import (
    calibration_inputs,
    checked_abstain_scores,
    known_rows,
    require_abstain_scores,
)
from racer.estimator.levels import calibration_levels, training_split
from racer.estimator.params import check_params
from racer.estimator.state import FITTED, read_state, state_of
from racer.groups import GroupRiskTable, group_risk_table
from racer.losses import served_losses
from racer.sets import augmented_scores, served_decision

FLAG_RATE_WARNING = 0.5


class RACER(ParamsMixin):
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
                 1{0 in C+}; C holds at least the top       answer to a query no model answers
                 model unless ``refusals=True``
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
    lambda_grid_size : int, default=201
        Lambdas in strict abstention's grid (over the family's range).
    abstain_grid_size : int, optional
        Taus in (0, 1] of strict abstention's grid (plus "never abstain"); default 20
        along a training front, 4 without training data
        (:func:`racer.calibration_strict.calibrate_strict`).
    refusals : bool, default=False
        Flag mode only: whether a query may get the abstain flag and no model (a refusal).
        By default it is served the top model with the flag raised instead (see below).
    refusal_cost : float, optional
        What one refusal (a strict abstention, or with ``refusals=True`` a flag without a
        model) costs when choosing among certified configurations, in models (or in
        ``costs`` units when given); default: the cost of calling the query's top model;
        0 counts refusals as free (the smallest certified sets).
    group_guarantee : {"each", "all"}, default="each"
        With ``groups=`` at fit: ``"each"`` gives every group its own
        P(R_g <= alpha) >= 1 - delta; ``"all"`` holds for all groups at once
        (each certified at delta / G, Bonferroni).
    small_groups : {"raise", "pool"}, default="raise"
        Groups with fewer calibration points than the bound needs: raise
        :class:`InfeasibleCalibrationError` naming each with its n and the n it needs, or
        pool them into one group ``"(pooled)"`` with its own certificate, which also
        serves groups unseen at fit.

    Flag mode without refusals serves, when no model clears the threshold, the top model
    with the flag raised. Its loss can only fall: the flag mode's loss is
    ``1{C+ and Y+ disjoint}``, and adding a model to ``C+`` only adds elements, so a set
    disjoint from ``Y+`` after the addition was disjoint before it. The served family (the
    top model's entry level set to ``-inf``, :func:`racer.sets.entry_levels`) is still
    nested, and it is this family's loss that is calibrated, so the certificate is about
    what is served.

    Per-group calibration (Mondrian risk control, METHOD.md section 5d) needs a group that
    is a fixed function of the query (a request field, a tenant, a classifier trained on
    the training split only): within a group calibration and test points stay
    exchangeable, so each group's certificate is the marginal one applied to its rows, and
    depends on no other group's data.

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
    refusal_rate_ : float
        Share of calibration queries on which no model is called (equals
        ``abstention_rate_``).
    without_right_answer_ : float
        Share of calibration queries whose served models hold no good answer.
    flag_precision_ : float
        Flag mode: share of flagged calibration answers without a right answer (NaN when
        nothing is flagged, or in other modes).
    groups_ : dict of str to GroupCalibration or None
        Per-group calibration: each group's thresholds, n, empirical risk and bound; None
        when calibrated marginally (then ``threshold_`` holds; with groups it is None).

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
        abstention: bool | str = True,
        abstain_score: str = "max",
        guarantee: str = "pac",
        costs: Sequence[float] | np.ndarray | None = None,
        cost_weight: float = 1.0,
        random_state: int | None = 0,
        missing: str = "worst_case",
        lambda_grid_size: int = 201,
        abstain_grid_size: int | None = None,
        refusals: bool = False,
        refusal_cost: float | None = None,
        group_guarantee: str = "each",
        small_groups: str = "raise",
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
        self.refusals = refusals
        self.refusal_cost = refusal_cost
        self.group_guarantee = group_guarantee
        self.small_groups = small_groups

    def fit(
        self,
        scores: Any,
        labels: Any,
        *,
        groups: Any = None,
        abstain_scores: Any = None,
        model_names: Sequence[str] | None = None,
        train_scores: Any = None,
        train_labels: Any = None,
        train_abstain_scores: Any = None,
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
        groups : array-like of shape (n,), optional
            Each query's group (compared as strings): one certificate per group
            (``group_guarantee``, ``small_groups``); ``predict`` then needs the groups too.
        abstain_scores : array-like of shape (n,), optional
            Needed with ``abstain_score="given"``.
        model_names : sequence of str, optional
            Column names; also read from data-frame columns.
        train_scores, train_labels : array-like of shape (n_train, M), optional
            Strict mode: scores and labels of a *training* split (never the calibration
            data). The (tau, lambda) pairs are then tested along the training risk-cost
            front by one fixed sequence; without them, by chains over a coarse tau grid.
        train_abstain_scores : array-like of shape (n_train,), optional
            The training split's abstain scores, with ``abstain_score="given"``.

        Returns
        -------
        RACER
            The fitted estimator.

        Raises
        ------
        InfeasibleCalibrationError
            If the guarantee cannot be certified (too few points, a router whose
            largest sets miss too often, or, in strict mode, too many queries that no
            model answers; with groups, the groups concerned); the message says why and
            what would be needed.
        """
        data = calibration_inputs(
            scores,
            labels,
            groups=groups,
            abstain_scores=abstain_scores,
            model_names=model_names,
            missing=self.missing,
        )
        settings = check_params(self, data.scores.shape[1])
        self._costs = settings.costs
        training = training_split(settings, train_scores, train_labels, train_abstain_scores)
        bound = settings.bound_for(data.binary)
        levels = calibration_levels(data, settings)

        def certify_rows(rows: Any, delta: float) -> Any:
            return certify(levels, data.labels, rows, delta, settings, bound, training)

        if data.group_codes is None:
            certificate = certify_rows(slice(None), settings.delta)
            self.groups_: dict[str, GroupCalibration] | None = None
            self.threshold_: float | None = certificate.threshold
            self.abstain_threshold_ = certificate.abstain_threshold
            self.empirical_risk_ = certificate.empirical_risk
            self.risk_bound_ = certificate.risk_bound
            self.risk_curve_ = certificate.curve
            self.bound_ = certificate.bound
            row_thresholds: Any = certificate.threshold
            row_taus: Any = certificate.abstain_threshold
        else:
            assert data.group_names is not None
            self.groups_, codes = certify_groups(
                data.group_names, data.group_codes, settings, bound, certify_rows
            )
            table = list(self.groups_.values())
            self.threshold_ = None
            self.abstain_threshold_ = None
            self.risk_curve_ = None
            self.bound_ = bound
            row_thresholds = np.array([g.threshold for g in table])[codes]
            row_taus = (
                np.array([g.abstain_threshold for g in table], dtype=float)[codes]
                if settings.mode == "strict"
                else None
            )
            counts = np.array([g.n for g in table])
            self.empirical_risk_ = float(
                np.dot(counts, [g.empirical_risk for g in table]) / counts.sum()
            )
            self.risk_bound_ = max(g.risk_bound for g in table)
        self.abstention_mode_ = settings.mode
        fit_rates = calibration_rates(
            settings.mode,
            levels,
            data.labels,
            data.known,
            row_thresholds,
            row_taus,
            never_empty=settings.mode == "off" or not settings.refusals,
        )
        rates = fit_rates.rates
        self.mean_set_size_ = fit_rates.mean_set_size
        self.flag_rate_ = rates.flag_rate if settings.mode == "flag" else None
        self.abstention_rate_ = rates.refusal_rate
        self.refusal_rate_ = rates.refusal_rate
        self.without_right_answer_ = rates.without_right_answer
        self.flag_precision_ = rates.flag_precision
        self.unanswerable_share_ = fit_rates.unanswerable_share
        self.n_calibration_ = len(data.labels)
        self.n_imputed_ = 0 if self.missing == "drop" else data.n_unknown
        self.n_dropped_ = data.n_unknown if self.missing == "drop" else 0
        self.loss_kind_ = "binary" if data.binary else "graded"
        self.n_models_ = data.labels.shape[1]
        self.n_features_in_ = self.n_models_
        self.model_names_ = data.model_names
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

    def _check_fitted(self) -> None:
        if not hasattr(self, "abstention_mode_"):
            raise not_fitted_error(self)

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` has run (scikit-learn's fitted check)."""
        return hasattr(self, "abstention_mode_")

    def _checked_scores(self, scores: Any, model_names: Sequence[str] | None) -> np.ndarray:
        self._check_fitted()
        names = model_names if model_names is not None else column_names(scores)
        check_model_names(self.model_names_, names)
        score_matrix = check_scores(scores)
        if score_matrix.shape[1] != self.n_models_:
            raise ValueError(
                f"scores have {score_matrix.shape[1]} model columns, but RACER was fitted "
                f"on {self.n_models_}."
            )
        return score_matrix

    def thresholds_for(self, n_queries: int, groups: Any = None) -> tuple[Any, Any]:
        """The lambda (and strict mode's tau) that serve each of ``n_queries`` queries.

        A marginal fit: its ``threshold_`` and ``abstain_threshold_`` for every query. A
        per-group fit: each query's group's certificate (the pooled one for a group unseen
        at fit), from ``groups``, one per query.
        """
        self._check_fitted()
        if self.groups_ is None:
            return self.threshold_, self.abstain_threshold_
        return group_thresholds(self.groups_, groups, n_queries, self.abstention_mode_ == "strict")

    def _decision(self, score_matrix: np.ndarray, abstain_scores: Any, groups: Any) -> np.ndarray:
        threshold, tau = self.thresholds_for(len(score_matrix), groups)
        if self.abstain_score == "given":
            require_abstain_scores(self.abstain_score, abstain_scores)
            abstain_scores = checked_abstain_scores(abstain_scores, len(score_matrix))
        return served_decision(
            augmented_scores(score_matrix, self.abstain_score, abstain_scores),
            threshold,
            family=self.family,
            abstention=self.abstention_mode_,
            abstain_threshold=tau,
            refusals=bool(self.refusals),
            costs=self._costs,
            cost_weight=self.cost_weight,
        )

    def _marginal_groups(self, groups: Any) -> Any:
        """``groups`` for a per-group fit; a marginal fit refuses them (no silent mix-up)."""
        if groups is not None and self.groups_ is None:
            raise ValueError(
                "This RACER was calibrated marginally (fit without groups=), so it has no "
                "per-group thresholds; drop groups=, or refit with groups= for per-group "
                "certificates. group_risk() reports per-group risk of a marginal fit."
            )
        return groups

    def predict(
        self,
        scores: Any,
        *,
        groups: Any = None,
        include_abstain: bool = False,
        abstain_scores: Any = None,
        model_names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """The served decision of every query.

        Parameters
        ----------
        scores : array-like of shape (n, M)
            Base-router scores in [0, 1].
        groups : array-like of shape (n,), optional
            Each query's group; required after a per-group fit. A group unseen at fit is
            served by the pooled certificate when there is one, else refused.
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
        decision = self._decision(score_matrix, abstain_scores, self._marginal_groups(groups))
        return decision if include_abstain else decision[:, 1:]

    def served_losses(
        self, scores: Any, labels: Any, *, groups: Any = None, abstain_scores: Any = None
    ) -> np.ndarray:
        """The loss of every query's served decision (the mode's loss).

        Unknown labels count at their worst case. With ``missing="drop"`` rows with an
        unknown label are left out.
        """
        score_matrix = self._checked_scores(scores, None)
        label_matrix = check_labels(labels, score_matrix.shape)
        if abstain_scores is not None:
            abstain_scores = checked_abstain_scores(abstain_scores, len(score_matrix))
        if self.missing == "drop":
            known = known_rows(label_matrix)
            score_matrix, label_matrix = score_matrix[known], label_matrix[known]
            abstain_scores = None if abstain_scores is None else abstain_scores[known]
            groups = None if groups is None else np.asarray(groups, dtype=object)[known]
        decision = self._decision(score_matrix, abstain_scores, groups)
        return served_losses(self.abstention_mode_, decision, label_matrix)

    def risk(
        self, scores: Any, labels: Any, *, groups: Any = None, abstain_scores: Any = None
    ) -> float:
        """Mean loss of the served decisions on labelled queries (the mode's loss).

        Unknown labels follow ``missing``: worst case, or rows left out with ``"drop"``.
        On the calibration data this reproduces ``empirical_risk_``. ``groups`` as in
        :meth:`predict`.
        """
        losses = self.served_losses(
            scores, labels, groups=self._marginal_groups(groups), abstain_scores=abstain_scores
        )
        return float(losses.mean())

    def group_risk(
        self, scores: Any, labels: Any, groups: Any, *, abstain_scores: Any = None
    ) -> GroupRiskTable:
        """Per-group n, risk and above-alpha flag of the served decisions.

        Works after a marginal fit too (the groups then only slice the report), so that
        reports can show per-group risk next to the marginal certificate.
        """
        group_labels = np.asarray(groups, dtype=object)
        losses = self.served_losses(
            scores,
            labels,
            groups=group_labels if self.groups_ is not None else None,
            abstain_scores=abstain_scores,
        )
        if self.missing == "drop":
            score_matrix = check_scores(scores)
            group_labels = group_labels[known_rows(check_labels(labels, score_matrix.shape))]
        return group_risk_table(losses, group_labels, float(self.alpha))

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

    def get_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted estimator, as JSON values and arrays.

        Returns
        -------
        dict
            ``"params"`` (hyper-parameters), ``"fitted"`` (learned scalars and the
            per-group certificates) and ``"arrays"`` (the risk curve and costs).
        """
        self._check_fitted()
        fitted = {name: getattr(self, name) for name in FITTED}
        return state_of(self.get_params(), fitted, self.groups_, self.risk_curve_, self._costs)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RACER:
        """Rebuild a fitted estimator from :meth:`get_state` output (versions 1 to 3).

        States before version 3 were calibrated with refusals allowed in flag mode; they
        are served without refusals (``refusals=False``), which can only lower the loss.
        """
        restored = read_state(state)
        estimator = cls(**restored.params)
        estimator._costs = restored.costs
        for name, value in restored.fitted.items():
            setattr(estimator, name, value)
        estimator.groups_ = restored.groups
        estimator.risk_curve_ = restored.risk_curve
        estimator.n_features_in_ = estimator.n_models_
        return estimator


def minimum_calibration_size(alpha: float, delta: float, bound: str = "binomial") -> int:
    """Smallest calibration size for which a zero-loss largest set can be certified."""
    return bounds_module.n_needed(bound, check_level("alpha", alpha), check_level("delta", delta))
