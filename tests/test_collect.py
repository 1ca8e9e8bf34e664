"""`racer collect` and `racer grade --references` over loopback: 11 RouterBench replay
servers (one per model) answering 200 ARC-Challenge prompts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from data_fakes import CountingApp, arc_test, derived_references, write_queries
from typer.testing import CliRunner

from racer.cli import app
from racer.data.load import load_dataset
from racer.owndata.collect import Budget, Journal, Query, collect
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.runner import ServerThread

N_QUERIES = 200
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arc(shared_data):
    return arc_test(shared_data, N_QUERIES)


@pytest.fixture(scope="module")
def replays(arc):
    """One counting replay server per model (20 ms per answer)."""
    counts: Counter = Counter()
    book = ReplayBook(arc)
    apps = [
        CountingApp(create_replay_app(book, m, latency_s=0.02), m, counts) for m in book.model_names
    ]
    with ServerThread(apps) as servers:
        yield dict(zip(book.model_names, servers.urls, strict=True)), counts


def gateway_yaml(path: Path, urls: dict[str, str], **defaults) -> Path:
    """A configuration with backends only (no routes: nothing is calibrated yet)."""
    config = {
        "backend_defaults": {"retries": 0, "max_concurrency": 4, **defaults},
        "backends": [{"name": m, "base_url": f"{u}/v1"} for m, u in urls.items()],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def collected(arc, replays, tmp_path_factory):
    """A full collection of the 200 prompts (2,200 rows), and the requests it caused."""
    urls, counts = replays
    folder = tmp_path_factory.mktemp("collect")
    before = Counter(counts)
    queries = write_queries(arc, folder / "queries.jsonl", derived_references(arc))
    out = folder / "responses.jsonl"
    invoke(
        "collect",
        "--config",
        gateway_yaml(folder / "gateway.yaml", urls),
        "--queries",
        queries,
        "--out",
        out,
        "--no-progress",
    )
    return out, counts - before


def test_collect_writes_every_pair_once(arc, collected):
    out, requests = collected
    rows = rows_of(out)
    assert len(rows) == N_QUERIES * 11 == 2200
    assert len({(r["query_id"], r["model"]) for r in rows}) == 2200
    assert sum(requests.values()) == 2200 and set(requests.values()) == {1}
    assert not [r for r in rows if r["error"]]
    assert all(r["logprobs"] is None for r in rows)  # no backend sets `logprobs: true`
    row_of = {q: i for i, q in enumerate(arc.query_ids)}
    for r in rows[::97]:
        column = arc.model_names.index(r["model"])
        assert r["response"] == arc.responses[row_of[r["query_id"]], column]
        assert r["prompt_tokens"] > 0 and r["latency_s"] >= 0.02


def test_collected_responses_load_as_a_dataset_once_graded(arc, collected, tmp_path):
    """grade --references with references derived from the data agrees with RouterBench's
    own correctness labels on at least 97 % of the cells."""
    out, _ = collected
    references = tmp_path / "references.jsonl"
    with references.open("w") as handle:
        for query_id, reference in zip(arc.query_ids, derived_references(arc), strict=True):
            handle.write(json.dumps({"query_id": str(query_id), "reference": reference}) + "\n")
    graded = tmp_path / "graded.jsonl"
    invoke("grade", "--data", out, "--references", references, "--out", graded)
    rows = rows_of(graded)
    assert {r["grade_rule"] for r in rows} == {"choice"}
    data = load_dataset(graded)
    assert data.n_queries == N_QUERIES and set(data.model_names) == set(arc.model_names)
    order = [list(data.query_ids).index(q) for q in arc.query_ids]
    columns = [data.model_names.index(m) for m in arc.model_names]
    ours = data.labels[np.ix_(order, columns)]
    known = ~np.isnan(arc.labels)
    agreement = np.mean(ours[known] == arc.labels[known])
    print(f"grade --references agrees with RouterBench labels on {agreement:.4f} of cells")
    assert agreement >= 0.97
    assert data.responses is not None and data.costs is not None


def test_kill_9_halfway_then_resume(arc, replays, tmp_path):
    """Killed with SIGKILL halfway, rerun: 2,200 distinct rows, and no written row's
    request was ever sent again."""
    urls, counts = replays
    config = gateway_yaml(tmp_path / "gateway.yaml", urls, max_concurrency=1)
    queries = write_queries(arc, tmp_path / "queries.jsonl")
    out = tmp_path / "responses.jsonl"
    command = [
        sys.executable,
        "-c",
        "from racer.cli import app; app()",
        "collect",
        "--config",
        str(config),
        "--queries",
        str(queries),
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    before = Counter(counts)
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 1100:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(0.2)  # requests in flight at the kill reach the servers
    first = Journal(out)
    written = set(first.rows)
    first.close()
    assert 1000 <= len(written) < 2200
    at_kill = counts - before
    prompt_of = {str(q): str(t) for q, t in zip(arc.query_ids, arc.queries, strict=True)}
    assert all(at_kill[(m, prompt_of[q])] == 1 for q, m in written)

    rerun = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()
    rows = rows_of(out)
    assert len(rows) == 2200 and len({(r["query_id"], r["model"]) for r in rows}) == 2200
    after = counts - before
    assert all(after[(m, prompt_of[q])] == 1 for q, m in written)
    assert f"{len(written)} from earlier runs" in rerun.stdout.decode()


class UpstreamPriced:
    """A backend whose upstream reports the cost (``cost_from_upstream: true``, no token
    prices): ``dollars_per_token`` times the prompt's tokens (4 characters each) and the
    answer's, like a provider's bill."""

    def __init__(self, name: str, dollars_per_token: float, answer_tokens: int):
        self.name = name
        self.config = SimpleNamespace(
            max_concurrency=4, input_cost_per_token=0.0, output_cost_per_token=0.0,
            cost_from_upstream=True,
        )  # fmt: skip
        self.dollars_per_token = dollars_per_token
        self.answer_tokens = answer_tokens
        self.calls = 0

    async def complete(self, body):
        self.calls += 1
        await asyncio.sleep(0.001)
        prompt_tokens = -(-len(body["messages"][0]["content"]) // 4)
        tokens = prompt_tokens + self.answer_tokens
        return SimpleNamespace(
            backend=self.name, text="A", cost_usd=self.dollars_per_token * tokens,
            latency_s=0.001, prompt_tokens=prompt_tokens, completion_tokens=self.answer_tokens,
            error=None,
        )  # fmt: skip


@pytest.mark.parametrize("budget_usd", [0.01, 0.05, 0.2])
def test_budget_holds_with_prices_from_the_upstream(budget_usd, tmp_path):
    """The review's case: 3.2x the budget spent when the upstream priced the calls."""
    queries = [Query(str(i), "Which gas do plants absorb? " * (1 + i % 7)) for i in range(300)]
    backends = {
        "big": UpstreamPriced("big", 2e-5, 40),
        "small": UpstreamPriced("small", 1e-6, 5),
    }
    journal = Journal(tmp_path / "rows.jsonl")
    summary = asyncio.run(
        collect(queries, backends, journal, budget=Budget(budget_usd, max_tokens=64))
    )
    journal.close()
    spent = sum(row["cost"] for row in journal.rows.values())
    assert summary.stopped == "budget" and 0 < summary.written < 600
    assert spent == pytest.approx(summary.spent_usd) and budget_usd / 2 < spent <= budget_usd
    assert sum(b.calls for b in backends.values()) == summary.written


