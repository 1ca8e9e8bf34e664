"""The racer command line: help, clear errors without tracebacks, and the main jobs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from racer.cli import app

runner = CliRunner()


def _invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


@pytest.mark.parametrize("command", ["demo", "evaluate", "calibrate", "route"])
def test_help_explains_every_option_and_its_default(command):
    result = _invoke(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--help" in text
    if command in ("demo", "evaluate"):
        assert "[default: 0.05,0.1,0.2]" in text
        assert "[default: 200]" in text
        assert "[default: racer-out]" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate"], "Give the test data with --test PATH"),
        (
            ["evaluate", "--test", "nowhere.csv", "--train", "x.csv", "--alpha", "0.1,abc"],
            "--alpha takes comma-separated numbers",
        ),
        (["evaluate", "--test", "nowhere.csv", "--train", "x.csv", "--alpha", "0.1"], "does not"),
        (["evaluate", "--test", "t.json", "--train", "t.json", "--delta", "2"], "--delta"),
        (["evaluate", "--test", "t.json", "--train", "t.json", "--bounds", "magic"], "--bounds"),
        (["demo", "--queries", "10"], "--queries"),
        (["route", "--artifact", "no-such-artifact"], "does not exist"),
    ],
)
def test_user_mistakes_get_one_clear_message_and_no_traceback(args, message):
    result = _invoke(*args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_demo_writes_report_results_and_figures(tmp_path):
    out = tmp_path / "demo"
    result = _invoke("demo", "--out", str(out), "--queries", "800", "--trials", "20")
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    assert document["task"].startswith("synthetic")
    assert "SYNTHETIC" in (out / "report.md").read_text()
    # Issue 9: the answer-level story, a saving on one task and a refusal on the others.
    saved = {r["task"]: r for r in document["certified"] if r["alpha"] == 0.05}
    assert saved["synthetic-cheap-models-agree"]["cost_share"] < 0.6
    assert saved["synthetic-cheap-models-wrong-together"]["refused"] == 1.0
    # The demo leads with the policy: the verdict serves it where it saves, and the
    # stories (other data than the set-level evaluation) get their own figure.
    rows = document["verdict"]["policy"]["per_alpha"]
    assert [r["serve"] == "certified policy" for r in rows] == [
        saves["cost_share"] < 1 and saves["refused"] < 0.5 for saves in document["certified"]
    ]
    assert document["verdict"]["serve"] == "certified policy"
    figures = ("risk_vs_alpha.png", "set_size_vs_alpha.png", "accuracy_vs_cost.png")
    for figure in (*figures, "certified_policies.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"


def _arc_command(shared_data, command: str, held_out_option: str, out, *options: str):
    """Run ``command`` on RouterDC's ARC-Challenge files with the prior router."""
    task = shared_data / "routerdc"
    return _invoke(
        command,
        "--train", str(task / "arc_challenge_train.json"),
        held_out_option, str(task / "arc_challenge_test.json"),
        "--router", "prior",
        "--out", str(out),
        *options,
    )  # fmt: skip


def test_evaluate_on_routerdc_and_calibrate_then_route(shared_data, tmp_path):
    out = tmp_path / "arc"
    result = _arc_command(
        shared_data, "evaluate", "--test", out, "--alpha", "0.2,0.3", "--trials", "30"
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    assert document["aggregator"] == "best"  # RouterDC has no responses to vote over
    assert document["cost_unit"] == "model calls"
    record = next(r for r in document["results"] if r["method"] == "all models")
    assert record["mean_set_size"] == pytest.approx(7.0)
    # Issue 16.4: without responses best-in-set serves the top-1 model of every answered
    # set, so the sets cannot beat top-1, and the report says so.
    verdict = document["verdict"]
    assert verdict["policy"] is None and verdict["serve"] != "certified policy"
    for row in verdict["per_alpha"]:
        assert row["cannot_beat_top1"] and row["accuracy"] <= row["top1_accuracy"] + 1e-12
    assert "these sets cannot beat top-1" in (out / "report.md").read_text()

    artifact = tmp_path / "artifact"
    result = _arc_command(shared_data, "calibrate", "--calibration", artifact, "--alpha", "0.3")
    assert result.exit_code == 0, result.output
    queries = '{"query": "Which gas do plants absorb?"}\nWhat is 2 + 2?\n'
    result = _invoke("route", "--artifact", str(artifact), input=queries)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["query"] for line in lines] == ["Which gas do plants absorb?", "What is 2 + 2?"]
    for line in lines:
        assert line["refused"] == (not line["models"])
        scores = [value for key, value in line.items() if key.startswith("score:")]
        assert len(scores) == 7 and np.all(np.array(scores) <= 1)
