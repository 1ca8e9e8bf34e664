"""One evaluation: every method, every alpha, split and validity trials, as records.

The result is a flat list of records (one per method and alpha) with the fields that
``results.json`` holds, plus the per-trial values the figures draw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from racer.aggregate import answer_codes, detect_answer_kind
from racer.data.dataset import RoutingDataset
from racer.evaluation.baselines import Method, baseline_methods, racer_methods
from racer.evaluation.metrics import OUTCOMES, Pool, mean_and_error, rate_and_error
from racer.evaluation.trials import TrialPlan, outcome_means, thresholds


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation runs.

    Attributes
    ----------
    alphas : tuple of float
        Risk levels.
    delta : float
        Failure probability of the PAC guarantee.
    n_trials : int
        Split trials and validity trials (each).
    calibration_fraction : float
        Share of the pool that calibrates in a split trial (and the size of each
        validity trial's resample).
    families : tuple of str
        RACER set families ("cost" is skipped without costs).
    bounds : tuple of str
        RACER bounds ("wsr" calibrates trial by trial, so it is slower).
    top_k : tuple of int
        Fixed set sizes of the top-k baselines.
    abstain_score : str
        Abstain score of RACER and the baselines with abstention.
    cost_weight : float
        Trade-off of the cost-aware family.
    seed : int
        Seed of the trial plan.
    """

    alphas: tuple[float, ...] = (0.05, 0.1, 0.2)
    delta: float = 0.1
    n_trials: int = 200
    calibration_fraction: float = 0.5
    families: tuple[str, ...] = ("threshold", "cumulative", "cost")
    bounds: tuple[str, ...] = ("binomial", "hoeffding")
    top_k: tuple[int, ...] = (2, 3)
    abstain_score: str = "max"
    cost_weight: float = 1.0
    seed: int = 0


@dataclass
class Evaluation:
    """Records per (method, alpha), per-trial values, and what was evaluated."""

    task: str
    model_names: tuple[str, ...]
    settings: EvaluationSettings
    plan: TrialPlan
    pool: Pool
    aggregator: str
    n_dropped: int
    model_costs: np.ndarray | None = None
    prices_from: str | None = None
    records: list[dict] = field(default_factory=list)
    per_trial: dict[tuple[str, float], dict[str, np.ndarray]] = field(default_factory=dict)
    # per (alpha, abstention mode, calibration): served rates and per-group risk
    # (racer.evaluation.slices); empty when not run
    slices: list[dict] = field(default_factory=list)
    group_by: str | None = None

    @property
    def cost_unit(self) -> str:
        """ "USD" or "model calls" (see :class:`Pool`)."""
        return self.pool.cost_unit

    def record(self, method: str, alpha: float) -> dict:
        """The record of one method at one alpha."""
        for entry in self.records:
            if entry["method"] == method and entry["alpha"] == alpha:
                return entry
        raise KeyError(f"No record for method {method!r} at alpha={alpha}.")


def make_pool(dataset: RoutingDataset, scores: np.ndarray) -> tuple[Pool, np.ndarray]:
    """The evaluation pool: queries whose every label is known.

    Parameters
    ----------
    dataset : RoutingDataset
        The test data.
    scores : numpy.ndarray, shape (n, M)
        The base router's scores for ``dataset``'s queries.

    Returns
    -------
    pool : Pool
        Dollar costs when the data has them (unknown cells filled with the model's
        mean), else one unit per model call; answer codes from the responses, if any.
    kept : numpy.ndarray of bool, shape (n,)
        Which rows of ``dataset`` are in the pool.
    """
    kept = ~np.isnan(dataset.labels).any(axis=1)
    labels = dataset.labels[kept]
    if dataset.costs is not None and np.isfinite(dataset.mean_costs()).all():
        costs = dataset.costs[kept]
        costs = np.where(np.isnan(costs), dataset.mean_costs()[None, :], costs)
        unit = "USD"
    else:
        costs = np.ones_like(labels)
        unit = "model calls"
    kind = None if dataset.responses is None else detect_answer_kind(dataset.responses[kept])
    if kind is not None:
        codes = answer_codes(dataset.responses[kept], kind)
    else:
        codes = np.full(labels.shape, -1, dtype=np.int64)
    pool = Pool(scores=scores[kept], labels=labels, costs=costs, answer_codes=codes, cost_unit=unit)
    return pool, kept


