"""Certified answer-level policies: validity trials and the ``certified`` records.

For every alpha: the policy family is built from the training split (grid, training
risk-cost front, fixed-sequence order), then each validity trial calibrates on an
i.i.d. resample of the pool and measures the chosen policy's risk, accuracy and cost on
the whole pool (the exact test of METHOD.md section 7). Next to it: the reference, the
best single model (by training accuracy), the vote over all models and the uncorrected
choice of the same family (cheapest policy whose calibration risk is <= alpha, no bound).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from racer.aggregate import answer_codes, choose_in_sets, detect_answer_kind
from racer.data.dataset import RoutingDataset
from racer.evaluation.metrics import mean_and_error, rate_and_error
from racer.policies import (
    Certificate,
    Policy,
    PolicyData,
    certify,
    loss_and_cost,
    policy_grid,
    simulate_all,
    training_front,
    uncorrected_choice,
)
from racer.policies.families import served_accuracy
from racer.policies.losses import check_objective

POLICY_FORMAT_VERSION = 1

__all__ = [
    "POLICY_FORMAT_VERSION",
    "CertifiedSettings",
    "certify_for_artifact",
    "policy_state",
    "check_objective_options",
    "records_for_evaluation",
    "PolicyFamily",
    "certified_records",
    "certify_dataset",
    "opening_sentences",
    "plan_family",
    "policy_data",
]


@dataclass(frozen=True)
class CertifiedSettings:
    """What a certified-policy evaluation runs.

    Attributes
    ----------
    objective : {"set", "error", "regret"}
        The answer-level loss.
    reference : str, optional
        The reference model (required by "regret"; the fallback of every policy). By
        default the model with the best training accuracy.
    alphas : tuple of float
        Risk levels.
    delta : float
        Family-wise error of Learn-then-Test.
    n_trials : int
        Validity trials.
    n_cal : int
        Calibration queries per trial (drawn with replacement from the pool).
    method : {"fixed_sequence", "bonferroni", "holm"}
        Family-wise error control.
    bound : str
        "auto" (binomial for 0/1 losses, hb for graded ones), "binomial", "hb" or
        "wsr" (the last two also for graded losses).
    seed : int
        Seed of the resamples.
    judge : str, optional
        A judge model: with router scores the family also holds judged parallel sets,
        the judge's calls counted in their cost.
    """

    objective: str = "regret"
    reference: str | None = None
    alphas: tuple[float, ...] = (0.02, 0.03, 0.05)
    delta: float = 0.1
    n_trials: int = 200
    n_cal: int = 400
    method: str = "fixed_sequence"
    bound: str = "auto"
    seed: int = 0
    judge: str | None = None


def cross_fitted_scores(
    router: str,
    train: RoutingDataset,
    pool: RoutingDataset,
    *,
    folds: int = 2,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Router scores that enable router policies: out-of-fold on ``train``, full fit on ``pool``.

    The training split fixes the policy family from each policy's training risk, so its
    scores must come from routers that did not see the query (``folds``-fold
    cross-fitting); the pool is scored by the router fitted on all of ``train``.

    Returns
    -------
    train_scores : numpy.ndarray, shape (train.n_queries, M)
    pool_scores : numpy.ndarray, shape (pool.n_queries, M)
    """
    from racer.evaluation.task import router_scores

    fold = np.random.default_rng(random_state).permutation(train.n_queries) % folds
    train_scores = np.empty(train.labels.shape, dtype=float)
    for k in range(folds):
        train_scores[fold == k] = router_scores(
            router, train.subset(fold != k), train.subset(fold == k)
        )
    return train_scores, router_scores(router, train, pool)


def policy_data(dataset: RoutingDataset, scores: np.ndarray | None, kind: str | None) -> PolicyData:
    """Labels (or graded quality), answer codes, costs and scores of a dataset.

    Unknown costs take the model's mean cost; without any cost each call costs 1.
    Without responses every answer is unextractable (cascades then cannot stop early).
    """
    quality = dataset.quality if dataset.quality is not None else dataset.labels
    if dataset.costs is not None and np.isfinite(dataset.mean_costs()).all():
        costs = np.where(np.isnan(dataset.costs), dataset.mean_costs()[None, :], dataset.costs)
    else:
        costs = np.ones(quality.shape)
    if dataset.responses is not None and kind is not None:
        codes = answer_codes(dataset.responses, kind)
    else:
        codes = np.full(quality.shape, -1, dtype=np.int64)
    return PolicyData(quality, codes, costs, scores)


