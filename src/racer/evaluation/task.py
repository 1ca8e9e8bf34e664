"""One task end to end: train a base router, score the test data, evaluate, report.

This is what ``racer evaluate`` and ``racer demo`` run; the command line only parses
options and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from racer.data.dataset import RoutingDataset
from racer.evaluation.figures import PlotsUnavailableError, write_figures
from racer.evaluation.matching import cheapest_match, matching_section
from racer.evaluation.report import verdict, write_report
from racer.evaluation.run import Evaluation, EvaluationSettings, evaluate_pool, make_pool
from racer.evaluation.slices import SliceSettings, evaluate_slices
from racer.evaluation.slices_report import slices_section


def align_models(train: RoutingDataset, test: RoutingDataset) -> RoutingDataset:
    """``test`` with the training data's model columns, in the training order."""
    if set(train.model_names) != set(test.model_names):
        raise ValueError(
            "The training and test data must hold the same models; only in training: "
            f"{sorted(set(train.model_names) - set(test.model_names))}, only in test: "
            f"{sorted(set(test.model_names) - set(train.model_names))}."
        )
    return test.select_models(list(train.model_names))


def check_pool_size(test: RoutingDataset, settings: EvaluationSettings) -> None:
    """Refuse a pool too small for RACER to certify even the largest alpha.

    Each trial calibrates on ``calibration_fraction`` of the queries whose every label is
    known; with fewer than :func:`racer.minimum_calibration_size` of them (binomial
    bound, the tightest) no trial could certify anything, and the evaluation would only
    report refusals.

    Raises
    ------
    ValueError
        With the numbers and what to change.
    """
    from racer.estimator import minimum_calibration_size

    known = int((~np.isnan(test.labels).any(axis=1)).sum())
    n_cal = int(round(settings.calibration_fraction * known))
    alpha = max(settings.alphas)
    needed = minimum_calibration_size(alpha, settings.delta)
    if known == 0:
        raise ValueError(
            f"The test data {test.name!r} has no query whose every label is known "
            f"({test.n_queries} queries, all with an unknown outcome); RACER needs labelled "
            "queries to calibrate and evaluate. Check the label columns or scores of --test."
        )
    if n_cal < needed:
        raise ValueError(
            f"The test data {test.name!r} has {known} queries with known labels, so each "
            f"trial calibrates on {n_cal}; certifying alpha = {alpha:g} at delta = "
            f"{settings.delta:g} needs at least {needed} calibration queries (binomial "
            "bound). Pass more test data with --test, a larger --calibration-fraction, or "
            "a larger --alpha / --delta."
        )


def evaluate_task(
    test: RoutingDataset,
    scores: np.ndarray,
    settings: EvaluationSettings,
    *,
    train: RoutingDataset | None = None,
    task: str | None = None,
    progress: Callable[..., None] | None = None,
    slices: SliceSettings | None = None,
    groups: np.ndarray | None = None,
    train_scores: np.ndarray | None = None,
) -> Evaluation:
    """Evaluate every method on ``test`` scored by a base router.

    Parameters
    ----------
    test : RoutingDataset
        The pool of the trials (queries with an unknown label are left out and counted).
    scores : numpy.ndarray, shape (test.n_queries, M)
        The base router's scores.
    settings : EvaluationSettings
        What to run.
    train : RoutingDataset, optional
        Supplies the per-model prices of the cost-aware family: they are chosen before
        calibration, so they come from the training split, never from the pool that
        calibrates. Without ``train`` (external scores), the prices are the test pool's
        mean per-model costs, which is valid only because prices are a public list,
        not a label; the report says which was used (``evaluation.prices_from``).
    task : str, optional
        The name in the report (``test.name`` by default).
    progress : callable, optional
        Called as ``progress(message, done, total)`` before each method.
    slices : SliceSettings, optional
        Also compare abstention modes and, with ``groups``, per-group risk under marginal
        and per-group calibration (:mod:`racer.evaluation.slices`).
    groups : numpy.ndarray of str, shape (test.n_queries,), optional
        Each test query's group (a data column, or a classifier trained on ``train``).
    train_scores : numpy.ndarray, shape (train.n_queries, M), optional
        Cross-fitted scores of ``train``: strict mode's training front.

    Returns
    -------
    Evaluation
    """
    scores = np.asarray(scores, dtype=float)
    if scores.shape != test.labels.shape:
        raise ValueError(
            f"scores must have one row per test query and one column per model, "
            f"{test.labels.shape}; got {scores.shape}."
        )
    check_pool_size(test, settings)
    pool, kept = make_pool(test, scores)
    source = train if train is not None else test
    prices = source.mean_costs()
    evaluation = evaluate_pool(
        pool,
        test.model_names,
        settings,
        task=task or test.name,
        n_dropped=int((~kept).sum()),
        model_costs=prices if prices is not None and np.isfinite(prices).all() else None,
        has_responses=test.responses is not None,
        progress=progress,
    )
    evaluation.prices_from = None if evaluation.model_costs is None else source.name
    if slices is not None:
        if groups is not None and np.shape(groups) != (test.n_queries,):
            raise ValueError(
                f"groups must hold one group per test query ({test.n_queries}); got "
                f"shape {np.shape(groups)}."
            )
        evaluation.group_by = slices.group_by
        evaluation.slices = evaluate_slices(
            pool.scores,
            pool.labels,
            None if groups is None else np.asarray(groups).astype(str)[kept],
            evaluation.plan,
            alphas=settings.alphas,
            delta=settings.delta,
            settings=slices,
            train_scores=train_scores,
            train_labels=None if train is None or train_scores is None else train.labels,
            progress=None if progress is None else lambda message: progress(message),
        )
    return evaluation


def write_task_report(
    evaluation: Evaluation,
    out_dir: Path,
    *,
    header: list[str] | None = None,
    match_model: str | None = None,
    certified: list[dict] | None = None,
) -> dict[str, Any]:
    """Write figures, ``results.json`` and ``report.md``; optionally search the cheapest
    RACER configuration matching ``match_model``; ``certified`` (from
    :func:`racer.evaluation.certified_trials.records_for_evaluation`) goes into ``results.json``
    and opens the report.

    Without matplotlib (the optional extra ``plots``) the report is written without
    figures and says how to install them.

    Returns
    -------
    dict
        ``results`` and ``report`` paths, ``figures``, ``figures_note`` (why there are
        no figures, or None), ``match`` (or None), ``certified`` (as given) and
        ``verdict`` (as in ``results.json``).
    """
    match = None if match_model is None else cheapest_match(evaluation, match_model)
    sections = slices_section(evaluation.slices, evaluation.group_by)
    sections += [] if match is None else matching_section(match, evaluation.cost_unit)
    try:
        figures, note = write_figures(evaluation, out_dir, certified), None
    except PlotsUnavailableError as missing:
        figures, note = [], str(missing)
    results, report = write_report(
        evaluation,
        out_dir,
        figures=figures,
        figures_note=note,
        header=header,
        extra_sections=sections,
        extra_results={
            **({"match": match} if match is not None else {}),
            **({"certified": certified} if certified is not None else {}),
            **({"slices": evaluation.slices} if evaluation.slices else {}),
        }
        or None,
    )
    return {
        "results": results,
        "report": report,
        "figures": figures,
        "figures_note": note,
        "match": match,
        "certified": certified,
        "verdict": verdict(evaluation, certified),
    }
