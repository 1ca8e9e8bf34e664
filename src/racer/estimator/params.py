"""RACER's hyper-parameters, checked once at fit into one settings object.

The estimator stores its parameters unchanged (scikit-learn's contract); :func:`check_params`
validates them when ``fit`` runs and hands the other steps of the fit (levels, certificates,
diagnostics) a frozen :class:`FitSettings` instead of the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from racer._validation import check_choice, check_level, check_vector
from racer.calibration import BOUNDS, GUARANTEES
from racer.groups import GROUP_GUARANTEES, SMALL_GROUP_CHOICES
from racer.losses import abstention_mode
from racer.sets import ABSTAIN_SCORES, FAMILIES

BOUND_CHOICES = ("auto", *BOUNDS)
MISSING_CHOICES = ("worst_case", "drop")


@dataclass(frozen=True)
class FitSettings:
    """The checked hyper-parameters of one fit (see :class:`racer.RACER` for each)."""

    alpha: float
    delta: float
    mode: str
    bound: str
    family: str
    abstain_score: str
    guarantee: str
    costs: np.ndarray | None
    cost_weight: float
    random_state: int | None
    missing: str
    lambda_grid_size: int
    abstain_grid_size: int | None
    refusals: bool
    refusal_cost: float | None
    group_guarantee: str
    small_groups: str

    def bound_for(self, binary: bool) -> str:
        """The bound used: ``"auto"`` is exact binomial for 0/1 labels, WSR for graded."""
        if self.bound == "auto":
            return "binomial" if binary else "wsr"
        return self.bound


def check_params(estimator: Any, n_models: int) -> FitSettings:
    """Validate an estimator's hyper-parameters for ``n_models`` models, or raise.

    Parameters
    ----------
    estimator : racer.RACER
        Read through its public parameters only.
    n_models : int
        Number of model columns (the length ``costs`` must have).

    Returns
    -------
    FitSettings
    """
    alpha = check_level("alpha", estimator.alpha)
    delta = check_level("delta", estimator.delta)
    check_choice("bound", estimator.bound, BOUND_CHOICES)
    check_choice("family", estimator.family, FAMILIES)
    check_choice("abstain_score", estimator.abstain_score, ABSTAIN_SCORES)
    check_choice("guarantee", estimator.guarantee, GUARANTEES)
    check_choice("missing", estimator.missing, MISSING_CHOICES)
    check_choice("group_guarantee", estimator.group_guarantee, GROUP_GUARANTEES)
    check_choice("small_groups", estimator.small_groups, SMALL_GROUP_CHOICES)
    mode = abstention_mode(estimator.abstention)
    if mode == "strict" and estimator.guarantee != "pac":
        raise ValueError(
            'abstention="strict" is certified by Learn-then-Test, a PAC guarantee; use '
            'guarantee="pac" or another abstention mode.'
        )
    if mode == "strict" and estimator.bound == "hoeffding":
        raise ValueError(
            'abstention="strict" takes bound="auto", "binomial", "hb" or "wsr" '
            "(Learn-then-Test p-values); got 'hoeffding'."
        )
    for name in ("lambda_grid_size", "abstain_grid_size"):
        value = getattr(estimator, name)
        if name == "abstain_grid_size" and value is None:
            continue
        if not isinstance(value, int | np.integer) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}.")
    if not isinstance(estimator.refusals, bool | np.bool_):
        raise ValueError(f"refusals must be True or False, got {estimator.refusals!r}.")
    refusal_cost = estimator.refusal_cost
    if refusal_cost is not None and not (
        isinstance(refusal_cost, int | float | np.number)
        and np.isfinite(refusal_cost)
        and refusal_cost >= 0
    ):
        raise ValueError(
            f"refusal_cost must be None or a finite number >= 0, got {refusal_cost!r}."
        )
    costs = None
    if estimator.costs is not None:
        costs = check_vector(estimator.costs, "costs", n_models, 0.0, np.inf)
    elif estimator.family == "cost":
        raise ValueError(
            'family="cost" needs per-model costs: pass RACER(costs=[...]) with one cost '
            "per model, in column order."
        )
    if not np.isfinite(estimator.cost_weight) or estimator.cost_weight < 0:
        raise ValueError(f"cost_weight must be a finite number >= 0, got {estimator.cost_weight}.")
    return FitSettings(
        alpha=alpha,
        delta=delta,
        mode=mode,
        bound=estimator.bound,
        family=estimator.family,
        abstain_score=estimator.abstain_score,
        guarantee=estimator.guarantee,
        costs=costs,
        cost_weight=estimator.cost_weight,
        random_state=estimator.random_state,
        missing=estimator.missing,
        lambda_grid_size=int(estimator.lambda_grid_size),
        abstain_grid_size=estimator.abstain_grid_size,
        refusals=bool(estimator.refusals),
        refusal_cost=refusal_cost,
        group_guarantee=estimator.group_guarantee,
        small_groups=estimator.small_groups,
    )
