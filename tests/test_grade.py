"""`racer grade`: exact rules, and a judge reached as an OpenAI-compatible backend (a fake
server answering verdicts by rule, some unparsable, some failing), nothing lost."""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_fakes import arc_test, derived_references, judge_app
from typer.testing import CliRunner

from racer.aggregate import extract_answer
from racer.cli import app
from racer.data.generic import MissingLabelsWarning
from racer.data.load import load_dataset
from racer.owndata.grade import (
    JUDGE_PROMPT_VERSION,
    agreement,
    cohen_kappa,
    exact_label,
    judge_prompt,
    parse_verdict,
)
from racer.serve.runner import ServerThread


def test_exact_rules():
    assert exact_label("The answer is (B).", "B") == (1, "choice")
    assert exact_label("A", "(B)") == (0, "choice")
    assert exact_label("#### 1,234.0", "1234") == (1, "number")
    assert exact_label("the answer is 3.1416", "3.14159", tolerance=1e-3) == (1, "number")
    assert exact_label("the answer is 3.2", "3.14159", tolerance=1e-3) == (0, "number")
    assert exact_label("The Eiffel tower!", "eiffel  Tower", rule="exact") == (1, "exact")
    assert exact_label(None, "B") == (0, "choice")
    with pytest.raises(ValueError, match="rule must be"):
        exact_label("A", "A", rule="fuzzy")


def test_kappa_and_confusion_by_hand():
    # 20 (0,0), 5 (0,1), 10 (1,0), 15 (1,1): p_o = 0.7, p_e = 0.5 * 0.4 + 0.5 * 0.6 = 0.5
    first = [0] * 25 + [1] * 25
    second = [0] * 20 + [1] * 5 + [0] * 10 + [1] * 15
    result = agreement(first + [None], second + [1])
    assert result["n"] == 50 and result["confusion"] == [[20, 5], [10, 15]]
    assert result["agreement"] == pytest.approx(0.7)
    assert result["kappa"] == pytest.approx(0.4)
    assert np.isnan(cohen_kappa(np.ones(4), np.ones(4)))


def test_verdict_parsing():
    assert parse_verdict('Sure. {"verdict": 0, "reason": "wrong letter"}') == (0, "wrong letter")
    assert parse_verdict("VERDICT: 1") == (1, "")
    assert parse_verdict('{"verdict": true}') is None
    assert parse_verdict("verdict 1 ... or verdict 0") is None
    assert parse_verdict(None) is None


def _field(prompt: str, title: str) -> str | None:
    match = re.search(rf"{title}:\n(.*?)\n\n", prompt, re.S)
    return match.group(1) if match else None


def verdict_by_rule(prompt: str, attempt: int, down: set[int] | None = None) -> str | None:
    """Correct when the answer's letter is the reference's. A seventh of the prompts
    first get an unparsable reply, a thirteenth always do; ``down`` prompts fail (500)."""
    key = zlib.crc32(prompt.encode())
    if down is not None and key % 5 in down:
        return None
    if key % 13 == 0:
        return "Hmm, hard to say."
    if key % 7 == 0 and attempt == 1:
        return "The answer looks fine to me."
    right = extract_answer(_field(prompt, "Answer to grade"), "choice") == _field(
        prompt, "Reference answer"
    )
    return json.dumps({"verdict": int(right), "reason": "letter matches" if right else "no"})


@pytest.fixture(scope="module")
def responses(shared_data, tmp_path_factory):
    """30 ARC queries x 11 models of collected rows, with derived references."""
    data = arc_test(shared_data, 30)
    folder = tmp_path_factory.mktemp("grade")
    references = derived_references(data)
    path = folder / "responses.jsonl"
    with path.open("w") as handle:
        for i in range(data.n_queries):
            for j, model in enumerate(data.model_names):
                row = {
                    "query_id": str(data.query_ids[i]),
                    "query": str(data.queries[i]),
                    "model": model,
                    "response": data.responses[i, j],
                    "cost": float(data.costs[i, j]),
                    "reference": references[i],
                }
                handle.write(json.dumps(row) + "\n")
    refs = folder / "references.jsonl"
    refs.write_text(
        "".join(
            json.dumps({"query_id": str(q), "reference": r}) + "\n"
            for q, r in zip(data.query_ids, references, strict=True)
        )
    )
    return path, refs


