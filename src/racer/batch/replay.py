"""Replay logged, labelled traffic through an artifact: would-have-been risk, accuracy, cost.

Every number is the mean of a per-query outcome of :func:`racer.evaluation.metrics.outcomes`
over the queries whose every label is known (the pool of
:func:`racer.evaluation.run.make_pool`): the same functions, costs and aggregator that
``racer evaluate`` reports with. Engines compute the per-query outcomes of row ranges
(:func:`replay_rows`); :func:`replay_summary` averages them, in data order.

With groups (the data's source column), the summary also holds the per-group risk table
(:func:`racer.groups.group_risk_table`) next to the artifact's certificate, whether it was
calibrated marginally or per group, and names every group above alpha; an artifact
calibrated per group routes each query with its group's certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from racer.batch.routing import BatchRouter
from racer.data.dataset import RoutingDataset
from racer.diagnostics import rates_of_outcomes
from racer.evaluation.metrics import OUTCOMES, Pool, outcomes
from racer.evaluation.run import make_pool
from racer.groups import group_risk_table
from racer.losses import served_losses

__all__ = ["ReplayData", "replay_data", "replay_rows", "replay_summary", "served_losses_of"]


@dataclass(frozen=True)
class ReplayData:
    """The labelled queries a replay scores: the evaluation pool and its query texts.

    Attributes
    ----------
    queries : list of str
        Texts of the pool's queries, in data order.
    pool : Pool
        Labels, costs and answer codes (its ``scores`` are unused zeros).
    aggregator : {"vote", "best"}
        The accuracy ``racer evaluate`` reports for this data.
    n_dropped : int
        Queries left out for an unknown label.
    groups : numpy.ndarray of str or None
        Each pool query's group (the data's source column), when asked for.
    """

    queries: list[str]
    pool: Pool
    aggregator: str
    n_dropped: int
    groups: np.ndarray | None = None


def replay_data(
    dataset: RoutingDataset, model_names: list[str], with_groups: bool = False
) -> ReplayData:
    """The pool of ``dataset`` with the artifact's model columns, in its order (and each
    query's group from the data's source column with ``with_groups``)."""
    missing = sorted(set(model_names) - set(dataset.model_names))
    if missing:
        raise ValueError(
            f"The replay data has no labels for the artifact's models {missing}; give data "
            "with a label column for every model the artifact routes between."
        )
    dataset = dataset.select_models(list(model_names))
    pool, kept = make_pool(dataset, np.zeros(dataset.labels.shape))
    if pool.n == 0:
        raise ValueError("No replay query has a known label for every model; nothing to replay.")
    has_answers = dataset.responses is not None and bool((pool.answer_codes >= 0).any())
    queries = [str(q) for q in np.asarray(dataset.queries)[kept]]
    groups = dataset.sources.astype(str)[kept] if with_groups else None
    return ReplayData(
        queries, pool, "vote" if has_answers else "best", int((~kept).sum()), groups
    )


def served_losses_of(router: BatchRouter, decision: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The served loss of the artifact's mode for each query (what RACER certifies)."""
    return served_losses(router.certificate["abstention_mode"], decision, labels)


def replay_rows(router: BatchRouter, data: ReplayData, start: int, stop: int) -> dict[str, Any]:
    """Per-query outcomes of pool rows ``start:stop``, routed in batches from ``start``.

    Returns
    -------
    dict of str to numpy.ndarray
        One (stop - start,) array per name in :data:`racer.evaluation.metrics.OUTCOMES`.
    """
    parts = []
    for first in range(start, stop, router.batch_size):
        rows = slice(first, min(first + router.batch_size, stop))
        groups = None if data.groups is None else list(data.groups[rows])
        scores, decision, _, _ = router.decide(data.queries[rows], groups)
        labels = data.pool.labels[rows]
        losses = served_losses_of(router, decision, labels)
        pool = Pool(
            scores=scores,
            labels=labels,
            costs=data.pool.costs[rows],
            answer_codes=data.pool.answer_codes[rows],
            cost_unit=data.pool.cost_unit,
        )
        parts.append(outcomes(decision, losses, pool))
    return {name: np.concatenate([p[name] for p in parts]) for name in OUTCOMES}


def replay_summary(
    rows: dict[str, np.ndarray], data: ReplayData, router: BatchRouter
) -> dict[str, Any]:
    """The replay's figures: means of the per-query outcomes of every pool query, in order.

    The served rates (refusal rate, queries without a right answer, flag rate and flag
    precision) are those of :func:`racer.diagnostics.served_rates` on the pool's 0/1
    labels, read from the per-query outcomes. With groups: ``groups`` (one row per group:
    n, risk, above_alpha) and ``above_alpha`` (the groups whose risk exceeds alpha).
    """
    means = {name: float(np.mean(rows[name])) for name in OUTCOMES}
    served = rates_of_outcomes(
        answered=rows["abstention_rate"] == 0,
        flagged=rows["flag_rate"] > 0,
        missed=rows["any_correct"] == 0,
    )
    alpha = float(router.certificate["alpha"])
    table = None if data.groups is None else group_risk_table(rows["risk"], data.groups, alpha)
    group_rows = None if table is None else table.rows()
    return {
        "n_queries": int(len(rows["risk"])),
        "n_dropped": data.n_dropped,
        "risk": means["risk"],
        "accuracy": means[f"accuracy_{data.aggregator}"],
        "aggregator": data.aggregator,
        "mean_cost": means["cost"],
        "cost_unit": data.pool.cost_unit,
        "mean_set_size": means["set_size"],
        "any_correct": means["any_correct"],
        "top1_accuracy": means["accuracy_top1"],
        "accuracy_best": means["accuracy_best"],
        "accuracy_vote": means["accuracy_vote"] if data.aggregator == "vote" else None,
        "certificate": dict(router.certificate),
        "model_names": list(router.model_names),
        "refusal_rate": served.refusal_rate,
        "without_right_answer": served.without_right_answer,
        "flag_rate": served.flag_rate,
        "flag_precision": None if np.isnan(served.flag_precision) else served.flag_precision,
        "groups": group_rows,
        "above_alpha": [r["group"] for r in group_rows or [] if r["above_alpha"]],
    }
