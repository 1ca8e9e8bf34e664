"""The newcomer review's bad inputs (2026-12-07) that still failed: each gives one
``Error:`` line and exit status 2, before any training, or the right result."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from racer.cli import app
from racer.estimator import minimum_calibration_size

runner = CliRunner()


def invoke(*args: object, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "200"})


def error_line(result) -> str:
    """The one ``Error:`` line of a refused command (exit status 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def no_training(monkeypatch):
    """Any base-router training fails the test: the refusal must come before it."""
    import racer.evaluation.scoring
    import racer.routers

    def never(*args, **kwargs):
        raise AssertionError("a base router was trained before the input was refused")

    monkeypatch.setattr(racer.routers, "make_router", never)
    monkeypatch.setattr(racer.evaluation.scoring, "router_scores", never)


def csv_rows(source: Path, target: Path, rows: slice, edit=None) -> Path:
    """Some rows of a RouterBench CSV, with its header (``edit(i, row)`` may change them)."""
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        kept = list(reader)[rows]
    if edit is not None:
        for i, row in enumerate(kept):
            edit(i, header, row)
    with target.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *kept])
    return target


@pytest.fixture(scope="module")
def small_arc(shared_data, tmp_path_factory) -> dict[str, Path]:
    """40 training rows, 60 calibration rows (one missing label cell) and 5 rows of ARC."""
    bench = shared_data / "routerbench"
    folder = tmp_path_factory.mktemp("bad")

    def blank_one_label(i, header, row):
        if i == 0:
            row[header.index("gpt-4-1106-preview")] = ""

    return {
        "train": csv_rows(bench / "arc_challenge_train.csv", folder / "train.csv", slice(0, 40)),
        "calibration": csv_rows(
            bench / "arc_challenge_test.csv", folder / "cal.csv", slice(0, 60), blank_one_label
        ),
        "tiny": csv_rows(bench / "arc_challenge_test.csv", folder / "tiny.csv", slice(60, 65)),
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["calibrate", "--calibration", "c.csv", "--router", "external"], "pass it as --scores"),
        (["evaluate", "--test", "t.csv", "--router", "external"], "pass it as --scores"),
        (["demo", "--router", "external"], "no external router has scores for them"),
        (["calibrate", "--calibration", "c.csv", "--router", "nope"], "Unknown router 'nope'"),
        (["calibrate", "--calibration", "c.csv", "--train", "t.csv", "--objective", "regret"],
         "--objective regret needs --reference MODEL"),
        (["evaluate", "--test", "t.csv", "--train", "t.csv", "--objective", "regret"],
         "--objective regret needs --reference MODEL"),
        (["calibrate", "--calibration", "c.csv", "--train", "t.csv", "--bound", "nope"],
         "--bound takes one of"),
        (["calibrate", "--calibration", "c.csv", "--scores", "absent.csv"],
         "The scores file 'absent.csv' does not exist"),
    ],
)  # fmt: skip
def test_option_mistakes_are_refused_before_any_file_is_read(args, expected, no_training):
    assert expected in error_line(invoke(*args))


def test_unknown_reference_and_tiny_calibration_are_refused_before_training(
    small_arc, no_training
):
    base = ["calibrate", "--train", small_arc["train"], "--out", "never"]
    line = error_line(
        invoke(*base, "--calibration", small_arc["calibration"], "--objective", "regret",
               "--reference", "gpt-5")
    )  # fmt: skip
    assert line.startswith("Error: Unknown reference model 'gpt-5'; the data has [")
    line = error_line(
        invoke("evaluate", "--train", small_arc["train"], "--test", small_arc["calibration"],
               "--objective", "regret", "--reference", "gpt-5", "--alpha", "0.3")
    )  # fmt: skip
    assert line.startswith("Error: Unknown reference model 'gpt-5'")
    for alpha, bound in ((0.1, "binomial"), (0.05, "hoeffding")):
        needed = minimum_calibration_size(alpha, 0.1, bound)
        line = error_line(
            invoke(*base, "--calibration", small_arc["tiny"], "--alpha", alpha, "--bound", bound)
        )
        assert f"has 5 queries; certifying risk <= {alpha:g}" in line
        assert f"by the {bound} bound needs at least {needed}" in line


