"""Command line of the answer-level objectives: calibrate saves the certified policy."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from racer.artifact import load_artifact
from racer.cli import app
from racer.data.routerbench import load_routerbench
from racer.evaluation.certified import policy_data
from racer.policies import Single, policy_from_state

runner = CliRunner()


def test_calibrate_with_regret_saves_a_certified_policy(shared_data, tmp_path):
    folder = shared_data / "routerbench"
    out = tmp_path / "artifact"
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--train", str(folder / "arc_challenge_train.csv"),
            "--calibration", str(folder / "arc_challenge_test.csv"),
            "--router", "prior",
            "--alpha", "0.05",
            "--objective", "regret",
            "--reference", "gpt-4-1106-preview",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = load_artifact(out).policy
    certificate = saved["certificate"]
    assert (certificate["objective"], certificate["alpha"], certificate["delta"]) == (
        "regret",
        0.05,
        0.1,
    )
    assert saved["reference"] == "gpt-4-1106-preview"
    policy = policy_from_state(certificate["policy"])
    calibration = load_routerbench(folder / "arc_challenge_test.csv")
    assert certificate["n"] == calibration.n_queries
    # A cheaper policy than gpt-4 is certified at alpha 0.05, and its p-value passed delta.
    assert certificate["certified"] and not certificate["only_fallback"]
    assert policy != Single(calibration.model_names.index("gpt-4-1106-preview"))
    assert certificate["p_value"] <= 0.1
    assert certificate["calibration_risk"] <= 0.05
    assert np.isfinite(certificate["calibration_cost"])
    # Where escalation makes it dearer than gpt-4: its mean cost over gpt-4's, exactly.
    reference_cost = policy_data(calibration, None, None).costs[:, policy.fallback].mean()
    dearer = saved["dearer_than_reference"]
    assert dearer["mean_ratio"] == pytest.approx(certificate["calibration_cost"] / reference_cost)
    assert 0.0 < dearer["share"] < 0.5 and dearer["max_ratio"] > 1.0


def test_regret_without_reference_is_a_user_error(tmp_path):
    result = runner.invoke(
        app, ["evaluate", "--train", "x.csv", "--test", "y.csv", "--objective", "regret"]
    )
    assert result.exit_code == 2
    assert "Error:" in result.output and "--reference" in result.output
    result = runner.invoke(
        app, ["evaluate", "--train", "x.csv", "--test", "y.csv", "--objective", "accuracy"]
    )
    assert result.exit_code == 2 and "--objective must be one of" in result.output


def test_calibrate_spends_the_family_wise_error_as_asked(shared_data, tmp_path):
    folder = shared_data / "routerbench"
    out = tmp_path / "artifact"
    arguments = [
        "calibrate",
        "--train", str(folder / "arc_challenge_train.csv"),
        "--calibration", str(folder / "arc_challenge_test.csv"),
        "--router", "prior",
        "--alpha", "0.05",
        "--objective", "regret",
        "--reference", "gpt-4-1106-preview",
        "--out", str(out),
    ]  # fmt: skip
    result = runner.invoke(app, [*arguments, "--fwer", "holm"])
    assert result.exit_code == 0, result.output
    certificate = load_artifact(out).policy["certificate"]
    assert certificate["method"] == "holm"
    # Holm over the whole front tests each policy at no more than delta.
    assert certificate["p_value"] <= 0.1
    result = runner.invoke(app, [*arguments[:-2], "--out", str(tmp_path / "b"), "--fwer", "sidak"])
    assert result.exit_code == 2
    assert "Error:" in result.output and "--fwer must be one of" in result.output
    assert "Traceback" not in result.output


def test_evaluate_certifies_graded_pass_fractions_end_to_end(shared_data, tmp_path):
    import json

    folder = shared_data / "routerdc"
    out = tmp_path / "gsm8k"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--train", str(folder / "gsm8k-train.json"),
            "--test", str(folder / "gsm8k-test.json"),
            "--router", "prior",
            "--trials", "10",
            "--alpha", "0.35",
            "--objective", "error",
            "--fwer", "bonferroni",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = json.loads((out / "results.json").read_text())["certified"]
    # Pass fractions are graded losses: the Hoeffding-Bentkus bound is used, not the binomial.
    assert (record["bound"], record["method"], record["objective"]) == ("hb", "bonferroni", "error")
    assert record["violation_rate"] == 0.0
    report = (out / "report.md").read_text()
    assert "| uncorrected: accuracy |" in report and "aggregator over all models" in report
    # The certified policy is the console's headline, and results.json's verdict has it.
    output = " ".join(result.output.split())
    assert output.index("certified answer-level policy") < output.index("calibrated sets")
    (row,) = json.loads((out / "results.json").read_text())["verdict"]["policy"]["per_alpha"]
    assert (row["accuracy"], row["cost_share"]) == (record["accuracy"], record["cost_share"])
