"""The RACER estimator: a scikit-learn style shell over the pure calibration functions.

Importing this module loads neither scikit-learn nor scipy; scipy loads at the first fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from racer import bounds as bounds_module
from racer._params import ParamsMixin, not_fitted_error
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
    CalibrationResult,
    RiskCurve,
    StrictSplit,
    calibrate,
    calibrate_strict,
    priced_threshold,
    upper_bound,
)
from racer.diagnostics import served_rates
from racer.exceptions import InfeasibleCalibrationError
from racer.groups import (
    GROUP_GUARANTEES,
    POOLED,
    SMALL_GROUP_CHOICES,
    GroupRiskTable,
    encode_groups,
    group_delta,
    group_risk_table,
    pool_small_groups,
    small_groups_message,
    too_small,
)
from racer.losses import abstention_mode, is_binary, served_losses, unanswerable
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
STATE_VERSION = 3
FLAG_RATE_WARNING = 0.5


@dataclass(frozen=True)
class GroupCalibration:
    """One group's certificate (per-group calibration).

    Attributes
    ----------
    name : str
        The group (:data:`racer.groups.POOLED` for the pooled small groups).
    n : int
        Its calibration points.
    threshold : float
        Its calibrated lambda.
    abstain_threshold : float or None
        Strict mode: its tau; None otherwise.
    empirical_risk, risk_bound : float
        Its calibration risk and the bound's value at its thresholds.
    delta : float
        The level it was certified at (``delta / G`` with ``group_guarantee="all"``).
    members : tuple of str
        The groups pooled into it (empty for an ordinary group).
    """

    name: str
    n: int
    threshold: float
    abstain_threshold: float | None
    empirical_risk: float
    risk_bound: float
    delta: float
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Certificate:
    """What one calibration (marginal or one group's) returns to the estimator."""

    threshold: float
    abstain_threshold: float | None
    empirical_risk: float
    risk_bound: float
    bound: str
    curve: RiskCurve | None


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

    def _check_params(self, n_models: int) -> tuple[float, float, np.ndarray | None]:
        alpha = check_level("alpha", self.alpha)
        delta = check_level("delta", self.delta)
        check_choice("bound", self.bound, BOUND_CHOICES)
        check_choice("family", self.family, FAMILIES)
        check_choice("abstain_score", self.abstain_score, ABSTAIN_SCORES)
        check_choice("guarantee", self.guarantee, GUARANTEES)
        check_choice("missing", self.missing, MISSING_CHOICES)
        check_choice("group_guarantee", self.group_guarantee, GROUP_GUARANTEES)
        check_choice("small_groups", self.small_groups, SMALL_GROUP_CHOICES)
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
            if name == "abstain_grid_size" and value is None:
                continue
            if not isinstance(value, int | np.integer) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}.")
        if not isinstance(self.refusals, bool | np.bool_):
            raise ValueError(f"refusals must be True or False, got {self.refusals!r}.")
        if self.refusal_cost is not None and not (
            isinstance(self.refusal_cost, int | float | np.number)
            and np.isfinite(self.refusal_cost)
            and self.refusal_cost >= 0
        ):
            raise ValueError(
                f"refusal_cost must be None or a finite number >= 0, got {self.refusal_cost!r}."
            )
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
        """Entry levels of the served family (overwrites ``augmented``)."""
        return entry_levels(
            augmented,
            self.family,
            abstention=mode == "flag",
            refusals=bool(self.refusals),
            costs=self._costs,
            cost_weight=self.cost_weight,
            overwrite=True,
        )

    def _strict_split(self, augmented: np.ndarray, labels: np.ndarray) -> StrictSplit:
        """Strict mode's model entry levels and abstain scores (overwrites ``augmented``)."""
        abstain_column = augmented[:, 0].copy()
        model_entry = entry_levels(
            augmented,
            self.family,
            abstention=False,
            costs=self._costs,
            cost_weight=self.cost_weight,
            overwrite=True,
        )[:, 1:]
        return StrictSplit(model_entry, abstain_column, labels)

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
        names = model_names if model_names is not None else column_names(scores)
        check_model_names(column_names(labels), names)
        score_matrix = check_scores(scores)
        label_matrix = check_labels(labels, score_matrix.shape)
        alpha, delta, self._costs = self._check_params(score_matrix.shape[1])
        mode = abstention_mode(self.abstention)
        group_labels = None if groups is None else np.asarray(groups)
        if group_labels is not None:
            group_names, group_codes = encode_groups(group_labels, len(score_matrix))
        training = self._training_split(mode, train_scores, train_labels, train_abstain_scores)

        if abstain_scores is not None:
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(score_matrix), 0, 1)
        known = _known_rows(label_matrix)
        n_unknown = len(known) - int(np.count_nonzero(known))
        if n_unknown == len(known):
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
            if group_labels is not None:
                group_codes = group_codes[known]
        graded = not is_binary(label_matrix)
        bound = self.bound
        if bound == "auto":
            bound = "wsr" if graded else "binomial"
        augmented = self._augmented(score_matrix, abstain_scores)
        if mode == "strict":
            split: StrictSplit | np.ndarray = self._strict_split(augmented, label_matrix)
        else:
            split = self._entry(augmented, mode)

        def certify(rows: Any, level: float) -> _Certificate:
            return self._certify(
                split, label_matrix, rows, mode, alpha, level, bound, not graded, training
            )

        if group_labels is None:
            certificate = certify(slice(None), delta)
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
            self.groups_, codes = self._certify_groups(
                group_names, group_codes, alpha, delta, bound, certify
            )
            table = list(self.groups_.values())
            self.threshold_ = None
            self.abstain_threshold_ = None
            self.risk_curve_ = None
            self.bound_ = bound
            row_thresholds = np.array([g.threshold for g in table])[codes]
            row_taus = (
                np.array([g.abstain_threshold for g in table], dtype=float)[codes]
                if mode == "strict"
                else None
            )
            counts = np.array([g.n for g in table])
            self.empirical_risk_ = float(
                np.dot(counts, [g.empirical_risk for g in table]) / counts.sum()
            )
            self.risk_bound_ = max(g.risk_bound for g in table)
        self.abstention_mode_ = mode
        self._set_rates(self._calibration_decision(split, row_thresholds, row_taus), label_matrix)
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

    def _training_split(
        self, mode: str, train_scores: Any, train_labels: Any, train_abstain_scores: Any
    ) -> StrictSplit | None:
        """The training split of strict mode's front, checked; None without one."""
        if train_scores is None and train_labels is None:
            return None
        if train_scores is None or train_labels is None:
            raise ValueError("Pass both train_scores and train_labels, or neither.")
        if mode != "strict":
            raise ValueError(
                'train_scores/train_labels build strict mode\'s training front; they are used '
                'only with abstention="strict".'
            )
        score_matrix = check_scores(train_scores, "train_scores")
        label_matrix = check_labels(train_labels, score_matrix.shape)
        if train_abstain_scores is not None:
            train_abstain_scores = check_vector(
                train_abstain_scores, "train_abstain_scores", len(score_matrix), 0, 1
            )
        augmented = self._augmented(score_matrix, train_abstain_scores)
        return self._strict_split(augmented, label_matrix)

    def _certify(
        self,
        split: StrictSplit | np.ndarray,
        labels: np.ndarray,
        rows: Any,
        mode: str,
        alpha: float,
        delta: float,
        bound: str,
        binary: bool,
        training: StrictSplit | None,
    ) -> _Certificate:
        """One certificate on the calibration ``rows`` (all, or one group's)."""
        family_range = lambda_range(self.family, self.cost_weight)
        if isinstance(split, StrictSplit):
            strict = calibrate_strict(
                split.model_entry[rows],
                split.abstain_score[rows],
                labels[rows],
                alpha=alpha,
                delta=delta,
                bound=bound,
                lambda_range=family_range,
                lambda_grid_size=int(self.lambda_grid_size),
                abstain_grid_size=self.abstain_grid_size,
                training=training,
                model_costs=self._costs,
                refusal_cost=self.refusal_cost,
                random_state=self.random_state,
            )
            return _Certificate(
                strict.threshold,
                strict.abstain_threshold,
                strict.empirical_risk,
                strict.risk_bound,
                bound,
                None,
            )
        result = calibrate(
            split[rows],
            labels[rows],
            alpha=alpha,
            delta=delta,
            bound=bound,
            guarantee=self.guarantee,
            abstention=mode == "flag",
            lambda_range=family_range,
            random_state=self.random_state,
            binary=binary,
        )
        if mode == "flag" and self.refusals and self.refusal_cost != 0:
            return self._priced(split[rows], result, delta)
        return _Certificate(
            result.threshold,
            None,
            result.empirical_risk,
            result.risk_bound,
            result.bound,
            result.curve,
        )

    def _priced(self, entry: np.ndarray, result: CalibrationResult, delta: float) -> _Certificate:
        """Flag mode with refusals: the certified lambda of lowest cost, refusals priced
        (:func:`racer.calibration.priced_threshold`)."""
        lam = priced_threshold(
            entry, result.threshold, model_costs=self._costs, refusal_cost=self.refusal_cost
        )
        curve = result.curve
        loss_total = curve.loss_total_at(lam)
        risk_bound = (
            result.risk_bound  # R(lam) <= R(RCPS lambda), so its bound still holds
            if result.bound == "wsr"
            else float(upper_bound(result.bound, loss_total, curve.n, delta))
        )
        return _Certificate(lam, None, loss_total / curve.n, risk_bound, result.bound, curve)

    def _certify_groups(
        self,
        names: tuple[str, ...],
        codes: np.ndarray,
        alpha: float,
        delta: float,
        bound: str,
        certify: Any,
    ) -> tuple[dict[str, GroupCalibration], np.ndarray]:
        """One certificate per group (small groups raised or pooled); rows' group codes."""
        counts = np.bincount(codes, minlength=len(names))
        level = group_delta(delta, len(names), self.group_guarantee)
        bound_name = "crc" if self.guarantee == "expectation" else bound
        needed = bounds_module.n_needed(bound_name, alpha, level)
        small = too_small(counts, needed)
        pooled: tuple[str, ...] = ()
        if small.any():
            if self.small_groups == "raise":
                small_names = [str(name) for name in np.asarray(names)[small]]
                raise InfeasibleCalibrationError(
                    small_groups_message(small_names, counts[small], needed, alpha, level)
                )
            names, codes, pooled = pool_small_groups(names, codes, small)
            counts = np.bincount(codes, minlength=len(names))
            level = group_delta(delta, len(names), self.group_guarantee)
        table: dict[str, GroupCalibration] = {}
        rows_by_group = np.split(np.argsort(codes, kind="stable"), np.cumsum(counts)[:-1])
        for name, rows in zip(names, rows_by_group, strict=True):
            try:
                certificate = certify(rows, level)
            except InfeasibleCalibrationError as error:
                raise InfeasibleCalibrationError(
                    f"Group {name!r} (n={rows.size}): {error}"
                ) from None
            table[name] = GroupCalibration(
                name=name,
                n=int(rows.size),
                threshold=certificate.threshold,
                abstain_threshold=certificate.abstain_threshold,
                empirical_risk=certificate.empirical_risk,
                risk_bound=certificate.risk_bound,
                delta=level,
                members=pooled if name == POOLED else (),
            )
        return table, codes

    def _calibration_decision(
        self, split: StrictSplit | np.ndarray, thresholds: Any, taus: Any
    ) -> np.ndarray:
        """The served decisions of the calibration rows, from their entry levels."""
        if isinstance(split, StrictSplit):
            abstained = split.abstain_score >= taus
            lam = np.reshape(thresholds, (-1, 1)) if np.ndim(thresholds) else thresholds
            models = (split.model_entry <= lam) & ~abstained[:, None]
            return np.column_stack([abstained, models])
        lam = np.reshape(thresholds, (-1, 1)) if np.ndim(thresholds) else thresholds
        return split <= lam

    def _set_rates(self, decision: np.ndarray, labels: np.ndarray) -> None:
        """Set sizes and the served rates (:func:`racer.diagnostics.served_rates`)."""
        invoked = decision[:, 1:]
        self.mean_set_size_ = np.count_nonzero(invoked) / len(decision)
        rates = served_rates(self.abstention_mode_, decision, labels)
        self.flag_rate_ = rates.flag_rate if self.abstention_mode_ == "flag" else None
        self.abstention_rate_ = rates.refusal_rate
        self.refusal_rate_ = rates.refusal_rate
        self.without_right_answer_ = rates.without_right_answer
        self.flag_precision_ = rates.flag_precision
        self.unanswerable_share_ = float(np.mean(unanswerable(labels)))

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

    def _group_thresholds(self, groups: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Each query's lambda (and tau) from its group's certificate."""
        assert self.groups_ is not None
        if groups is None:
            raise ValueError(
                f"This RACER was calibrated per group ({len(self.groups_)} groups); pass "
                "groups=, one group per query, to predict and risk."
            )
        names, codes = encode_groups(groups, n)
        unseen = [name for name in names if name not in self.groups_]
        if unseen and POOLED not in self.groups_:
            raise ValueError(
                f"Groups {unseen} were not seen at fit and there is no pooled certificate to "
                f"serve them (groups seen: {sorted(self.groups_)}). Refit with calibration data "
                "for them, or with small_groups='pool' and at least one small group."
            )
        certificates = [self.groups_.get(name, self.groups_.get(POOLED)) for name in names]
        thresholds = np.array([c.threshold for c in certificates if c is not None])[codes]
        if self.abstention_mode_ != "strict":
            return thresholds, None
        taus = np.array([c.abstain_threshold for c in certificates if c is not None], dtype=float)
        return thresholds, taus[codes]

    def _decision(self, score_matrix: np.ndarray, abstain_scores: Any, groups: Any) -> np.ndarray:
        if self.groups_ is None:
            threshold: Any = self.threshold_
            tau: Any = self.abstain_threshold_
        else:
            threshold, tau = self._group_thresholds(groups, len(score_matrix))
        return served_decision(
            self._augmented(score_matrix, abstain_scores),
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
            abstain_scores = check_vector(abstain_scores, "abstain_scores", len(score_matrix), 0, 1)
        if self.missing == "drop":
            known = _known_rows(label_matrix)
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
            group_labels = group_labels[_known_rows(check_labels(labels, score_matrix.shape))]
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
        "refusal_rate_",
        "without_right_answer_",
        "flag_precision_",
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
            ``"params"`` (hyper-parameters), ``"fitted"`` (learned scalars and the
            per-group certificates) and ``"arrays"`` (the risk curve and costs).
        """
        self._check_fitted()
        params = self.get_params()
        params["costs"] = None
        fitted = {name: getattr(self, name) for name in self._FITTED}
        fitted["groups_"] = (
            None if self.groups_ is None else [asdict(g) for g in self.groups_.values()]
        )
        arrays: dict[str, np.ndarray] = {}
        if self.risk_curve_ is not None:
            arrays["risk_curve_lambdas"] = self.risk_curve_.lambdas
            arrays["risk_curve_loss_totals"] = self.risk_curve_.loss_totals
        if self._costs is not None:
            arrays["costs"] = self._costs
        return {"version": STATE_VERSION, "params": params, "fitted": fitted, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RACER:
        """Rebuild a fitted estimator from :meth:`get_state` output (versions 1 to 3).

        States before version 3 were calibrated with refusals allowed in flag mode; they
        are served without refusals (``refusals=False``), which can only lower the loss.
        """
        version = state.get("version")
        if version not in (1, 2, STATE_VERSION):
            raise ValueError(
                f"Unsupported RACER state version {version!r}; this version of "
                f"racer reads versions 1 to {STATE_VERSION}."
            )
        arrays = state["arrays"]
        params = dict(state["params"])
        costs = arrays.get("costs")
        params["costs"] = None if costs is None else np.asarray(costs, dtype=float)
        estimator = cls(**params)
        estimator._costs = params["costs"]
        fitted = dict(state["fitted"])
        nan = float("nan")
        if version == 1:
            fitted.update(
                abstention_mode_=abstention_mode(params["abstention"]),
                abstain_threshold_=None,
                n_imputed_=0,
                flag_rate_=None,
                abstention_rate_=nan,
                mean_set_size_=nan,
                unanswerable_share_=nan,
            )
        if version in (1, 2):
            fitted.update(
                refusal_rate_=fitted["abstention_rate_"],
                without_right_answer_=nan,
                flag_precision_=nan,
                groups_=None,
            )
        missing = [name for name in (*cls._FITTED, "groups_") if name not in fitted]
        if missing:
            raise ValueError(f"RACER state lacks the fitted values {missing}.")
        for name in cls._FITTED:
            setattr(estimator, name, fitted[name])
        estimator.groups_ = (
            None
            if fitted["groups_"] is None
            else {
                entry["name"]: GroupCalibration(**{**entry, "members": tuple(entry["members"])})
                for entry in fitted["groups_"]
            }
        )
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
