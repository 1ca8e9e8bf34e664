"""Slices in ``racer evaluate``: per-group risk next to the marginal certificate, the
abstention modes side by side, and every group above alpha named."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from racer.cli import app
from racer.data.load import load_dataset
from racer.diagnostics import served_rates
from racer.estimator import RACER
from racer.evaluation.run import make_pool
from racer.evaluation.trials import TrialPlan
from racer.groups import group_risk_table

ALPHA, DELTA, TRIALS = 0.05, 0.1, 2


@pytest.fixture(scope="module")
def arc_and_mbpp(shared_data, tmp_path_factory):
    """RouterBench ARC and MBPP test sets in one CSV (each row keeps its eval_name), and
    scores that see the labels through noise (an informative router, fast)."""
    folder = tmp_path_factory.mktemp("arc_mbpp")
    rows, header = [], None
    for task in ("arc_challenge", "mbpp"):
        with open(shared_data / "routerbench" / f"{task}_test.csv", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows += list(reader)
    pool_csv = folder / "arc_mbpp.csv"
    with open(pool_csv, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_dataset(pool_csv, read_responses=False)
    labels = np.nan_to_num(data.labels, nan=0.0)
    noise = np.random.default_rng(0).uniform(size=labels.shape)
    scores = np.clip(0.25 + 0.35 * labels + 0.4 * noise, 0.0, 1.0)
    np.save(folder / "scores.npy", scores)
    return folder, data, scores


def _served_tables(data, scores):
    """The per-group table and rates recomputed here: flag mode, marginal calibration, on
    the test rows of the evaluation's first split trials, pooled."""
    pool, kept = make_pool(data, scores)
    plan = TrialPlan(pool.n, int(round(0.5 * pool.n)), TRIALS, 0)
    cal_rows, test_rows = plan.split_rows()
    groups = data.sources[kept]
    losses, decisions = [], []
    for cal, test in zip(cal_rows, test_rows, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            racer = RACER(ALPHA, DELTA).fit(pool.scores[cal], pool.labels[cal])
        losses.append(racer.served_losses(pool.scores[test], pool.labels[test]))
        decisions.append(racer.predict(pool.scores[test], include_abstain=True))
    test_groups = np.concatenate([groups[test] for test in test_rows])
    test_labels = np.concatenate([pool.labels[test] for test in test_rows])
    table = group_risk_table(np.concatenate(losses), test_groups, ALPHA)
    return table, served_rates("flag", np.concatenate(decisions), test_labels)


def test_evaluate_reports_per_group_risk_and_names_the_group_above_alpha(arc_and_mbpp):
    folder, data, scores = arc_and_mbpp
    out = folder / "report"
    result = CliRunner().invoke(
        app,
        [
            "evaluate", "--test", str(folder / "arc_mbpp.csv"),
            "--scores", str(folder / "scores.npy"), "--alpha", str(ALPHA),
            "--trials", str(TRIALS), "--families", "threshold", "--bounds", "binomial",
            "--abstention", "flag,off", "--group-by", "eval_name", "--out", str(out),
        ],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    slices = json.loads((out / "results.json").read_text())["slices"]
    settings = [(r["mode"], r["calibration"]) for r in slices]
    assert settings == [
        ("flag", "marginal"),
        ("flag", "per group"),
        ("off", "marginal"),
        ("off", "per group"),
    ]
    marginal = slices[0]
    table, rates = _served_tables(data, scores)
    assert marginal["groups"] == table.rows()
    assert marginal["refusal_rate"] == rates.refusal_rate
    assert marginal["without_right_answer"] == pytest.approx(rates.without_right_answer)
    assert marginal["flag_rate"] == pytest.approx(rates.flag_rate)
    # MBPP sits above alpha under the marginal certificate, and is named as such
    mbpp = table.names.index("mbpp")
    assert table.above_alpha[mbpp] and not table.above_alpha[table.names.index("arc-challenge")]
    sentence = f"mbpp: risk {table.risk[mbpp]:.2f} under a certificate of {ALPHA:g}"
    assert marginal["above_alpha"] == ["mbpp"]
    assert sentence in (out / "report.md").read_text()
    assert sentence in result.output
    # per-group certificates bring MBPP back under alpha on the same test rows
    assert all(not row["above_alpha"] for row in slices[1]["groups"])


def test_group_options_are_checked_before_any_work(tmp_path):
    runner = CliRunner()
    common = ["evaluate", "--test", str(tmp_path / "missing.csv"), "--scores", "s.npy"]
    unknown = runner.invoke(app, [*common, "--group-by", "tenant"])
    assert unknown.exit_code != 0 and "--group-by reads the data's source column" in unknown.output
    mode = runner.invoke(app, [*common, "--abstention", "flag,never"])
    assert mode.exit_code != 0 and "--abstention takes a comma-separated subset" in mode.output
    lonely = runner.invoke(app, [*common, "--group-classifier"])
    assert lonely.exit_code != 0 and "give --group-by too" in lonely.output
    two_files = runner.invoke(app, [*common, "--test", "b.csv", "--group-by", "eval_name"])
    assert two_files.exit_code != 0 and "Concatenate them into one CSV" in two_files.output