def judge_config(path: Path, url: str) -> Path:
    config = {
        "backends": [{"name": "judge", "base_url": f"{url}/v1", "retries": 0, "max_concurrency": 8}]
    }
    path.write_text(yaml.safe_dump(config))
    return path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_judge_with_unparsable_and_failing_verdicts(responses, tmp_path):
    data, refs = responses
    out, report = tmp_path / "graded.jsonl", tmp_path / "agreement.json"
    calls: Counter = Counter()
    down = {0}
    judge = judge_app(lambda p, a: verdict_by_rule(p, a, down), calls)
    with ServerThread([judge]) as server:
        config = judge_config(tmp_path / "judge.yaml", server.urls[0])
        args = ["grade", "--data", str(data), "--out", str(out), "--config", str(config)]
        args += ["--judge", "judge", "--references", str(refs), "--report", str(report)]
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        rows = rows_of(out)
        assert len(rows) == 330  # nothing lost: every response has a row
        failed = [r for r in rows if r["judge_error"] and r["judge_error"].startswith("judge")]
        unparsable = [r for r in rows if r["judge_error"] == "unparsable verdict"]
        judged = [r for r in rows if r["label_judge"] is not None]
        assert failed and unparsable and len(failed) + len(unparsable) + len(judged) == 330
        assert all(r["label_judge"] is None and r["judge_calls"] == 1 for r in failed)
        assert all(r["judge_calls"] == 3 for r in unparsable)  # 1 + 2 retries
        retried = [r for r in judged if r["judge_calls"] == 2]
        assert retried  # an unparsable first verdict, then a good one
        assert all(r["label_judge"] == r["label_references"] for r in judged)
        assert all(r["judge_prompt_version"] == JUDGE_PROMPT_VERSION for r in rows)
        assert {r["label"] for r in rows} <= {0, 1}  # label from the references
        result = json.loads(report.read_text())
        assert result["n"] == len(judged) and result["agreement"] == 1.0
        assert result["kappa"] == pytest.approx(1.0)
        assert "Cohen's kappa 1.000" in first.output

        # The judge is back: a rerun asks only about the rows without a verdict.
        down.clear()
        asked_before = sum(calls.values())
        second = CliRunner().invoke(app, args)
        assert second.exit_code == 0, second.output
        rerun = rows_of(out)
        assert len(rerun) == 330
        asked = sum(calls.values()) - asked_before
        missing = [
            judge_prompt(r["query"], r["response"], r["reference"]) for r in failed + unparsable
        ]
        assert asked == sum(3 if zlib.crc32(p.encode()) % 13 == 0 else 1 for p in missing)
        assert sum(r["label_judge"] is not None for r in rerun) == 330 - len(unparsable)
        kept = {(r["query_id"], r["model"]): r for r in judged}
        for r in rerun:
            if (r["query_id"], r["model"]) in kept:
                assert r["judge_calls"] == kept[(r["query_id"], r["model"])]["judge_calls"]


def test_judge_labels_load_as_dataset(responses, tmp_path):
    data, _ = responses
    out = tmp_path / "judged.jsonl"
    calls: Counter = Counter()
    with ServerThread([judge_app(verdict_by_rule, calls)]) as server:
        config = judge_config(tmp_path / "judge.yaml", server.urls[0])
        result = CliRunner().invoke(
            app,
            [
                "grade",
                "--data",
                str(data),
                "--out",
                str(out),
                "--config",
                str(config),
                "--judge",
                "judge",
            ],
        )
    assert result.exit_code == 0, result.output
    with pytest.warns(MissingLabelsWarning, match="kept as NaN"):
        dataset = load_dataset(out)
    unknown = np.isnan(dataset.labels)
    rows = rows_of(out)
    assert unknown.sum() == sum(r["label"] is None for r in rows) > 0
    assert dataset.labels.shape == (30, 11)


def test_grade_needs_a_source(responses, tmp_path):
    data, _ = responses
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "reference"}) + "\n" for r in rows_of(data)
    ))  # fmt: skip
    result = CliRunner().invoke(
        app, ["grade", "--data", str(bare), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2 and result.output.startswith("Error: Give --references")
    assert "no row of" in result.output


def test_grade_uses_the_references_collect_stored_and_skips_null_ones(responses, tmp_path):
    data, refs = responses
    rows = rows_of(data)
    first_query = rows[0]["query_id"]
    for row in rows:  # one query without a known answer, as racer collect allows
        if row["query_id"] == first_query:
            row["reference"] = None
    stored = tmp_path / "stored.jsonl"
    stored.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "graded.jsonl"
    result = CliRunner().invoke(app, ["grade", "--data", str(stored), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Graded 319 of 330 responses (references stored by racer collect)" in result.output
    assert "11 responses have no reference and stay unlabelled" in result.output
    graded = rows_of(out)
    assert [r["label"] is None for r in graded] == [r["query_id"] == first_query for r in graded]

    # A references file with a null reference: that record is skipped, not the file.
    with_null = tmp_path / "refs_null.jsonl"
    records = [json.loads(line) for line in refs.read_text().splitlines()]
    records[0]["reference"] = None
    with_null.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["grade", "--data", str(data), "--out", str(tmp_path / "o2.jsonl")]
    result = CliRunner().invoke(app, [*args, "--references", str(with_null)])
    assert result.exit_code == 0, result.output
    assert "Graded 319 of 330" in result.output and "1 records of" in result.output


def test_references_that_match_no_response_are_an_error(responses, tmp_path):
    data, _ = responses
    wrong = tmp_path / "wrong.jsonl"
    lines = [json.dumps({"id": f"x{i}", "reference": "A"}) for i in range(5)]
    wrong.write_text("\n".join(lines) + "\n")
    args = ["grade", "--data", str(data), "--out", str(tmp_path / "o.jsonl")]
    result = CliRunner().invoke(app, [*args, "--references", str(wrong)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: None of the 5 references of --references")
    assert "'x0'" in result.output and not (tmp_path / "o.jsonl").exists()
