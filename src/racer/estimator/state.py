"""A fitted RACER as JSON values and numpy arrays (no pickle), and back.

:meth:`racer.RACER.get_state` and :meth:`racer.RACER.from_state` are thin calls to
:func:`state_of` and :func:`read_state`; the artifact (:mod:`racer.artifact`) stores the
result as JSON plus arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from racer.calibration import RiskCurve
from racer.estimator.certificates import GroupCalibration
from racer.losses import abstention_mode

STATE_VERSION = 3
#: The learned scalars a state carries (besides the per-group certificates).
FITTED = (
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


def state_of(
    params: dict[str, Any],
    fitted: dict[str, Any],
    groups: dict[str, GroupCalibration] | None,
    risk_curve: RiskCurve | None,
    costs: np.ndarray | None,
) -> dict[str, Any]:
    """The state of a fitted estimator: ``"params"``, ``"fitted"`` and ``"arrays"``.

    Parameters
    ----------
    params : dict
        The hyper-parameters (``costs`` travels as an array).
    fitted : dict
        The values of :data:`FITTED`.
    groups : dict of str to GroupCalibration or None
        The per-group certificates.
    risk_curve : RiskCurve or None
        The calibration risk curve.
    costs : numpy.ndarray or None
        The checked per-model costs.
    """
    params = {**params, "costs": None}
    fitted = {**fitted, "groups_": None if groups is None else [asdict(g) for g in groups.values()]}
    arrays: dict[str, np.ndarray] = {}
    if risk_curve is not None:
        arrays["risk_curve_lambdas"] = risk_curve.lambdas
        arrays["risk_curve_loss_totals"] = risk_curve.loss_totals
    if costs is not None:
        arrays["costs"] = costs
    return {"version": STATE_VERSION, "params": params, "fitted": fitted, "arrays": arrays}


@dataclass(frozen=True)
class RestoredState:
    """What :func:`read_state` gives back to rebuild an estimator."""

    params: dict[str, Any]
    fitted: dict[str, Any]
    groups: dict[str, GroupCalibration] | None
    risk_curve: RiskCurve | None
    costs: np.ndarray | None


def read_state(state: dict[str, Any]) -> RestoredState:
    """Read a state of versions 1 to :data:`STATE_VERSION`, or raise.

    States before version 3 were calibrated with refusals allowed in flag mode; they are
    served without refusals (``refusals=False``), which can only lower the loss.
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
    missing = [name for name in (*FITTED, "groups_") if name not in fitted]
    if missing:
        raise ValueError(f"RACER state lacks the fitted values {missing}.")
    abstention_mode(fitted["abstention_mode_"])
    groups = (
        None
        if fitted["groups_"] is None
        else {
            entry["name"]: GroupCalibration(**{**entry, "members": tuple(entry["members"])})
            for entry in fitted["groups_"]
        }
    )
    risk_curve = None
    if "risk_curve_lambdas" in arrays:
        risk_curve = RiskCurve(
            lambdas=np.asarray(arrays["risk_curve_lambdas"], dtype=float),
            loss_totals=np.asarray(arrays["risk_curve_loss_totals"]),
            n=fitted["n_calibration_"],
            binary=fitted["loss_kind_"] == "binary",
        )
    return RestoredState(
        params=params,
        fitted={name: fitted[name] for name in FITTED},
        groups=groups,
        risk_curve=risk_curve,
        costs=params["costs"],
    )