@dataclass(frozen=True)
class PolicyFamily:
    """A policy family fixed from the training split, with its test order.

    The list is already in the fixed-sequence order (training risk-cost front, safest
    first); ``policies[fallback_index]`` is "always call the fallback".
    """

    policies: list[Policy]
    fallback: int
    objective: str
    reference: int | None
    answer_kind: str | None
    fallback_index: int = 0

    def losses(self, data: PolicyData) -> tuple[np.ndarray, np.ndarray]:
        """Per-query losses and costs of every policy on ``data``, each (n, K)."""
        return loss_and_cost(
            simulate_all(self.policies, data), data.quality, self.objective, self.reference
        )


def _model_index(names: tuple[str, ...], name: str, option: str = "reference") -> int:
    if name not in names:
        raise ValueError(f"Unknown {option} model {name!r}; the data has {list(names)}.")
    return names.index(name)


def plan_family(
    train: RoutingDataset,
    objective: str,
    reference: str | None = None,
    train_scores: np.ndarray | None = None,
    judge: str | None = None,
) -> PolicyFamily:
    """The policy family and its fixed-sequence order, from the training split only.

    Parameters
    ----------
    train : RoutingDataset
        Training data: prices, accuracies, and each policy's training risk and cost.
    objective : {"set", "error", "regret"}
    reference : str, optional
        Reference model (required by "regret"); the best training model otherwise.
    train_scores : numpy.ndarray, shape (n_train, M), optional
        Out-of-sample router scores of the training queries (cross-fitted); with them
        the family also holds router-weighted cascades and RACER's parallel sets.
    judge : str, optional
        Judge model of judged parallel sets (only with ``train_scores``).
    """
    accuracy = np.nan_to_num(np.nanmean(train.labels, axis=0), nan=0.0)
    ref = None if reference is None else _model_index(train.model_names, reference)
    check_objective(objective, ref)
    fallback = int(np.argmax(accuracy)) if ref is None else ref
    kind = None if train.responses is None else detect_answer_kind(train.responses)
    data = policy_data(train, train_scores, kind)
    prices = data.costs.mean(axis=0)
    judge_column = None if judge is None else _model_index(train.model_names, judge, "judge")
    grid = policy_grid(
        prices, accuracy, fallback, with_router=train_scores is not None, judge=judge_column
    )
    losses, costs = loss_and_cost(simulate_all(grid, data), data.quality, objective, ref)
    kept = training_front(losses, costs, first=0)
    return PolicyFamily(
        [grid[i] for i in kept], fallback, objective, ref, kind, int(np.flatnonzero(kept == 0)[0])
    )


def certify_dataset(
    family: PolicyFamily,
    calibration: RoutingDataset,
    *,
    alpha: float,
    delta: float,
    scores: np.ndarray | None = None,
    method: str = "fixed_sequence",
    bound: str = "auto",
) -> Certificate:
    """Certify ``family`` on calibration data; the cheapest certified policy."""
    data = policy_data(calibration, scores, family.answer_kind)
    losses, costs = family.losses(data)
    bound = resolve_bound(bound, calibration)
    order = np.arange(len(family.policies))
    return certify(
        family.policies,
        losses,
        costs,
        objective=family.objective,
        alpha=alpha,
        delta=delta,
        order=order,
        method=method,
        bound=bound,
        fallback_index=family.fallback_index,
    )


def resolve_bound(bound: str, dataset: RoutingDataset) -> str:
    """``"auto"``: the binomial bound for 0/1 labels, Hoeffding-Bentkus for graded quality.

    Decided by the kind of data (graded ``quality`` or labels), never by the values a
    sample happens to hold: a graded task whose sample is all 0/1 still needs a bound
    valid for graded losses.
    """
    if bound != "auto":
        return bound
    return "binomial" if dataset.quality is None else "hb"


def _summary(
    indices: np.ndarray,
    risks,
    accuracies,
    costs,
    alpha: float,
    ref_cost: float,
    certified: np.ndarray | None = None,
) -> dict:
    """Mean risk, accuracy, cost and violation rate of the policies chosen in the trials.

    A violation is a trial whose *certified* policy has true risk above alpha; a trial
    that certified nothing claims nothing (``certified`` False), so it cannot violate.
    """
    exceeded = risks[indices] > alpha
    if certified is not None:
        exceeded &= np.asarray(certified, dtype=bool)
    violation, violation_se = rate_and_error(exceeded)
    mean_cost = float(np.mean(costs[indices]))
    return {
        "violation_rate": violation,
        "violation_se": violation_se,
        "risk": mean_and_error(risks[indices])[0],
        "accuracy": float(np.mean(accuracies[indices])),
        "mean_cost": mean_cost,
        "cost_share": mean_cost / ref_cost if ref_cost > 0 else float("nan"),
    }


