"""The methods an evaluation compares, each as entry levels plus a rule for lambda.

Every method, RACER or baseline, is a nested family of augmented sets written as
entry levels (:mod:`racer.sets`: the set at lambda is ``{k : entry[k] <= lambda}``,
column 0 = abstain) and a rule that picks lambda from calibration data:

- ``"pac"``: RACER, the largest loss count its upper bound accepts (RCPS);
- ``"crc"``: conformal risk control (expectation guarantee);
- ``"conformal"``: split-conformal sets without abstention, calibrated on the queries
  some model answers, at coverage ``1 - alpha``;
- ``"empirical"``: the uncorrected threshold, empirical calibration risk <= alpha;
- ``"hindsight"``: the oracle, the same rule on the *test* rows (not deployable);
- ``"fixed"``: no calibration (top-1, top-k, all models, one model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from racer.calibration import loss_breakpoints
from racer.sets import augmented_scores, entry_levels

RULES = ("pac", "crc", "conformal", "empirical", "hindsight", "fixed")
FAMILY_LABELS = {"threshold": "threshold", "cumulative": "cumulative (APS)", "cost": "cost-aware"}


@dataclass(frozen=True, eq=False)
class Method:
    """One way of choosing a set of models per query.

    Attributes
    ----------
    name : str
        A unique, human-readable name ("RACER binomial threshold", "top-1 router").
    group : str
        "racer", "baseline", "single" (one model) or "oracle".
    rule : str
        How lambda is chosen (one of :data:`RULES`).
    entry : numpy.ndarray, shape (N, M + 1)
        Entry levels over the pool; column 0 is abstain.
    calibration_breakpoints : numpy.ndarray, shape (N,)
        Each pool query's loss breakpoint as the calibration rule sees it.
    evaluation_breakpoints : numpy.ndarray, shape (N,)
        The misrouting loss breakpoints of racer/method.md section 3 (abstention counts).
    family : str
        The set family.
    bound : str or None
        The PAC bound (rule "pac" only).
    fixed_lambda : float
        The lambda of a "fixed" method.
    cost_weight : float
        Trade-off of the "cost" family (it sets the family's lambda range).
    """

    name: str
    group: str
    rule: str
    entry: np.ndarray
    calibration_breakpoints: np.ndarray
    evaluation_breakpoints: np.ndarray
    family: str = "threshold"
    bound: str | None = None
    fixed_lambda: float = 0.0
    cost_weight: float = 1.0


def _breakpoints(
    entry: np.ndarray, labels: np.ndarray, abstention: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, evaluation) loss breakpoints; they differ only for sets that cannot abstain."""
    evaluation = loss_breakpoints(entry, labels, True)
    return (evaluation if abstention else loss_breakpoints(entry, labels, False)), evaluation


def _method(
    name: str,
    group: str,
    rule: str,
    entry: np.ndarray,
    breakpoints: tuple[np.ndarray, np.ndarray],
    **details: object,
) -> Method:
    return Method(
        name=name,
        group=group,
        rule=rule,
        entry=entry,
        calibration_breakpoints=breakpoints[0],
        evaluation_breakpoints=breakpoints[1],
        **details,  # type: ignore[arg-type]
    )


def _rank_entry(scores: np.ndarray) -> np.ndarray:
    """Entry level = rank of the model by score (0 = top, ties by index); never abstain."""
    order = np.argsort(-scores, axis=1, kind="stable")
    entry = np.empty((scores.shape[0], scores.shape[1] + 1))
    np.put_along_axis(entry[:, 1:], order, np.arange(scores.shape[1], dtype=float)[None, :], 1)
    entry[:, 0] = np.inf
    return entry


def racer_methods(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    families: tuple[str, ...] = ("threshold", "cumulative"),
    bounds: tuple[str, ...] = ("binomial",),
    model_costs: np.ndarray | None = None,
    cost_weight: float = 1.0,
    abstain_score: str = "max",
    refusals: bool = False,
) -> list[Method]:
    """RACER (flag mode) for every bound and family, on the pool ``scores``.

    ``refusals`` is RACER's parameter of the same name: by default (False) a set never
    refuses, the top model answers with the flag raised, exactly as ``RACER().predict``
    serves, so the evaluated risk is the risk of what RACER serves.
    """
    augmented = augmented_scores(scores, abstain_score)
    methods = []
    for family in families:
        if family == "cost" and model_costs is None:
            continue
        entry = entry_levels(
            augmented, family, refusals=refusals, costs=model_costs, cost_weight=cost_weight
        )
        breakpoints = _breakpoints(entry, labels)
        methods += [
            _method(
                f"RACER {bound} {FAMILY_LABELS[family]}",
                "racer",
                "pac",
                entry,
                breakpoints,
                family=family,
                bound=bound,
                cost_weight=cost_weight,
            )
            for bound in bounds
        ]
    return methods


def baseline_methods(
    scores: np.ndarray,
    labels: np.ndarray,
    model_names: tuple[str, ...],
    *,
    top_k: tuple[int, ...] = (2, 3),
    abstain_score: str = "max",
) -> list[Method]:
    """The baselines of racer/method.md section 9, the single models, and the oracle.

    Parameters
    ----------
    scores, labels : numpy.ndarray, shape (N, M)
        Base-router scores and 0/1 labels of the pool.
    model_names : tuple of str
        Column names (single-model methods are named after them).
    top_k : tuple of int
        Fixed set sizes to compare (sizes >= M are skipped; "all models" is added).
    abstain_score : str
        Abstain score of the augmented families (as for RACER).

    Returns
    -------
    list of Method
    """
    n, n_models = scores.shape
    augmented = augmented_scores(scores, abstain_score)
    threshold = entry_levels(augmented, "threshold")
    threshold_breakpoints = _breakpoints(threshold, labels)
    ranks = _rank_entry(scores)
    rank_breakpoints = _breakpoints(ranks, labels)
    sizes = [k for k in top_k if 1 < k < n_models]
    methods = [
        *[
            _method(
                f"top-{k} router",
                "baseline",
                "fixed",
                ranks,
                rank_breakpoints,
                fixed_lambda=k - 1.0,
            )
            for k in (1, *sizes)
        ],
        _method(
            "all models", "baseline", "fixed", ranks, rank_breakpoints, fixed_lambda=n_models - 1.0
        ),
        _method("uncorrected threshold", "baseline", "empirical", threshold, threshold_breakpoints),
        _method("conformal risk control", "baseline", "crc", threshold, threshold_breakpoints),
    ]
    for family in ("threshold", "cumulative"):
        no_abstain = entry_levels(augmented, family, abstention=False)
        methods.append(
            _method(
                f"split conformal {FAMILY_LABELS[family]}",
                "baseline",
                "conformal",
                no_abstain,
                _breakpoints(no_abstain, labels, abstention=False),
                family=family,
            )
        )
    methods.append(
        _method(
            "oracle (hindsight) threshold", "oracle", "hindsight", threshold, threshold_breakpoints
        )
    )
    methods += [single_model_method(labels, m, name) for m, name in enumerate(model_names)]
    return methods


def single_model_method(labels: np.ndarray, model: int, name: str) -> Method:
    """Always invoke model ``model`` (column index), named ``"model: <name>"``."""
    entry = np.full((labels.shape[0], labels.shape[1] + 1), np.inf)
    entry[:, model + 1] = 0.0
    return _method(f"model: {name}", "single", "fixed", entry, _breakpoints(entry, labels))
