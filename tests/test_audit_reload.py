"""Audit sampling, the audited-sample export, recalibration and reload without downtime,
end to end over loopback: 11 RouterBench replay servers behind the gateway (built from a
YAML file and a saved artifact); SQLite, and PostgreSQL when RACER_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import warnings
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from data_fakes import arc_test, derived_references
from scipy.stats import binom
from typer.testing import CliRunner

from racer.artifact import load_artifact, save_artifact
from racer.cli import app as cli
from racer.data.load import load_dataset
from racer.estimator import RACER
from racer.owndata.dataset_export import _connect, export_audited
from racer.routers import make_router
from racer.serve.app import app_from_config
from racer.serve.audit import AuditDraws, call_probabilities
from racer.serve.config import load_config
from racer.serve.reload import install_sighup, reload_from_file
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.runner import ServerThread

KEY, ADMIN = "audit-client-key", "audit-admin-key"
ROUTE = "racer-arc"
N_REQUESTS, RATE = 500, 0.1


def log_urls() -> list[str]:
    urls = ["sqlite"]
    if os.environ.get("RACER_TEST_POSTGRES_URL"):
        urls.append("postgresql")
    return urls


@pytest.fixture(scope="module")
def arc(shared_data):
    return arc_test(shared_data)


@pytest.fixture(scope="module")
def replays(arc):
    book = ReplayBook(arc)
    # 30 ms per answer: network time, not CPU noise, dominates the latencies compared.
    apps = [create_replay_app(book, m, latency_s=0.03) for m in book.model_names]
    with ServerThread(apps) as servers:
        yield dict(zip(book.model_names, servers.urls, strict=True))


@pytest.fixture(scope="module")
def artifact(shared_data, tmp_path_factory):
    """A prior router over the 11 models, calibrated on the ARC training file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_dataset(shared_data / "routerbench" / "arc_challenge_train.csv")
        names = list(train.model_names)
        router = make_router("prior").fit(list(train.queries), train.labels, model_names=names)
        racer = RACER(alpha=0.1, delta=0.1).fit(
            router.predict_proba(list(train.queries)), train.labels, model_names=names
        )
    folder = tmp_path_factory.mktemp("artifact") / "arc"
    save_artifact(folder, router, racer)
    return folder