def certified_records(
    train: RoutingDataset,
    pool: RoutingDataset,
    settings: CertifiedSettings,
    *,
    train_scores: np.ndarray | None = None,
    pool_scores: np.ndarray | None = None,
) -> list[dict]:
    """One record per alpha: the certified policy's validity trials and the baselines.

    Parameters
    ----------
    train : RoutingDataset
        Training split: grid, front and order of the policy family.
    pool : RoutingDataset
        The population of the validity trials (rows with unknown labels are dropped).
    settings : CertifiedSettings
    train_scores, pool_scores : numpy.ndarray, optional
        Router scores (cross-fitted on the training split) enabling router policies.

    Returns
    -------
    list of dict
        Fields alpha, objective, policy, violation_rate, risk, accuracy, mean_cost,
        reference, reference_accuracy, reference_cost, cost_share, refused (share of
        trials where nothing cheaper than the reference was certified), uncertified
        (share where nothing at all was, the reference then served uncertified), and the
        baselines ``uncorrected``, ``best_single``, ``all_models_vote``.
    """
    known = ~np.isnan(pool.labels).any(axis=1)
    pool = pool.subset(known)
    pool_scores = None if pool_scores is None else np.asarray(pool_scores)[known]
    family = plan_family(
        train, settings.objective, settings.reference, train_scores, settings.judge
    )
    data = policy_data(pool, pool_scores if train_scores is not None else None, family.answer_kind)
    outcomes = simulate_all(family.policies, data)
    losses, costs = loss_and_cost(outcomes, data.quality, family.objective, family.reference)
    risks, mean_costs = losses.mean(axis=0), costs.mean(axis=0)
    bound = resolve_bound(settings.bound, pool)
    accuracies = np.array([served_accuracy(o.served, pool.labels).mean() for o in outcomes])
    ref_cost = float(mean_costs[family.fallback_index])
    ref_accuracy = float(accuracies[family.fallback_index])
    names = pool.model_names
    accuracy_train = np.nan_to_num(np.nanmean(train.labels, axis=0), nan=0.0)
    best = int(np.argmax(accuracy_train))
    aggregators = aggregator_accuracies(accuracy_train, data.codes, pool.labels)
    rng = np.random.default_rng(settings.seed)
    resamples = rng.integers(0, pool.n_queries, size=(settings.n_trials, settings.n_cal))
    records = []
    for alpha in settings.alphas:
        chosen, refused, uncertified, uncorrected = [], [], [], []
        for rows in resamples:
            certificate = certify(
                family.policies,
                losses[rows],
                costs[rows],
                objective=family.objective,
                alpha=alpha,
                delta=settings.delta,
                order=np.arange(len(family.policies)),
                method=settings.method,
                bound=bound,
                fallback_index=family.fallback_index,
            )
            chosen.append(certificate.index)
            refused.append(certificate.only_fallback)
            uncertified.append(not certificate.certified)
            uncorrected.append(uncorrected_choice(losses[rows], costs[rows], alpha))
        chosen_arr = np.asarray(chosen)
        summary = _summary(
            chosen_arr, risks, accuracies, mean_costs, alpha, ref_cost, ~np.asarray(uncertified)
        )
        common, count = Counter(chosen).most_common(1)[0]
        feasible = np.flatnonzero(risks <= alpha)
        hindsight = (
            None if feasible.size == 0 else int(feasible[np.argmin(mean_costs[feasible])])
        )
        records.append(
            {
                "alpha": alpha,
                "objective": family.objective,
                "policy": family.policies[common].describe(names),
                "policy_share_of_trials": count / settings.n_trials,
                **summary,
                "reference": names[family.fallback],
                "reference_accuracy": ref_accuracy,
                "reference_cost": ref_cost,
                "refused": float(np.mean(refused)),
                "uncertified": float(np.mean(uncertified)),
                "delta": settings.delta,
                "n_cal": settings.n_cal,
                "trials": settings.n_trials,
                "n_pool": pool.n_queries,
                "n_policies": len(family.policies),
                "method": settings.method,
                "bound": bound,
                "uncorrected": _summary(
                    np.asarray(uncorrected), risks, accuracies, mean_costs, alpha, ref_cost
                ),
                "hindsight_best": None
                if hindsight is None
                else {
                    "policy": family.policies[hindsight].describe(names),
                    "risk": float(risks[hindsight]),
                    "accuracy": float(accuracies[hindsight]),
                    "mean_cost": float(mean_costs[hindsight]),
                    "cost_share": float(mean_costs[hindsight] / ref_cost),
                },
                "best_single": {
                    "model": names[best],
                    "accuracy": float(np.mean(pool.labels[:, best])),
                    "mean_cost": float(np.mean(data.costs[:, best])),
                },
                "all_models_vote": {
                    "accuracy": aggregators["logodds"],
                    "mean_cost": float(np.mean(data.costs.sum(axis=1))),
                },
                "aggregators": aggregators,
            }
        )
    return records


