"""The cheapest RACER configuration that matches a reference model's accuracy.

Searches alpha, set family and aggregator over the same random calibration/test
splits as the evaluation, and compares each configuration's mean accuracy with the
reference model's mean accuracy on the same test rows. The search itself looks at the
test splits, so the chosen configuration is a hindsight choice among guaranteed ones
(each configuration keeps its own risk guarantee; the selection does not).
"""

from __future__ import annotations

import numpy as np

from racer.evaluation.baselines import Method, racer_methods
from racer.evaluation.metrics import mean_and_error
from racer.evaluation.run import Evaluation
from racer.evaluation.trials import outcome_means, thresholds

DEFAULT_ALPHA_GRID = tuple(round(a, 3) for a in np.arange(0.01, 0.301, 0.01))


def cheapest_match(
    evaluation: Evaluation,
    reference: str,
    *,
    alphas: tuple[float, ...] = DEFAULT_ALPHA_GRID,
    aggregators: tuple[str, ...] = ("vote", "best"),
    cost_share_budget: float = 0.3,
) -> dict:
    """Every RACER configuration's accuracy and cost next to ``reference``, and the cheapest
    one whose mean accuracy is at least the reference's.

    Parameters
    ----------
    evaluation : Evaluation
        The evaluation whose pool, splits, settings (delta, families, the first of
        ``settings.bounds``) and per-model costs the search reuses.
    reference : str
        The model to match (for example "gpt-4-1106-preview"); one of the pool's models.
    alphas : tuple of float
        Risk levels searched.
    aggregators : tuple of str
        "vote" and/or "best".
    cost_share_budget : float
        Also report the most accurate configuration costing at most this share of
        the reference.

    Returns
    -------
    dict
        ``reference`` (accuracy, cost), ``candidates`` (one row per configuration),
        ``cheapest`` (the chosen row with ``cost_share`` of the reference, or None) and
        ``best_within_budget`` (the most accurate row within ``cost_share_budget``).
    """
    if reference not in evaluation.model_names:
        raise ValueError(
            f"Unknown reference model {reference!r}; the models are {list(evaluation.model_names)}."
        )
    pool, settings, plan = evaluation.pool, evaluation.settings, evaluation.plan
    cal_rows, test_rows = plan.split_rows()
    # the evaluation already holds the reference model's outcomes on these test splits
    reference_means = evaluation.per_trial[(f"model: {reference}", settings.alphas[0])]
    reference_accuracy = reference_means["accuracy_best"]
    reference_cost = float(np.mean(reference_means["cost"]))
    methods: list[Method] = racer_methods(
        pool.scores,
        pool.labels,
        families=settings.families,
        bounds=settings.bounds[:1],
        model_costs=evaluation.model_costs,
        cost_weight=settings.cost_weight,
        abstain_score=settings.abstain_score,
    )
    candidates = []
    for method in methods:
        for alpha in alphas:
            lambdas = thresholds(method, pool, cal_rows, alpha, settings.delta)
            if np.isnan(lambdas).any():
                continue
            means = outcome_means(method, pool, lambdas, test_rows)
            for aggregator in aggregators:
                accuracy = means[f"accuracy_{aggregator}"]
                gap, gap_se = mean_and_error(accuracy - reference_accuracy)
                candidates.append(
                    {
                        "method": method.name,
                        "family": method.family,
                        "bound": method.bound,
                        "alpha": alpha,
                        "aggregator": aggregator,
                        "accuracy": float(np.mean(accuracy)),
                        "accuracy_gap": gap,
                        "accuracy_gap_se": gap_se,
                        "mean_cost": float(np.mean(means["cost"])),
                        "cost_share": float(np.mean(means["cost"])) / reference_cost,
                        "mean_set_size": float(np.mean(means["set_size"])),
                        "abstention_rate": float(np.mean(means["abstention_rate"])),
                    }
                )
    matching = [c for c in candidates if c["accuracy_gap"] >= 0]
    cheapest = min(matching, key=lambda c: c["mean_cost"]) if matching else None
    affordable = [c for c in candidates if c["cost_share"] <= cost_share_budget]
    return {
        "reference": {
            "model": reference,
            "accuracy": float(np.mean(reference_accuracy)),
            "mean_cost": reference_cost,
        },
        "trials": plan.n_trials,
        "candidates": candidates,
        "cheapest": cheapest,
        "cost_share_budget": cost_share_budget,
        "best_within_budget": max(affordable, key=lambda c: c["accuracy"], default=None),
    }


def _describe(candidate: dict, reference: dict, cost_unit: str) -> str:
    return (
        f"**{candidate['method']}, alpha = {candidate['alpha']:g}, {candidate['aggregator']} "
        f"aggregator**: accuracy {candidate['accuracy']:.3f} (difference "
        f"{candidate['accuracy_gap']:+.4f} ± {candidate['accuracy_gap_se']:.4f} SE), mean cost "
        f"{candidate['mean_cost']:.5f} {cost_unit} = **{100 * candidate['cost_share']:.1f} % "
        f"of {reference['model']}'s cost**, {candidate['mean_set_size']:.2f} models per query, "
        f"abstention {candidate['abstention_rate']:.3f}."
    )


def matching_section(match: dict, cost_unit: str) -> list[str]:
    """Markdown lines describing the search and its answer."""
    reference = match["reference"]
    lines = [
        f"## Cheapest RACER configuration matching {reference['model']}",
        "",
        f"{reference['model']} alone: accuracy {reference['accuracy']:.3f}, mean cost "
        f"{reference['mean_cost']:.5f} {cost_unit} per query (means over "
        f"{match['trials']} test splits). Searched: alpha, set family, aggregator; a "
        "configuration matches when its mean accuracy over the same splits is at least the "
        "reference's. The choice is made after looking at the test splits.",
        "",
    ]
    cheapest = match["cheapest"]
    lines.append(
        "Cheapest match: " + _describe(cheapest, reference, cost_unit)
        if cheapest is not None
        else "No RACER configuration matched the reference."
    )
    within = match["best_within_budget"]
    budget = f"{100 * match['cost_share_budget']:.0f} %"
    lines += [
        "",
        f"Most accurate within {budget} of the cost: " + _describe(within, reference, cost_unit)
        if within is not None
        else f"No RACER configuration costs under {budget} of the reference.",
        "",
    ]
    return lines
