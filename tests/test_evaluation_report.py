"""The report: results.json numbers recomputed independently, report.md and figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from racer.aggregate import answer_codes, choose_in_sets, chosen_correct
from racer.data.load import load_dataset
from racer.estimator import RACER
from racer.evaluation.certified_trials import records_for_evaluation
from racer.evaluation.figures import policy_points
from racer.evaluation.run import EvaluationSettings
from racer.evaluation.task import evaluate_task, write_task_report

FIELDS = (
    "risk",
    "violation_rate",
    "mean_set_size",
    "abstention_rate",
    "mean_cost",
    "accuracy",
    "trials",
    "n_cal",
    "n_test",
)
REFERENCE = "gpt-4-1106-preview"


def _scores(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.clip(0.5 * labels.mean(axis=0) + 0.3 * labels + 0.2 * rng.random(labels.shape), 0, 1)


@pytest.fixture(scope="module")
def routerbench_report(shared_data, tmp_path_factory):
    test = load_dataset(shared_data / "routerbench" / "arc_challenge_test.csv")
    train = load_dataset(shared_data / "routerbench" / "arc_challenge_train.csv")
    scores = _scores(np.nan_to_num(test.labels))
    settings = EvaluationSettings(alphas=(0.05, 0.1), n_trials=60, bounds=("binomial",))
    evaluation = evaluate_task(test, scores, settings)
    certified = records_for_evaluation(
        "regret", REFERENCE, train, test, alphas=settings.alphas, delta=0.1, n_trials=30,
        calibration_fraction=0.5,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("report")
    paths = write_task_report(evaluation, out, match_model=REFERENCE, certified=certified)
    return test, scores, json.loads(paths["results"].read_text()), out


def _split(document: dict, t: int) -> tuple[np.ndarray, np.ndarray]:
    permutation = np.random.default_rng([document["settings"]["seed"], t]).permutation(
        document["n_pool"]
    )
    n_cal = document["results"][0]["n_cal"]
    return permutation[:n_cal], permutation[n_cal:]


def _record(document: dict, method: str, alpha: float) -> dict:
    (record,) = [r for r in document["results"] if r["method"] == method and r["alpha"] == alpha]
    return record


def test_every_method_and_alpha_has_the_promised_fields(routerbench_report):
    _, _, document, out = routerbench_report
    assert document["aggregator"] == "vote" and document["cost_unit"] == "USD"
    methods = {r["method"] for r in document["results"]}
    for name in (
        "RACER binomial threshold",
        "RACER binomial cost-aware",
        "top-1 router",
        "top-2 router",
        "all models",
        "best single model",
        "split conformal threshold",
        "split conformal cumulative (APS)",
        "conformal risk control",
        "uncorrected threshold",
    ):
        assert name in methods
        for alpha in (0.05, 0.1):
            record = _record(document, name, alpha)
            assert all(record[field] is not None for field in FIELDS), record
    assert {p.name for p in out.iterdir()} >= {
        "results.json",
        "report.md",
        "risk_vs_alpha.png",
        "set_size_vs_alpha.png",
        "accuracy_vs_cost.png",
    }


def test_report_numbers_recomputed_from_scratch(routerbench_report):
    test, scores, document, _ = routerbench_report
    known = ~np.isnan(test.labels).any(axis=1)
    labels, scores = test.labels[known], scores[known]
    costs = np.where(np.isnan(test.costs[known]), test.mean_costs(), test.costs[known])
    codes = answer_codes(test.responses[known])
    assert document["n_pool"] == known.sum()
    alpha, n_trials = 0.1, document["settings"]["n_trials"]
    racer, top1, everything = [], [], []
    for t in range(n_trials):
        cal, rest = _split(document, t)
        fitted = RACER(alpha, 0.1).fit(scores[cal], labels[cal])
        sets = fitted.predict(scores[rest], include_abstain=True)
        good = np.column_stack([(labels[rest] == 0).all(axis=1), labels[rest] == 1])
        chosen = choose_in_sets(sets[:, 1:], scores[rest], codes[rest], "vote")
        racer.append(
            [
                np.mean(~(sets & good).any(axis=1)),
                sets[:, 1:].sum(axis=1).mean(),
                np.mean(np.where(sets[:, 1:], costs[rest], 0).sum(axis=1)),
                chosen_correct(chosen, labels[rest]).mean(),
            ]
        )
        top = np.argmax(scores[rest], axis=1)
        top1.append(labels[rest, top].mean())
        everything.append((labels[rest] == 1).any(axis=1).mean())
    all_models = _record(document, "all models", alpha)
    # Never abstaining, the full set misroutes exactly the queries no model answers.
    assert all_models["risk"] == pytest.approx(1 - np.mean(everything))
    assert all_models["violation_rate"] == float((labels == 0).all(axis=1).mean() > alpha)
    risk, size, cost, accuracy = np.mean(racer, axis=0)
    record = _record(document, "RACER binomial threshold", alpha)
    assert record["risk"] == pytest.approx(risk)
    assert record["mean_set_size"] == pytest.approx(size)
    assert record["mean_cost"] == pytest.approx(cost)
    assert record["accuracy"] == pytest.approx(accuracy)
    assert _record(document, "top-1 router", alpha)["accuracy"] == pytest.approx(np.mean(top1))
    # Honest accuracy: every record carries the top-1 router's accuracy on the same queries.
    assert record["infeasible_rate"] == 0.0
    assert record["top1_accuracy"] == pytest.approx(np.mean(top1))
    assert record["accuracy_vs_top1"] == pytest.approx(accuracy - np.mean(top1))
    assert _record(document, "all models", alpha)["any_correct_upper_bound"] == pytest.approx(
        np.mean(everything)
    )


def test_cheapest_match_is_cheapest_among_those_matching(routerbench_report):
    _, _, document, out = routerbench_report
    match = document["match"]
    reference = match["reference"]
    matching = [c for c in match["candidates"] if c["accuracy"] >= reference["accuracy"] - 1e-12]
    cheapest = match["cheapest"]
    assert cheapest is not None and matching
    assert cheapest["mean_cost"] == pytest.approx(min(c["mean_cost"] for c in matching))
    assert cheapest["cost_share"] == pytest.approx(cheapest["mean_cost"] / reference["mean_cost"])
    report = (out / "report.md").read_text()
    assert f"Cheapest RACER configuration matching {REFERENCE}" in report
    assert "upper bound" in report  # the any-correct rate is labelled as a bound, never accuracy


def test_flag_rate_is_reported_and_a_mostly_flagged_route_is_warned_about(shared_data, tmp_path):
    # RouterBench MBPP: 13 % of queries have no good model, so at alpha 0.05 flag mode
    # certifies by raising the flag on most queries; the report must say so.
    test = load_dataset(shared_data / "routerbench" / "mbpp_test.csv")
    # a weak router (per-model accuracy plus noise), as real routers are on MBPP
    rng = np.random.default_rng(5)
    scores = np.clip(test.labels.mean(axis=0) + 0.1 * rng.standard_normal(test.labels.shape), 0, 1)
    settings = EvaluationSettings(alphas=(0.05, 0.3), n_trials=30, bounds=("binomial",),
                                  families=("threshold",))
    evaluation = evaluate_task(test, scores, settings)
    paths = write_task_report(evaluation, tmp_path)
    document = json.loads(paths["results"].read_text())
    record = _record(document, "RACER binomial threshold", 0.05)
    # recompute the flag rate of the first split trial independently
    cal, rows = _split(document, 0)
    with pytest.warns(UserWarning, match="The abstain flag is raised"):
        router = RACER(alpha=0.05, delta=0.1).fit(scores[cal], test.labels[cal])
    decision = router.predict(scores[rows], include_abstain=True)
    first_trial = np.mean(decision[:, 0] & decision[:, 1:].any(axis=1))
    assert evaluation.per_trial[("RACER binomial threshold", 0.05)]["flag_rate"][0] == (
        pytest.approx(first_trial)
    )
    assert record["flag_rate"] > 0.5
    warnings = document["flag_warnings"]
    assert len(warnings) == 1 and "at alpha 0.05 raises the abstain flag" in warnings[0]
    no_good = np.mean(test.labels.max(axis=1) == 0)
    assert f"{no_good:.1%} of the pool's queries have no good model" in warnings[0]
    report = paths["report"].read_text()
    assert warnings[0] in report and "| flag rate |" in report


def test_the_certified_policy_is_the_verdict_with_the_numbers_of_its_trials(routerbench_report):
    test, scores, document, out = routerbench_report
    policy = document["verdict"]["policy"]
    known = ~np.isnan(test.labels).any(axis=1)
    top1 = test.labels[known][np.arange(known.sum()), np.argmax(scores[known], axis=1)].mean()
    for row, record in zip(policy["per_alpha"], document["certified"], strict=True):
        for key in ("alpha", "policy", "accuracy", "reference_accuracy", "cost_share",
                    "mean_cost", "violation_rate", "refused"):  # fmt: skip
            assert row[key] == record[key], key
        assert row["top1_accuracy"] == pytest.approx(top1)
        assert row["serve"] == "certified policy"  # RouterBench ARC: a cascade saves
    # The policy is what to serve, and the set verdict stays beside it, unchanged.
    assert document["verdict"]["serve"] == "certified policy"
    assert document["verdict"]["method"] == "RACER binomial threshold"
    first = document["certified"][0]
    assert f"at {100 * first['cost_share']:.0f} % of {REFERENCE}'s cost" in (
        document["verdict"]["why"]
    )
    report = (out / "report.md").read_text()
    verdict_section = report.split("## Does RACER beat the best single model?")[1].split("## ")[0]
    assert "In short: serve the certified policy." in verdict_section
    assert "calling the best single model is the better choice" not in report
    assert "**Calibrated sets**" in verdict_section and "against the top-1 router's" in report


def test_the_cost_figure_draws_the_policy_its_reference_and_the_hindsight_front(
    routerbench_report,
):
    _, _, document, _ = routerbench_report
    records = document["certified"]
    points = policy_points(records, "arc_challenge_test")
    assert points.costs.tolist() == [r["mean_cost"] for r in records]
    assert points.accuracies.tolist() == [r["accuracy"] for r in records]
    assert points.hindsight_costs.tolist() == [r["hindsight_best"]["mean_cost"] for r in records]
    assert (points.reference, points.reference_cost) == (REFERENCE, records[0]["reference_cost"])
    # another task's records (the demo's stories) are not drawn on this evaluation's plane
    assert policy_points([{**r, "task": "story"} for r in records], "arc_challenge_test") is None