def test_budget_stops_before_it_is_exceeded_and_resumes(arc, replays, tmp_path):
    urls, counts = replays
    config = gateway_yaml(
        tmp_path / "gateway.yaml", urls, input_cost_per_token=1e-5, output_cost_per_token=3e-5
    )
    subset = arc.subset(np.arange(20))
    queries = write_queries(subset, tmp_path / "queries.jsonl")
    out = tmp_path / "responses.parquet"
    result = invoke(
        "collect",
        "--config",
        config,
        "--queries",
        queries,
        "--out",
        out,
        "--budget-usd",
        "0.5",
        "--max-tokens",
        "64",
        "--no-progress",
    )
    journal = out.with_name(out.name + ".journal.jsonl")
    rows = rows_of(journal)
    spent = sum(r["cost"] for r in rows)
    assert 0 < len(rows) < 220 and spent <= 0.5
    assert "Stopped by the budget" in result.output and not out.exists()
    invoke("collect", "--config", config, "--queries", queries, "--out", out, "--no-progress")
    data = __import__("racer.owndata.collect", fromlist=["read_rows"]).read_rows(out)
    assert len(data) == 220 and len({(r["query_id"], r["model"]) for r in data}) == 220
    assert not journal.exists()


def test_user_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"text": "no query field"}\n')
    (tmp_path / "g.yaml").write_text("backends: []\n")
    result = CliRunner().invoke(
        app,
        [
            "collect",
            "--config",
            str(tmp_path / "g.yaml"),
            "--queries",
            str(tmp_path / "q.jsonl"),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error:") and "'query'" in result.output
    (tmp_path / "q.jsonl").write_text('{"query": "hi"}\n')
    result = CliRunner().invoke(
        app,
        [
            "collect",
            "--config",
            str(tmp_path / "g.yaml"),
            "--queries",
            str(tmp_path / "q.jsonl"),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert result.exit_code == 2 and "backends" in result.output


def test_failed_calls_are_rows_and_retry_errors_replaces_them(arc, tmp_path):
    """A flaky backend: failed calls are written with their error; a plain rerun asks
    nothing again; --retry-errors asks only the failed pairs and leaves one row each."""
    counts: Counter = Counter()
    subset = arc.subset(np.arange(20))
    book = ReplayBook(subset)
    flaky = create_replay_app(book, "claude-v2", failure_rate=0.4, seed=3)
    apps = [CountingApp(flaky, "claude-v2", counts)]
    apps.append(CountingApp(create_replay_app(book, "claude-v1"), "claude-v1", counts))
    with ServerThread(apps) as servers:
        urls = dict(zip(["claude-v2", "claude-v1"], servers.urls, strict=True))
        config = gateway_yaml(tmp_path / "gateway.yaml", urls)
        queries = write_queries(subset, tmp_path / "queries.jsonl")
        out = tmp_path / "responses.jsonl"
        args = ["collect", "--config", config, "--queries", queries, "--out", out]
        invoke(*args, "--no-progress", "--models", "claude-v2")
        rows = rows_of(out)
        failed = [r for r in rows if r["error"]]
        assert len(rows) == 20 and {r["model"] for r in rows} == {"claude-v2"}
        assert failed and all("HTTP 500" in r["error"] and r["response"] is None for r in failed)
        asked = sum(counts.values())
        invoke(*args, "--no-progress", "--models", "claude-v2")
        assert sum(counts.values()) == asked and len(rows_of(out)) == 20
        invoke(*args, "--no-progress", "--retry-errors")
        assert sum(counts.values()) == asked + len(failed) + 20  # failed pairs + claude-v1
        rows = rows_of(out)
        assert len(rows) == 40 and len({(r["query_id"], r["model"]) for r in rows}) == 40


class SlowBackend:
    """A stand-in backend answering after ``delay_s``, at most one call at a time."""

    def __init__(self, name: str, delay_s: float):
        from racer.serve.config import BackendConfig

        self.name, self.delay_s = name, delay_s
        self.config = BackendConfig(name=name, base_url="http://unused", max_concurrency=1)

    async def complete(self, body: dict):
        from racer.serve.backends import BackendCall

        await asyncio.sleep(self.delay_s)
        return BackendCall(self.name, "A", self.delay_s, 1)


def test_deadline_stops_starting_calls(tmp_path):
    queries = [Query(str(i), f"question {i}") for i in range(20)]
    backends = {n: SlowBackend(n, 0.2) for n in ("m1", "m2")}
    journal = Journal(tmp_path / "out.jsonl")
    summary = asyncio.run(collect(queries, backends, journal, deadline_s=0.5))
    journal.close()
    assert summary.stopped == "deadline" and not summary.complete
    assert summary.written + summary.skipped == 40 and 2 <= summary.written <= 10
    assert len(rows_of(tmp_path / "out.jsonl")) == summary.written
