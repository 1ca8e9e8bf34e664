"""Evaluation harness: trials, baselines, metrics, report and figures.

The flow of one evaluation (what ``racer evaluate`` runs):

    scores of a base router on the test data
    -> make_pool             queries with known labels, costs, extracted answers
    -> evaluate_pool         every method at every alpha, split and validity trials
    -> write_task_report     results.json, report.md, figures

Examples
--------
>>> from racer.evaluation import EvaluationSettings, evaluate_task  # doctest: +SKIP
>>> evaluation = evaluate_task(test, scores, EvaluationSettings(alphas=(0.1,)))  # doctest: +SKIP
>>> evaluation.record("RACER binomial threshold", 0.1)["violation_rate"]  # doctest: +SKIP
"""

from racer.evaluation.run import Evaluation, EvaluationSettings, evaluate_pool, make_pool
from racer.evaluation.scoring import router_scores
from racer.evaluation.synthetic import make_synthetic_benchmark
from racer.evaluation.task import evaluate_task, write_task_report
from racer.evaluation.trials import TrialPlan

__all__ = [
    "Evaluation",
    "EvaluationSettings",
    "TrialPlan",
    "evaluate_pool",
    "evaluate_task",
    "make_pool",
    "make_synthetic_benchmark",
    "router_scores",
    "write_task_report",
]
