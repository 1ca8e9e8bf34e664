"""racer replay on RouterBench ARC: the figures racer evaluate computes for the artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from racer.artifact import load_artifact, save_artifact
from racer.batch import replay_data
from racer.batch.engines import replay
from racer.cli import app
from racer.data.load import load_dataset
from racer.diagnostics import served_rates
from racer.estimator import RACER
from racer.evaluation.metrics import outcomes
from racer.evaluation.run import make_pool
from racer.groups import group_risk_table
from racer.routers import make_router


@pytest.fixture(scope="module")
def arc(shared_data, tmp_path_factory):
    """A kNN artifact trained on RouterBench ARC train, calibrated on the test split."""
    train = load_dataset(shared_data / "routerbench" / "arc_challenge_train.csv")
    test = load_dataset(shared_data / "routerbench" / "arc_challenge_test.csv")
    names = list(train.model_names)
    test = test.select_models(names)
    router = make_router("knn", k=20, shrink=5.0).fit(
        list(train.queries), train.labels, model_names=names
    )
    racer = RACER(0.1, 0.1).fit(
        router.predict_proba(list(test.queries)), test.labels, model_names=names
    )
    directory = save_artifact(tmp_path_factory.mktemp("arc") / "artifact", router, racer)
    return directory, test


def test_replay_gives_the_evaluation_figures_of_the_artifact(arc):
    directory, test = arc
    artifact = load_artifact(directory)
    known = ~np.isnan(test.labels).any(axis=1)
    summary = replay(directory, replay_data(test, artifact.model_names), batch_size=1024)

    # What racer evaluate computes for this fixed policy, on the whole split at once (one
    # batch on one BLAS thread, as the replay scored it: the calibration split has queries
    # exactly at the threshold, where the last bit of a score decides the set).
    with threadpool_limits(limits=1, user_api="blas"):
        scores = artifact.predict_proba(list(np.asarray(test.queries)[known]))
    decision = artifact.racer.predict(scores, include_abstain=True)
    all_scores = np.zeros(test.labels.shape)
    all_scores[known] = scores
    pool, kept = make_pool(test, all_scores)
    assert np.array_equal(kept, known)
    expected_risk = artifact.racer.risk(scores, test.labels[known])
    per_query = outcomes(decision, np.zeros(pool.n), pool)
    costs = np.where(decision[:, 1:], pool.costs, 0.0).sum(axis=1)

    assert summary["n_queries"] == pool.n == int(known.sum())
    assert summary["aggregator"] == "vote"  # RouterBench has responses to vote over
    assert summary["cost_unit"] == "USD"
    assert summary["risk"] == pytest.approx(expected_risk, abs=1e-12)
    assert summary["accuracy"] == pytest.approx(per_query["accuracy_vote"].mean(), abs=1e-12)
    assert summary["mean_cost"] == pytest.approx(costs.mean(), rel=1e-9)
    assert summary["mean_set_size"] == pytest.approx(decision[:, 1:].sum(1).mean(), abs=1e-12)
    # calibrated on this very split, so the certified bound holds on it
    assert summary["risk"] <= artifact.racer.risk_bound_ <= 0.1
    assert summary["accuracy"] <= summary["any_correct"]
    # honest accuracy: the router's own top-1 on the same queries, recomputed here
    top1 = np.argmax(scores, axis=1)
    assert summary["top1_accuracy"] == pytest.approx(
        (test.labels[known][np.arange(pool.n), top1] == 1).mean(), abs=1e-12
    )
    assert summary["certificate"]["n_calibration"] == artifact.racer.n_calibration_


def test_replay_command_prints_and_writes_the_figures(arc, shared_data, tmp_path, without_pyarrow):
    # a CSV needs no pyarrow (the parquet extra)
    directory, _ = arc
    data = shared_data / "routerbench" / "arc_challenge_test.csv"
    out = tmp_path / "replay.json"
    args = ["replay", "--artifact", str(directory), "--data", str(data), "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert f"{written['risk']:.4f}" in result.output
    assert f"{written['accuracy']:.4f}" in result.output
    expected = replay(directory, replay_data(load_dataset(data), written["model_names"]))
    assert written == json.loads(json.dumps(expected))


def test_replay_refuses_data_without_the_artifacts_models(arc, shared_data):
    directory, _ = arc
    data = shared_data / "routerdc" / "arc_challenge_test.json"
    result = CliRunner().invoke(app, ["replay", "--artifact", str(directory), "--data", str(data)])
    assert result.exit_code == 2
    assert "has no labels for the artifact's models" in " ".join(result.output.split())


def test_replay_shows_per_group_risk_under_the_marginal_certificate(arc, shared_data, tmp_path):
    directory, _ = arc  # calibrated on ARC alone; MBPP traffic arrives too
    rows, header = [], None
    for task in ("arc_challenge", "mbpp"):
        lines = (shared_data / "routerbench" / f"{task}_test.csv").read_text().splitlines()
        header, rows = lines[0], rows + lines[1:]
    pooled = tmp_path / "arc_mbpp.csv"
    pooled.write_text("\n".join([header, *rows]) + "\n")
    data = load_dataset(pooled, read_responses=False)
    artifact = load_artifact(directory)
    prepared = replay_data(data, artifact.model_names, with_groups=True)
    summary = replay(directory, prepared, batch_size=4096)

    with threadpool_limits(limits=1, user_api="blas"):
        scores = artifact.predict_proba(prepared.queries)
    decision = artifact.racer.predict(scores, include_abstain=True)
    losses = artifact.racer.served_losses(scores, prepared.pool.labels)
    table = group_risk_table(losses, prepared.groups, 0.1)
    rates = served_rates("flag", decision, prepared.pool.labels)
    assert summary["groups"] == table.rows()
    assert summary["above_alpha"] == [r["group"] for r in table.rows() if r["above_alpha"]]
    assert "mbpp" in summary["above_alpha"]  # the marginal ARC certificate does not cover it
    assert summary["refusal_rate"] == pytest.approx(rates.refusal_rate, abs=1e-12)
    assert summary["without_right_answer"] == pytest.approx(rates.without_right_answer, abs=1e-12)
    assert summary["flag_rate"] == pytest.approx(rates.flag_rate, abs=1e-12)
