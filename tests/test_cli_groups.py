"""``racer calibrate --group-by``: one certificate per group, saved with where the group of
a query comes from; ``racer route`` refuses what it cannot route."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from racer.artifact import METADATA_FILE, load_artifact
from racer.cli import app
from racer.data.load import load_dataset
from racer.estimator import RACER

runner = CliRunner()


@pytest.fixture(scope="module")
def pooled(shared_data, tmp_path_factory):
    """RouterBench ARC and MBPP, train and test, each split in one CSV (eval_name kept)."""
    folder = tmp_path_factory.mktemp("pooled")
    for split in ("train", "test"):
        rows, header = [], None
        for task in ("arc_challenge", "mbpp"):
            with open(shared_data / "routerbench" / f"{task}_{split}.csv", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader)
                rows += list(reader)
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
    return folder


def _calibrate(folder, out, *extra):
    args = [
        "calibrate", "--train", str(folder / "train.csv"),
        "--calibration", str(folder / "test.csv"), "--out", str(out), "--router", "prior",
        "--alpha", "0.2", "--group-by", "eval_name", *extra,
    ]  # fmt: skip
    return runner.invoke(app, args, env={"COLUMNS": "200"})


def test_calibrate_with_a_group_classifier_saves_each_groups_certificate(pooled, tmp_path):
    result = _calibrate(pooled, tmp_path / "art", "--group-classifier")
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "art")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibration = load_dataset(pooled / "test.csv", read_responses=False)
    queries = list(calibration.queries)
    groups = artifact.group_classifier.predict(queries)
    assert set(groups) == {"arc-challenge", "mbpp"}
    # the classifier was trained on the training split's eval_name: it names the task
    assert np.mean(groups == calibration.sources.astype(str)) > 0.95
    scores = artifact.predict_proba(queries)
    expected = RACER(0.2, 0.1).fit(scores, calibration.labels, groups=groups)
    assert {g.name: g.threshold for g in artifact.racer.groups_.values()} == {
        g.name: g.threshold for g in expected.groups_.values()
    }
    for group in expected.groups_.values():
        assert f"{group.name}: n = {group.n}, lambda = {group.threshold:.4f}" in result.output
    metadata = json.loads((tmp_path / "art" / METADATA_FILE).read_text())
    assert metadata["groups"]["column"] == "eval_name" and metadata["groups"]["classifier"]


def test_route_refuses_a_per_group_artifact_without_classifier(pooled, tmp_path):
    assert _calibrate(pooled, tmp_path / "art").exit_code == 0
    queries = tmp_path / "queries.txt"
    queries.write_text("What is 2 + 2?\n")
    result = runner.invoke(
        app, ["route", "--artifact", str(tmp_path / "art"), "--input", str(queries)]
    )
    assert result.exit_code != 0
    assert "certified per group ['arc-challenge', 'mbpp']" in result.output
    assert "metadata.racer_group" in result.output