def aggregator_accuracies(
    train_accuracy: np.ndarray, codes: np.ndarray, labels: np.ndarray
) -> dict:
    """Test accuracy of each aggregator over all models, and the winner.

    Every model is called; the weights are the training accuracies (calibrated
    probabilities of being right): ``"best"`` serves the model with the best training
    accuracy, ``"vote"`` is the accuracy-weighted majority, ``"logodds"`` the majority
    with weights ``log(p / (1 - p))``.

    Returns
    -------
    dict
        ``{"best": acc, "vote": acc, "logodds": acc, "winner": name, "over": text}``;
        ties go to the simpler aggregator (best, then vote).
    """
    everyone = np.ones(labels.shape, dtype=bool)
    weights = np.broadcast_to(np.asarray(train_accuracy, dtype=float), labels.shape)
    accuracy = {
        method: float(
            served_accuracy(choose_in_sets(everyone, weights, codes, method), labels).mean()
        )
        for method in ("best", "vote", "logodds")
    }
    winner = max(accuracy, key=lambda method: accuracy[method])
    return {**accuracy, "winner": winner, "over": "all models, training-accuracy weights"}


def _points(value: float) -> str:
    return f"{100 * value:.3g} points"


def opening_sentences(results: dict | None) -> list[str]:
    """The report's opening: one plain sentence per alpha of the ``certified`` records.

    Then a table of the certified policy next to the uncorrected choice of the same
    family (tuned on calibration, no bound), and one line per task saying which
    aggregator wins. Empty when ``results`` holds no ``certified`` list.
    """
    records = (results or {}).get("certified") or []
    lines = [f"- {_sentence(record)}" for record in records]
    if not lines:
        return []
    return [
        "## Certified answer-level policy",
        "",
        *lines,
        "",
        *_comparison_table(records),
        "",
        *_aggregator_lines(records),
        "",
    ]


def _sentence(record: dict) -> str:
    reference = record["reference"]
    task = f"{record['task']}, " if record.get("task") else ""
    confidence = f"{1 - record['delta']:g}"
    measured = (
        f"(measured over {record['trials']} validity trials: accuracy "
        f"{record['accuracy']:.3f} vs {record['reference_accuracy']:.3f}, violation rate "
        f"{record['violation_rate']:.3f})"
    )
    if record.get("uncertified", 0.0) >= 0.5:
        return (
            f"{task}alpha {record['alpha']:g}: nothing, not even {reference} alone, could be "
            f"certified in {100 * record['uncertified']:.0f} % of trials; {reference} is "
            f"served without a certificate {measured}."
        )
    if record["refused"] >= 0.5 and record["cost_share"] <= 1.0:
        return (
            f"{task}alpha {record['alpha']:g}: no saving could be certified against "
            f"{reference} in {100 * record['refused']:.0f} % of trials, so {reference} itself "
            f"is served {measured}."
        )
    if record["objective"] == "regret":
        promise = f"at most {_points(record['alpha'])} below {reference}"
    elif record["objective"] == "error":
        promise = f"error at most {record['alpha']:g}"
    else:
        promise = f"misrouting risk at most {record['alpha']:g}"
    return (
        f"{task}alpha {record['alpha']:g}: certified {promise} with probability {confidence}, "
        f"at {100 * record['cost_share']:.0f} % of {reference}'s cost {measured}."
    )