def write_config(folder: Path, urls: dict[str, str], artifact: Path, log_url: str) -> Path:
    config = {
        "backend_defaults": {"retries": 0, "max_concurrency": 32},
        "backends": [{"name": m, "base_url": f"{u}/v1"} for m, u in urls.items()],
        "routes": [{"name": ROUTE, "artifact": str(artifact), "audit_rate": RATE, "audit_seed": 7}],
        "auth": {"api_keys": [KEY], "admin_keys": [ADMIN], "admin_keys_env": None},
        "decision_log": {"url": log_url, "store_prompts": True},  # the export needs text
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def resolve_log(kind: str, folder: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder / 'decisions.sqlite3'}"
    return os.environ["RACER_TEST_POSTGRES_URL"]


def fetch(url: str, sql: str, params: list) -> list[tuple]:
    connection, mark = _connect(url)
    try:
        return connection.execute(sql.replace("?", mark), params).fetchall()
    finally:
        connection.close()


async def send(client: httpx.AsyncClient, query: str) -> tuple[int, float, dict]:
    started = time.perf_counter()
    body = {"model": ROUTE, "messages": [{"role": "user", "content": query}]}
    response = await client.post("/v1/chat/completions", json=body)
    return response.status_code, time.perf_counter() - started, response.json()


async def until(condition, workers, timeout_s: float = 60.0) -> None:
    """Wait for ``condition()``; fail if a worker died or time ran out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for worker in workers:
            if worker.done():
                worker.result()  # raises the worker's error
        assert time.monotonic() < deadline, "the load did not progress"
        await asyncio.sleep(0.01)


def test_audit_draws_are_seeded_and_content_free():
    first, second = AuditDraws(), AuditDraws()
    a = [first.draw("r", 0.3, 1) for _ in range(1000)]
    assert a == [second.draw("r", 0.3, 1) for _ in range(1000)]
    assert abs(np.mean(a) - 0.3) < 0.05
    assert not any(AuditDraws().draw("r", 0.0, 1) for _ in range(100))
    assert call_probabilities(("a", "b", "c"), ["b"], 0.1) == {"a": 0.1, "b": 1.0, "c": 0.1}


@pytest.mark.parametrize("kind", log_urls())
def test_audit_export_calibrate_reload(kind, arc, replays, artifact, shared_data, tmp_path):
    log_url = resolve_log(kind, tmp_path)
    config_path = write_config(tmp_path, replays, artifact, log_url)
    app = app_from_config(load_config(config_path))
    gateway = app.state.gateway
    queries = [str(q) for q in arc.queries]
    started_at = time.time()
    old_id = gateway.routes[ROUTE].artifact_id

    async def serve_500() -> list[tuple[int, float, dict]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers={"Authorization": f"Bearer {KEY}"}
        ) as client:
            slots = asyncio.Semaphore(16)

            async def one(i: int) -> tuple[int, float, dict]:
                async with slots:
                    return await send(client, queries[i % len(queries)])

            results = await asyncio.gather(*(one(i) for i in range(N_REQUESTS)))
        await gateway.audit.drain()
        return results

    loop = asyncio.new_event_loop()  # one loop, as in a server: the clients keep their pools
    results = loop.run_until_complete(serve_500())
    assert [status for status, _, _ in results] == [200] * N_REQUESTS
    ids = [body["racer"]["id"] for _, _, body in results]
    meta = {
        row[0]: row
        for row in fetch(
            log_url,
            "SELECT decision_id, audited, call_probability, artifact_id FROM decision_audit "
            f"WHERE decision_id IN ({', '.join('?' * len(ids))})",
            ids,
        )
    }
    assert len(meta) == N_REQUESTS  # every decision logs its call probabilities
    audited = [i for i in ids if meta[i][1] == 1]
    low, high = binom.ppf(0.0005, N_REQUESTS, RATE), binom.isf(0.0005, N_REQUESTS, RATE)
    print(f"{len(audited)} of {N_REQUESTS} requests audited (99.9 % range {low:g}-{high:g})")
    assert low <= len(audited) <= high
    for (_, _, body), decision_id in zip(results, ids, strict=True):
        probabilities = json.loads(meta[decision_id][2])
        invoked = set(body["racer"]["set"])
        assert probabilities == {m: 1.0 if m in invoked else RATE for m in arc.model_names}
        assert meta[decision_id][3] == old_id
    responses = fetch(
        log_url,
        "SELECT decision_id, model, response, error FROM audit_responses "
        f"WHERE decision_id IN ({', '.join('?' * len(ids))})",
        ids,
    )
    per_decision = Counter(r[0] for r in responses)
    assert set(per_decision) == set(audited) and set(per_decision.values()) == {11}
    prompt_of = {
        body["racer"]["id"]: queries[i % len(queries)] for i, (_, _, body) in enumerate(results)
    }
    book = ReplayBook(arc)
    assert all(r[3] is None and r[2] == book.response(r[1], prompt_of[r[0]]) for r in responses)
    latency = np.array([seconds for _, seconds, _ in results])
    is_audited = np.isin(ids, audited)
    ratio = np.median(latency[is_audited]) / np.median(latency[~is_audited])
    print(f"median client latency audited / not audited: {ratio:.2f}")
    assert ratio < 1.5

    # Export the audited sample, grade it, calibrate a new artifact from it.
    audited_file, graded = tmp_path / "audited.jsonl", tmp_path / "graded.jsonl"
    run = CliRunner().invoke(
        cli,
        ["dataset", "--from-log", log_url, "--route", ROUTE, "--since", str(started_at - 1),
         "--out", str(audited_file)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    rows = [json.loads(line) for line in audited_file.read_text().splitlines()]
    assert len(rows) == 11 * len(audited) and all(r["label"] is None for r in rows)
    references = tmp_path / "references.jsonl"
    references.write_text(
        "".join(
            json.dumps({"query": q, "reference": r}) + "\n"
            for q, r in zip(queries, derived_references(arc), strict=True)
        )
    )
    run = CliRunner().invoke(
        cli,
        [
            "grade",
            "--data",
            str(audited_file),
            "--references",
            str(references),
            "--out",
            str(graded),
        ],
    )
    assert run.exit_code == 0, run.output
    new_artifact = tmp_path / "recalibrated"
    run = CliRunner().invoke(
        cli,
        ["calibrate", "--train", str(shared_data / "routerbench" / "arc_challenge_train.csv"),
         "--calibration", str(graded), "--router", "prior", "--alpha", "0.2",
         "--out", str(new_artifact)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert load_artifact(new_artifact).racer.n_calibration_ == len(audited)

    # Reload under load: zero failed requests, each decision names its artifact.
    async def reload_under_load() -> tuple[list[int], list[dict], dict]:
        transport = httpx.ASGITransport(app=app)
        statuses, bodies, stop = [], [], asyncio.Event()
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers={"Authorization": f"Bearer {KEY}"}
        ) as client:

            async def worker(k: int) -> None:
                i = k
                while not stop.is_set():
                    status, _, body = await send(client, queries[i % len(queries)])
                    statuses.append(status)
                    bodies.append(body)
                    i += 8

            workers = [asyncio.create_task(worker(k)) for k in range(8)]
            await until(lambda: len(statuses) >= 30, workers)  # load before the reload
            admin = {"Authorization": f"Bearer {ADMIN}"}
            refused = await client.post(
                "/admin/reload",
                json={"route": ROUTE, "artifact": str(tmp_path / "missing")},
                headers=admin,
            )
            denied = await client.post(
                "/admin/reload", json={"route": ROUTE, "artifact": str(new_artifact)}
            )
            accepted = await client.post(
                "/admin/reload", json={"route": ROUTE, "artifact": str(new_artifact)},
                headers=admin,
            )  # fmt: skip
            reloaded_at = len(statuses)
            await until(lambda: len(statuses) >= reloaded_at + 40, workers)  # and after it
            stop.set()
            await asyncio.gather(*workers)
        await gateway.audit.drain()
        assert refused.status_code == 422 and "keeps its artifact" in refused.text, refused.text
        assert denied.status_code == 401
        assert accepted.status_code == 200, accepted.text
        return statuses, bodies, accepted.json()

    statuses, bodies, reloaded = loop.run_until_complete(reload_under_load())
    print(f"{len(statuses)} requests during the reload, {statuses.count(200)} answered 200")
    failed = [b for s, b in zip(statuses, bodies, strict=True) if s != 200]
    assert len(statuses) >= 70 and not failed, failed[:2]
    new_id = load_artifact_id(new_artifact)
    assert (
        reloaded["artifact_id"] == new_id != old_id and reloaded["previous_artifact_id"] == old_id
    )
    served = fetch(
        log_url,
        "SELECT artifact_id, COUNT(*) FROM decision_audit "
        f"WHERE decision_id IN ({', '.join('?' * len(bodies))}) GROUP BY artifact_id",
        [b["racer"]["id"] for b in bodies],
    )
    counts = dict(served)
    assert set(counts) == {old_id, new_id} and sum(counts.values()) == len(bodies)
    assert gateway.routes[ROUTE].calibration.alpha == 0.2

    # SIGHUP re-reads the file: its configured artifact (the original) comes back.
    install_sighup(app, config_path)
    os.kill(os.getpid(), signal.SIGHUP)
    time.sleep(0.05)
    assert gateway.routes[ROUTE].artifact_id == old_id
    assert reload_from_file(gateway, tmp_path / "nope.yaml").get("error")
    loop.run_until_complete(gateway.aclose())
    loop.close()


def load_artifact_id(folder: Path) -> str:
    return json.loads((folder / "racer_artifact.json").read_text())["metadata_sha256"][:16]


def test_reload_refuses_models_without_backends(replays, artifact, shared_data, tmp_path):
    """An artifact over other models is refused; the old one keeps serving."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = arc_test(shared_data, 200).select_models(["claude-v2", "gpt-4-1106-preview"])
    renamed = ["claude-v2", "unknown-model"]
    router = make_router("prior").fit(list(data.queries), data.labels, model_names=renamed)
    racer = RACER(alpha=0.2, delta=0.1).fit(
        router.predict_proba(list(data.queries)), data.labels, model_names=renamed
    )
    other = tmp_path / "other"
    save_artifact(other, router, racer)
    urls = dict(replays)
    config_path = write_config(tmp_path, urls, artifact, f"sqlite:///{tmp_path / 'log.db'}")
    app = app_from_config(load_config(config_path))
    gateway = app.state.gateway
    before = gateway.routes[ROUTE]

    async def attempt() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as client:  # fmt: skip
            return await client.post("/admin/reload", json={"route": ROUTE, "artifact": str(other)})

    response = asyncio.run(attempt())
    assert response.status_code == 422 and "unknown-model" in response.text
    assert gateway.routes[ROUTE] is before
    asyncio.run(gateway.aclose())


def test_export_needs_audited_decisions(tmp_path):
    from racer.serve.decision_log import DecisionLog

    DecisionLog(f"sqlite:///{tmp_path / 'empty.db'}").close()
    run = CliRunner().invoke(
        cli, ["dataset", "--from-log", f"sqlite:///{tmp_path / 'empty.db'}", "--out",
              str(tmp_path / "o.jsonl")],
    )  # fmt: skip
    assert run.exit_code == 2 and run.output.startswith("Error:") and "audit_rate" in run.output
    assert export_audited(f"sqlite:///{tmp_path / 'empty.db'}") == []


def test_alarm_names_the_recalibration_command(caplog):
    """Feedback that breaks the promise: the log and /metrics say how to recalibrate."""
    from serve_fakes import ADMIN as ADMIN_AUTH
    from serve_fakes import MODELS, TableRouter, answering, chat, serving

    router = TableRouter({}, default=[0.9, 0.2, 0.1])

    async def scenario() -> tuple[list[dict], str]:
        handlers = {m: answering(f"{m} says B") for m in MODELS}
        async with serving(handlers, router, route={"audit_rate": 1.0}) as (client, gateway):
            states = []
            for i in range(40):
                body = (await client.post("/v1/chat/completions", json=chat(f"q{i}"))).json()
                feedback = {"id": body["racer"]["id"], "correct": False}
                states.append((await client.post("/v1/feedback", json=feedback)).json())
            streamed = await client.post("/v1/chat/completions", json=chat("s", stream=True))
            assert streamed.status_code == 200
            await gateway.audit.drain()
            rows = await gateway.decision_log._run(
                lambda: gateway.decision_log._connection.execute(
                    "SELECT COUNT(*), COUNT(response) FROM audit_responses"
                ).fetchone()
            )
            metrics = (await client.get("/metrics", headers=ADMIN_AUTH)).text  # admin only
            return states, rows, metrics

    with caplog.at_level("WARNING", logger="racer.serve"):
        states, rows, metrics = asyncio.run(scenario())
    assert states[-1]["monitor"]["alarm"]
    assert "racer dataset --from-log sqlite:///:memory: --route racer" in caplog.text
    assert "POST /admin/reload" in metrics and 'racer_monitor_alarm{route="racer"} 1.0' in metrics
    # 41 audited requests (rate 1), 3 models each, every response text logged: the
    # streamed answer's text is not kept by the relay, so it was asked again.
    assert rows == (41 * 3, 41 * 3)


def test_a_reload_posted_to_one_worker_reaches_the_others(
    replays, artifact, shared_data, tmp_path, monkeypatch
):
    """Two workers (two apps over one decision log, as under --workers): a reload posted
    to one is applied by the other, at its first request and then by polling."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = arc_test(shared_data, 200)
    names = list(data.model_names)
    router = make_router("prior").fit(list(data.queries), data.labels, model_names=names)
    racer = RACER(alpha=0.2, delta=0.1).fit(
        router.predict_proba(list(data.queries)), data.labels, model_names=names
    )
    other = tmp_path / "other"
    save_artifact(other, router, racer)
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    config = load_config(write_config(tmp_path, dict(replays), artifact, log_url))
    monkeypatch.setenv("RACER_SHARED_RELOAD", "1")
    first, second = app_from_config(config), app_from_config(config)
    second.state.reload_feed.poll_s = 0.05
    ids = {load_artifact_id(artifact): "configured", load_artifact_id(other): "other"}

    def serving(app) -> str:
        return ids[app.state.gateway.routes[ROUTE].artifact_id]

    async def scenario() -> list[str]:
        seen = []
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw",
                headers={"Authorization": f"Bearer {ADMIN}"},
            )  # fmt: skip
            for app in (first, second)
        ]
        reload = {"route": ROUTE, "artifact": str(other)}
        response = await clients[0].post("/admin/reload", json=reload)
        assert response.status_code == 200 and response.json()["shared_with_workers"]
        seen.append(serving(second))  # not yet: the second worker has served nothing
        assert (await clients[1].get("/healthz")).status_code == 200
        seen.append(serving(second))  # caught up before its first request
        reload = {"route": ROUTE, "artifact": str(artifact)}
        assert (await clients[0].post("/admin/reload", json=reload)).status_code == 200
        deadline = time.monotonic() + 10
        while serving(second) != "configured" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen.append(serving(second))  # followed by polling, with no request
        for client in clients:
            await client.aclose()
        for app in (first, second):
            await app.state.gateway.aclose()
        return seen

    assert asyncio.run(scenario()) == ["configured", "other", "configured"]