def _summary(means: dict[str, np.ndarray], aggregator: str) -> dict:
    risk, risk_se = mean_and_error(means["risk"])
    values = {name: mean_and_error(means[name])[0] for name in means}
    return {
        "risk": risk,
        "risk_se": risk_se,
        "mean_set_size": values["set_size"],
        "abstention_rate": values["abstention_rate"],
        "flag_rate": values["flag_rate"],
        "mean_cost": values["cost"],
        "accuracy": values[f"accuracy_{aggregator}"],
        "accuracy_vote": values["accuracy_vote"] if aggregator == "vote" else None,
        "accuracy_best": values["accuracy_best"],
        "any_correct_upper_bound": values["any_correct"],
        # the top-1 router on the same test queries of the same (feasible) trials
        "top1_accuracy": values["accuracy_top1"],
        "accuracy_vs_top1": values[f"accuracy_{aggregator}"] - values["accuracy_top1"],
        "top1_in_set_rate": values["top1_in_set"],
    }


class _Runner:
    """Runs one pool through all methods at one alpha (shared rows and caches)."""

    def __init__(self, pool: Pool, plan: TrialPlan, delta: float) -> None:
        self.pool = pool
        self.delta = delta
        self.cal_rows, self.test_rows = plan.split_rows()
        self.resample_rows = plan.resample_rows()
        self.all_rows = np.arange(pool.n)[None, :]

    def split(self, method: Method, alpha: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rows = self.test_rows if method.rule == "hindsight" else self.cal_rows
        lambdas = thresholds(method, self.pool, rows, alpha, self.delta)
        return lambdas, outcome_means(method, self.pool, lambdas, self.test_rows)

    def pool_risk(self, method: Method, alpha: float) -> np.ndarray:
        """True (pool) risk of each validity trial's lambda; NaN where it refused."""
        if method.rule == "hindsight":
            lam = thresholds(method, self.pool, self.all_rows, alpha, self.delta)
            lambdas = np.repeat(lam, self.resample_rows.shape[0])
        else:
            lambdas = thresholds(method, self.pool, self.resample_rows, alpha, self.delta)
        ordered = np.sort(method.evaluation_breakpoints)
        above = self.pool.n - np.searchsorted(
            ordered, np.where(np.isnan(lambdas), 0, lambdas), "right"
        )
        return np.where(np.isnan(lambdas), np.nan, above / self.pool.n)


def _best_single(
    evaluation: Evaluation, singles: list[Method], runner: _Runner, alpha: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The single model with the best calibration accuracy, per trial (from their records)."""
    labels = runner.pool.labels
    per_model = [evaluation.per_trial[(m.name, alpha)] for m in singles]
    trials = np.arange(evaluation.plan.n_trials)
    chosen = labels[runner.cal_rows].mean(axis=1).argmax(axis=1)
    means = {name: np.stack([p[name] for p in per_model])[chosen, trials] for name in OUTCOMES}
    chosen_resampled = labels[runner.resample_rows].mean(axis=1).argmax(axis=1)
    pool_risks = np.stack([p["pool_risk"] for p in per_model])[chosen_resampled, trials]
    return means, pool_risks


def evaluate_pool(
    pool: Pool,
    model_names: tuple[str, ...],
    settings: EvaluationSettings,
    *,
    task: str = "task",
    n_dropped: int = 0,
    model_costs: np.ndarray | None = None,
    has_responses: bool = False,
    progress: Callable[..., None] | None = None,
) -> Evaluation:
    """Run every method at every alpha over split and validity trials.

    Parameters
    ----------
    pool : Pool
        Scores, labels, costs and answer codes of the test data.
    model_names : tuple of str
        Column names.
    settings : EvaluationSettings
        Alphas, delta, trials, families, bounds.
    task : str
        Name in the report.
    n_dropped : int
        Test queries left out of the pool for unknown labels (reported).
    model_costs : numpy.ndarray, shape (M,), optional
        Per-model costs of the cost-aware family (from the training data).
    has_responses : bool
        Whether answer codes come from real responses; the reported accuracy is the
        vote when they do and best-in-set otherwise (also when no answer could be
        extracted).
    progress : callable, optional
        Called before each method as ``progress(message, done, total)``: a short
        message, the steps done so far and the number of steps (methods x alphas).

    Returns
    -------
    Evaluation
    """
    n_cal = int(round(settings.calibration_fraction * pool.n))
    plan = TrialPlan(pool.n, n_cal, settings.n_trials, settings.seed)
    aggregator = "vote" if has_responses and (pool.answer_codes >= 0).any() else "best"
    evaluation = Evaluation(
        task, model_names, settings, plan, pool, aggregator, n_dropped, model_costs
    )
    methods = racer_methods(
        pool.scores,
        pool.labels,
        families=settings.families,
        bounds=settings.bounds,
        model_costs=model_costs,
        cost_weight=settings.cost_weight,
        abstain_score=settings.abstain_score,
    ) + baseline_methods(
        pool.scores,
        pool.labels,
        model_names,
        top_k=settings.top_k,
        abstain_score=settings.abstain_score,
    )
    singles = [m for m in methods if m.group == "single"]
    runner = _Runner(pool, plan, settings.delta)
    oracle_first = sorted(methods, key=lambda m: m.group != "oracle")
    total = len(settings.alphas) * len(oracle_first)
    for a, alpha in enumerate(settings.alphas):
        oracle_size = None
        for m, method in enumerate(oracle_first):
            if progress is not None:
                progress(f"alpha={alpha:g}: {method.name}", a * len(oracle_first) + m, total)
            lambdas, means = runner.split(method, alpha)
            risks = runner.pool_risk(method, alpha)
            if method.group == "oracle":
                oracle_size = means["set_size"]
            _add_record(evaluation, method.name, method, alpha, lambdas, means, risks, oracle_size)
        best_means, best_risks = _best_single(evaluation, singles, runner, alpha)
        _add_record(
            evaluation,
            "best single model",
            None,
            alpha,
            np.zeros(plan.n_trials),
            best_means,
            best_risks,
            oracle_size,
        )
    return evaluation


def _add_record(
    evaluation: Evaluation,
    name: str,
    method: Method | None,
    alpha: float,
    lambdas: np.ndarray,
    means: dict[str, np.ndarray],
    pool_risks: np.ndarray,
    oracle_size: np.ndarray | None,
) -> None:
    plan = evaluation.plan
    violation, violation_se = rate_and_error(np.nan_to_num(pool_risks, nan=0.0) > alpha)
    feasible = ~np.isnan(lambdas)
    ratio = np.nan
    if oracle_size is not None and feasible.any():
        ratio = float(np.mean(means["set_size"][feasible]) / np.mean(oracle_size[feasible]))
    record = {
        "task": evaluation.task,
        "method": name,
        "group": method.group if method is not None else "baseline",
        "rule": method.rule if method is not None else "fixed",
        "family": method.family if method is not None else None,
        "bound": method.bound if method is not None else None,
        "alpha": alpha,
        "delta": evaluation.settings.delta,
        **_summary(means, evaluation.aggregator),
        "violation_rate": violation,
        "violation_se": violation_se,
        "mean_pool_risk": mean_and_error(pool_risks)[0],
        "set_size_vs_oracle": ratio,
        "infeasible_rate": float(np.mean(~feasible)),
        "aggregator": evaluation.aggregator,
        "cost_unit": evaluation.cost_unit,
        "trials": plan.n_trials,
        "n_cal": plan.n_cal,
        "n_test": plan.n_test,
        "n_pool": plan.n_pool,
    }
    evaluation.records.append(record)
    evaluation.per_trial[(name, alpha)] = {**means, "lambda": lambdas, "pool_risk": pool_risks}