def _comparison_table(records: list[dict]) -> list[str]:
    """Certified policy against the uncorrected choice, per alpha (markdown)."""
    with_task = any(record.get("task") for record in records)
    columns = [
        *(["task"] if with_task else []),
        "alpha",
        "FWER",
        "certified: accuracy",
        "cost share",
        "violation",
        "refused",
        "uncorrected: accuracy",
        "cost share",
        "violation",
    ]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    nan = float("nan")
    for record in records:
        raw = {"accuracy": nan, "cost_share": nan, "violation_rate": nan}
        raw.update(record.get("uncorrected") or {})
        cells = [
            *([record.get("task", "")] if with_task else []),
            f"{record['alpha']:g}",
            record.get("method", ""),
            f"{record['accuracy']:.3f}",
            f"{record['cost_share']:.2f}",
            f"{record['violation_rate']:.3f}",
            f"{record['refused']:.2f}",
            f"{raw['accuracy']:.3f}",
            f"{raw['cost_share']:.2f}",
            f"{raw['violation_rate']:.3f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _aggregator_lines(records: list[dict]) -> list[str]:
    """One line per task: which aggregator wins (test accuracy of best / vote / logodds)."""
    lines, seen = [], set()
    for record in records:
        aggregators = record.get("aggregators")
        task = record.get("task", "")
        if not aggregators or task in seen:
            continue
        seen.add(task)
        label = f"{task}: " if task else ""
        lines.append(
            f"- {label}aggregator over {aggregators['over']}: {aggregators['winner']} wins "
            f"(test accuracy best {aggregators['best']:.3f}, vote {aggregators['vote']:.3f}, "
            f"logodds {aggregators['logodds']:.3f})."
        )
    return lines


def check_objective_options(
    objective: str | None, reference: str | None, fwer: str = "fixed_sequence"
) -> None:
    """Command-line check of ``--objective``, ``--reference`` and ``--fwer`` (ValueError)."""
    from racer.policies import OBJECTIVES
    from racer.policies.certify import FWER_METHODS

    if fwer not in FWER_METHODS:
        raise ValueError(f"--fwer must be one of {', '.join(FWER_METHODS)}; got {fwer!r}.")
    if objective is None:
        if reference is not None:
            raise ValueError("--reference needs --objective regret (or error / set).")
        return
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}.")
    if objective == "regret" and reference is None:
        raise ValueError(
            "--objective regret needs --reference MODEL, the model not to fall below "
            "(for example gpt-4-1106-preview)."
        )


def records_for_evaluation(
    objective: str | None,
    reference: str | None,
    train: RoutingDataset | None,
    test: RoutingDataset,
    *,
    alphas: tuple[float, ...],
    delta: float,
    n_trials: int,
    calibration_fraction: float,
    seed: int = 0,
    method: str = "fixed_sequence",
) -> list[dict] | None:
    """The ``certified`` list of ``racer evaluate --objective``; None without an objective.

    The training data fixes the policy family; the test data is the pool of the
    validity trials, each calibrating on ``calibration_fraction`` of its size.
    """
    check_objective_options(objective, reference, method)
    if objective is None:
        return None
    if train is None:
        raise ValueError(
            "--objective needs --train PATH: the policy grid comes from training data."
        )
    if reference is not None:
        _model_index(train.model_names, reference)
    n_pool = int((~np.isnan(test.labels).any(axis=1)).sum())
    settings = CertifiedSettings(
        objective,
        reference,
        alphas,
        delta,
        n_trials=n_trials,
        n_cal=max(1, int(round(calibration_fraction * n_pool))),
        method=method,
        seed=seed,
    )
    return certified_records(train, test, settings)


def policy_state(
    certificate: Certificate, family: PolicyFamily, model_names: tuple[str, ...]
) -> dict:
    """JSON of a certified policy for an artifact: the policy, its certificate, a sentence."""
    return {
        "policy_format_version": POLICY_FORMAT_VERSION,
        "certificate": certificate.state(),
        "reference": None if family.reference is None else model_names[family.reference],
        "fallback": model_names[family.fallback],
        "answer_kind": family.answer_kind,
        "description": certificate.policy.describe(model_names),
        "summary": certificate.sentence(model_names),
    }


def certify_for_artifact(
    objective: str | None,
    reference: str | None,
    train: RoutingDataset,
    calibration: RoutingDataset,
    *,
    alpha: float,
    delta: float,
    method: str = "fixed_sequence",
) -> dict | None:
    """``racer calibrate --objective``: certify the family on the calibration data.

    The family (accuracy-weighted cascades and single models) comes from ``train``.
    Returns the JSON to save in the artifact, or None without an objective.
    """
    check_objective_options(objective, reference, method)
    if objective is None:
        return None
    family = plan_family(train, objective, reference)
    certificate = certify_dataset(family, calibration, alpha=alpha, delta=delta, method=method)
    return policy_state(certificate, family, train.model_names)