@pytest.fixture(scope="module")
def external_artifact(small_arc, tmp_path_factory) -> tuple[Path, dict]:
    """An artifact calibrated on another router's scores (calibrate --scores)."""
    from racer.data.load import load_dataset

    folder = tmp_path_factory.mktemp("external")
    with pytest.warns(UserWarning):  # the blanked label cell
        data = load_dataset(small_arc["calibration"])
    scores = np.where(np.isnan(data.labels), 0.5, 0.15 + 0.8 * np.nan_to_num(data.labels))
    scores[1] = 0.05  # a query no model is likely to answer
    with (folder / "scores.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", *data.model_names])
        writer.writerows([q, *row] for q, row in zip(data.queries, scores, strict=True))
    out = folder / "artifact"
    result = invoke(
        "calibrate", "--calibration", small_arc["calibration"], "--scores",
        folder / "scores.csv", "--alpha", "0.3", "--refusals", "--refusal-cost", "0",
        "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scores_from"] == str(folder / "scores.csv")
    assert summary["risk_bound"] <= 0.3
    assert summary["refusal_rate"] >= 1 / 60  # the query no model is likely to answer
    return out, {"queries": list(data.queries), "names": list(data.model_names), **summary}


def test_calibrate_scores_makes_an_artifact_whose_refusals_say_why(external_artifact, tmp_path):
    artifact, info = external_artifact
    lines = [json.dumps({"id": "q0", "query": info["queries"][0]}),
             json.dumps({"id": "q1", "query": info["queries"][1]})]  # fmt: skip
    result = invoke("route", "--artifact", artifact, input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    answered, refused = (json.loads(line) for line in result.stdout.splitlines())
    assert [answered["id"], refused["id"]] == ["q0", "q1"]
    assert not answered["refused"] and answered["models"] and answered["refusal_reason"] is None
    level = 1 - info["threshold"]
    assert refused["refused"] and refused["models"] == [] and not refused["flagged"]
    assert refused["refusal_reason"] == (
        f"no model's score cleared the calibrated threshold {level:.3f} "
        f"(best: {info['names'][0]} 0.050)"
    )
    for record in (answered, refused):  # one schema, with the artifact's certificate
        assert record["n_calibration"] == 60 and record["alpha"] == 0.3
        assert len(record["artifact_id"]) == 64
        assert set(info["names"]) == {k.removeprefix("score:") for k in record if ":" in k}
    unknown = invoke("route", "--artifact", artifact, input="What is 2 + 2?\n")
    assert "No external score for 1 of 1 queries" in error_line(unknown)


def test_route_output_is_not_overwritten_without_overwrite(external_artifact, tmp_path):
    artifact, info = external_artifact
    target = tmp_path / "routed.jsonl"
    target.write_text("earlier results\n")
    args = ["route", "--artifact", artifact, "--output", target]
    line = json.dumps({"query": info["queries"][2]}) + "\n"
    assert "pass --overwrite" in error_line(invoke(*args, input=line))
    assert target.read_text() == "earlier results\n"
    assert invoke(*args, "--overwrite", input=line).exit_code == 0
    assert json.loads(target.read_text())["query"] == info["queries"][2]


def test_replay_shows_library_warnings_as_notes(external_artifact, small_arc):
    artifact, _ = external_artifact
    result = invoke("replay", "--artifact", artifact, "--data", small_arc["calibration"])
    assert result.exit_code == 0, result.output
    assert "Note (replay data): cal: 1 of " in result.output
    assert "Warning" not in result.output and "warnings.warn" not in result.output
    assert "refusal rate (no model called)" in result.output


def test_replay_server_refuses_data_without_responses_in_one_line(shared_data):
    routerdc = shared_data / "routerdc" / "mmlu_test.json"
    assert "has no recorded responses" in error_line(invoke("replay-server", "--data", routerdc))


def test_piped_results_keep_method_names_and_the_figures_hint(small_arc, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delenv("COLUMNS", raising=False)
    args = [
        "evaluate", "--train", small_arc["train"], "--test", small_arc["calibration"],
        "--router", "prior", "--trials", "2", "--alpha", "0.3", "--families", "threshold",
        "--bounds", "binomial", "--out", tmp_path / "out",
    ]  # fmt: skip
    result = runner.invoke(app, [str(a) for a in args])  # stdout is a pipe, not a terminal
    assert result.exit_code == 0, result.output
    assert 'pip install "racer-routing[plots]"' in result.output
    rows = [line for line in result.output.splitlines() if "uncorrected" in line]
    assert len(rows) == 1 and "uncorrected threshold" in rows[0]


def test_an_invalid_gateway_file_is_one_error_line_naming_every_problem(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("backends: []\nnonsense_key: 1\n")
    line = error_line(invoke("serve", "--config", config))
    assert line == (
        "Error: Invalid gateway configuration: backends: List should have at least 1 item "
        "after validation, not 0; routes: Field required; nonsense_key: Extra inputs are not "
        "permitted"
    )


def test_the_spinner_shows_time_elapsed_never_as_time_left(monkeypatch):
    import io
    import re

    from rich.console import Console

    import racer.cli.common as common

    screen = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=screen, force_terminal=True, width=200))
    with common.progress("Training the base router") as step:
        step("knn")
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())
    assert "Training the base router: knn" in shown and "0:00:00 elapsed" in shown
    assert "left" not in shown
