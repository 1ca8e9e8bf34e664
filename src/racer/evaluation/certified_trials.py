"""Validity trials of a certified answer-level policy: the ``certified`` records.

For every alpha: the policy family is built from the training split
(:func:`racer.evaluation.certified.plan_family`), then each validity trial calibrates on
an i.i.d. resample of the pool and measures the chosen policy's risk, accuracy and cost
on the whole pool (the exact test of METHOD.md section 7). Next to it: the reference,
the best single model (by training accuracy), the vote over all models and the
uncorrected choice of the same family (cheapest policy whose calibration risk is
<= alpha, no bound).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from racer.aggregate import choose_in_sets
from racer.data.dataset import RoutingDataset
from racer.evaluation.certified import (
    check_objective_options,
    model_index,
    plan_family,
    policy_data,
    resolve_bound,
)
from racer.evaluation.metrics import mean_and_error, rate_and_error
from racer.policies import certify, loss_and_cost, uncorrected_choice
from racer.policies.families import served_accuracy
from racer.policies.front import dearer_than_reference
from racer.policies.simulate import simulate_family

__all__ = [
    "CertifiedSettings",
    "aggregator_accuracies",
    "certified_records",
    "records_for_evaluation",
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
    agreement : str
        Free-text agreement measure (:func:`racer.evaluation.certified.answer_kind`):
        "auto", "char", "dense", or a free-text answer kind with its threshold.
    learned_stop : bool, optional
        Cascades with a learned stop rule in the family (None: when the training data
        has responses; :func:`racer.evaluation.certified.plan_family`).
    free_text : bool
        Compare free-text answers by their similarity (False: never compared).
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
    agreement: str = "char"
    learned_stop: bool | None = None
    free_text: bool = True


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
        (share where nothing at all was, the reference then served uncertified),
        ``dearer_than_reference`` (for the policy certified in most trials: the share of
        pool queries where escalation makes it cost more than the reference alone, the
        largest per-query cost ratio and the ratio of mean costs; ``trials_share``: the
        share of trials whose certified policy is dearer than the reference on some pool
        query), and the
        baselines ``uncorrected``, ``best_single``, ``all_models_vote``; ``answer_kind``
        says how answers were compared (:func:`racer.evaluation.certified.answer_kind`).
    """
    known = ~np.isnan(pool.labels).any(axis=1)
    pool = pool.subset(known)
    pool_scores = None if pool_scores is None else np.asarray(pool_scores)[known]
    family = plan_family(
        train,
        settings.objective,
        settings.reference,
        train_scores,
        settings.judge,
        agreement=settings.agreement,
        learned_stop=settings.learned_stop,
        free_text=settings.free_text,
    )
    data = policy_data(pool, pool_scores if train_scores is not None else None, family.answer_kind)
    outcomes = simulate_family(family.policies, data)
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
        dearer_somewhere = (costs > data.costs[:, [family.fallback]]).any(axis=0)
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
                "dearer_than_reference": {
                    **dearer_than_reference(costs[:, common], data.costs[:, family.fallback]),
                    "trials_share": float(np.mean(dearer_somewhere[chosen_arr])),
                },
                "uncertified": float(np.mean(uncertified)),
                "delta": settings.delta,
                "n_cal": settings.n_cal,
                "trials": settings.n_trials,
                "n_pool": pool.n_queries,
                "n_policies": len(family.policies),
                "method": settings.method,
                "bound": bound,
                "answer_kind": family.answer_kind,
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
    router: str | None = None,
    agreement: str = "char",
    learned_stop: bool | None = None,
) -> list[dict] | None:
    """The ``certified`` list of ``racer evaluate --objective``; None without an objective.

    The training data fixes the policy family; the test data is the pool of the
    validity trials, each calibrating on ``calibration_fraction`` of its size. With
    ``router`` (a base-router name) the family also holds router-weighted cascades and
    RACER's parallel sets, scored as :func:`racer.evaluation.scoring.cross_fitted_scores`
    does: out-of-fold on the training data, by the router fitted on all of it on the pool.
    ``agreement`` picks the free-text agreement measure (``racer evaluate --agreement``).
    ``learned_stop`` adds cascades with a learned stop rule (None: when the training data
    has responses).
    """
    check_objective_options(objective, reference, method)
    if objective is None:
        return None
    if train is None:
        raise ValueError(
            "--objective needs --train PATH: the policy grid comes from training data."
        )
    if reference is not None:
        model_index(train.model_names, reference)
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
        agreement=agreement,
        learned_stop=learned_stop,
    )
    if router is None:
        return certified_records(train, test, settings)
    from racer.evaluation.scoring import cross_fitted_scores

    train_scores, pool_scores = cross_fitted_scores(router, train, test)
    return certified_records(
        train, test, settings, train_scores=train_scores, pool_scores=pool_scores
    )
