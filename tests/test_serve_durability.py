"""Durability: ``kill -9`` of a real ``racer serve`` process under load, repeatedly,
loses no decision whose answer reached a client; and stalled or oversized requests are
cut off by the server within its configured limits."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from fastapi import FastAPI
from tcp_proxy import proxied_postgres

from racer.artifact import save_artifact
from racer.estimator import RACER
from racer.routers import LogisticRouter, TfidfEmbedder
from racer.serve.runner import ServerThread

MODELS = ("small", "medium", "large")
KEY = "durability-key"
SRC = Path(__file__).resolve().parents[1] / "src"


def upstream() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete() -> dict:
        message = {"role": "assistant", "content": "The answer is B"}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    return app


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A small artifact, three loopback upstreams and a gateway.yaml using them."""
    folder = tmp_path_factory.mktemp("durability")
    rng = np.random.default_rng(0)
    words = ["algebra", "history", "poetry", "physics", "cooking", "law"]
    queries = [f"{words[i % 6]} question {i} {words[(i * 7) % 6]}" for i in range(300)]
    labels = (rng.random((300, 3)) < [0.4, 0.6, 0.8]).astype(float)
    embedder = TfidfEmbedder(n_components=4, progress=False)
    router = LogisticRouter(C=1.0, embedder=embedder).fit(
        queries[:150], labels[:150], model_names=MODELS
    )
    racer = RACER(alpha=0.3, delta=0.1).fit(
        router.predict_proba(queries[150:]), labels[150:], model_names=MODELS
    )
    save_artifact(folder / "artifact", router, racer)
    with ServerThread([upstream() for _ in MODELS]) as servers:
        config = {
            "backends": [
                {"name": m, "base_url": f"{u}/v1"}
                for m, u in zip(MODELS, servers.urls, strict=True)
            ],
            "routes": [{"name": "racer", "artifact": "artifact"}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": "sqlite:///decisions.sqlite3"},
            "server": {"read_timeout_s": 1.0, "max_header_bytes": 4096},
        }
        (folder / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        # the default limits, for load on a busy machine (a 1 s read deadline may cut
        # off requests the saturated event loop has not read yet)
        del config["server"]
        config["decision_log"] = {"url": "sqlite:///load-decisions.sqlite3"}
        (folder / "load.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        yield folder, queries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ADMIN_KEY = "durability-admin"


def serve_command(folder: Path, config: str, port: int, workers: int) -> list[str]:
    """``racer serve`` of ``folder / config``, from this checkout's sources."""
    return [
        sys.executable,
        "-c",
        "from racer.cli import app; app()",
        "serve",
        "--config",
        str(folder / config),
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]


def serve_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "RACER_ADMIN_KEYS": ADMIN_KEY}


def start_gateway(
    folder: Path, port: int, workers: int = 1, config: str = "gateway.yaml"
) -> subprocess.Popen:
    process = subprocess.Popen(
        serve_command(folder, config, port, workers),
        env=serve_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: kill -9 reaches every worker
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError("racer serve did not start within 60 s")


class Load:
    """Client threads sending chat completions to a gateway; every answer kept.

    ``answers`` holds (status, id, logged, sent) per response, ``sent`` the monotonic
    time the request was sent.
    """

    def __init__(self, port: int, queries: list[str], clients: int = 6, seed: int = 0):
        self.answers: list[tuple[int, str | None, bool | None, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(port, queries, seed + 37 * t))
            for t in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, port: int, queries: list[str], k: int) -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}
        ) as http:
            while not self._stop.is_set():
                k += 1
                body = {
                    "model": "racer",
                    "messages": [{"role": "user", "content": queries[k % 300]}],
                }
                sent = time.monotonic()
                try:
                    response = http.post("/v1/chat/completions", json=body, timeout=5)
                except httpx.HTTPError:
                    continue
                answer = (response.status_code, None, None, sent)
                if response.status_code == 200:
                    racer = response.json()
                    answer = (200, racer["id"], racer["racer"]["logged"], sent)
                with self._lock:
                    self.answers.append(answer)

    def answered(self) -> int:
        return sum(1 for status, *_ in self.answers if status == 200)

    def wait_for(self, more: int, timeout_s: float = 15) -> None:
        """Until ``more`` answers more than now (or ``timeout_s``)."""
        target, deadline = self.answered() + more, time.monotonic() + timeout_s
        while self.answered() < target and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def kill_9(process: subprocess.Popen) -> None:
    """SIGKILL the gateway and its workers at once (no shutdown, no checkpoint)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def outside_read(path: Path) -> None:
    """What an operator's ``sqlite3``, a backup or ``racer dataset --from-log`` does."""
    reader = sqlite3.connect(path)
    reader.execute("SELECT COUNT(*) FROM decisions").fetchone()
    reader.close()


@pytest.mark.parametrize(("workers", "rounds"), [(1, 2), (2, 1)])
def test_kill_9_under_load_after_an_outside_read_loses_no_answered_decision(
    deployment, workers, rounds
):
    folder, queries = deployment
    config = f"kill-{workers}.yaml"
    settings = yaml.safe_load((folder / "gateway.yaml").read_text(encoding="utf-8"))
    settings["decision_log"]["url"] = f"sqlite:///kill-{workers}.sqlite3"
    (folder / config).write_text(yaml.safe_dump(settings), encoding="utf-8")
    database = folder / f"kill-{workers}.sqlite3"
    answers = []
    for round_ in range(rounds):
        process = start_gateway(folder, port := free_port(), workers, config)
        load = Load(port, queries, seed=1000 * round_)
        load.wait_for(20)
        outside_read(database)  # the read that used to detach the gateway's WAL
        load.wait_for(20)  # under load: some answers in flight when the kill comes
        kill_9(process)
        load.stop()
        answers += load.answers
    connection = sqlite3.connect(database)
    stored = {row[0] for row in connection.execute("SELECT id FROM decisions")}
    connection.close()
    logged = {decision_id for status, decision_id, was_logged, _ in answers if was_logged}
    answered = [a for a in answers if a[0] == 200]
    print(
        f"{len(answered)} answered over {rounds} kill -9 with {workers} worker(s), "
        f"{len(logged - stored)} lost"
    )
    assert len(logged) == len(answered) >= 20 * rounds  # every answer said logged: true
    assert logged <= stored
    assert database.stat().st_mode & 0o777 == 0o600



@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_under_load_after_an_outside_read_loses_nothing_on_postgres(deployment, workers):
    folder, queries = deployment
    with proxied_postgres() as (url, _):
        import psycopg

        settings = yaml.safe_load((folder / "gateway.yaml").read_text(encoding="utf-8"))
        settings["decision_log"] = {"url": url}
        (folder / f"kill-pg-{workers}.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
        process = start_gateway(folder, port := free_port(), workers, f"kill-pg-{workers}.yaml")
        load = Load(port, queries, seed=77 + workers)
        load.wait_for(20)
        with psycopg.connect(url) as reader:  # an operator's psql, a backup, an export
            reader.execute("SELECT COUNT(*) FROM decisions").fetchone()
        load.wait_for(20)  # under load: some answers in flight when the kill comes
        kill_9(process)
        load.stop()
        with psycopg.connect(url) as connection:
            stored = {row[0] for row in connection.execute("SELECT id FROM decisions")}
    answered = [a for a in load.answers if a[0] == 200]
    logged = {decision_id for _, decision_id, was_logged, _ in answered if was_logged}
    assert len(logged) == len(answered) >= 40  # every answer said logged: true
    assert logged <= stored

def test_stalled_and_oversized_requests_are_cut_off(deployment):
    folder, _ = deployment
    port = free_port()
    process = start_gateway(folder, port)
    try:
        stalled = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            stalled.append(sock)
        idle = socket.create_connection(("127.0.0.1", port))
        big = socket.create_connection(("127.0.0.1", port))
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        assert big.recv(200).startswith(b"HTTP/1.1 431")
        started = time.monotonic()
        for sock in [*stalled, idle]:
            sock.settimeout(5)
            data = sock.recv(200)  # b"" or a 408 then the close
            while data:
                assert data.startswith(b"HTTP/1.1 408") or not data.startswith(b"HTTP/1.1 2")
                data = sock.recv(200)
        closed_after = time.monotonic() - started
        assert closed_after < 2.5  # read_timeout_s = 1
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
    finally:
        process.kill()
        process.wait(10)


def test_workers_share_metrics_and_the_monitor(deployment):
    folder, queries = deployment
    port = free_port()
    process = start_gateway(folder, port, workers=2)
    base = f"http://127.0.0.1:{port}"
    client_auth = {"Authorization": f"Bearer {KEY}"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        ids = []
        for k in range(16):  # a fresh connection each: both workers answer some
            body = {"model": "racer", "messages": [{"role": "user", "content": queries[k]}]}
            response = httpx.post(f"{base}/v1/chat/completions", json=body, headers=client_auth)
            assert response.status_code == 200
            ids.append(response.json()["id"])
        for decision_id in ids[:10]:
            feedback = {"id": decision_id, "correct": False}
            assert httpx.post(f"{base}/v1/feedback", json=feedback, headers=client_auth).is_success
        scrapes, healths = set(), set()
        for _ in range(10):
            text = httpx.get(f"{base}/metrics", headers=admin).text
            lines = [
                line
                for line in text.splitlines()
                if line.startswith(("racer_requests_total", "racer_monitor_feedback{"))
            ]
            scrapes.add(tuple(sorted(lines)))
            health = httpx.get(f"{base}/healthz", headers=admin).json()
            healths.add(health["routes"]["racer"]["monitor"]["n_feedback"])
    finally:
        process.terminate()
        process.wait(30)
    assert len(scrapes) == 1, scrapes  # every scrape, whichever worker, says the same
    (lines,) = scrapes
    requests = sum(float(line.split()[-1]) for line in lines if line.startswith("racer_requests"))
    assert requests == 16
    assert 'racer_monitor_feedback{route="racer"} 10.0' in lines
    assert healths == {10}


def test_the_latency_metric_measures_what_a_separate_client_sees(deployment):
    """50 concurrent connections from this process to a ``racer serve`` process."""
    import asyncio

    folder, queries = deployment
    port = free_port()
    process = start_gateway(folder, port, config="load.yaml")
    base = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:

        async def one_client(k: int) -> list[float]:
            # A raw keep-alive HTTP/1.1 client: little CPU of its own, so that its
            # latency is the server's and not the time a busy client loop takes.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies = []
            for j in range(4):
                body = json.dumps(
                    {
                        "model": "racer",
                        "messages": [{"role": "user", "content": queries[(4 * k + j) % 300]}],
                    }
                ).encode()
                head = (
                    f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                started = time.perf_counter()
                writer.write(head + body)
                status = await reader.readuntil(b"\r\n\r\n")
                length = int(status.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                assert status.startswith(b"HTTP/1.1 200"), status
            writer.close()
            return latencies

        async def load() -> list[float]:
            per_client = await asyncio.gather(*(one_client(k) for k in range(50)))
            return [latency for latencies in per_client for latency in latencies]

        latencies = asyncio.run(load())
        metrics = httpx.get(f"{base}/metrics", headers=admin).text
    finally:
        process.kill()
        process.wait(10)
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("racer_request_latency_seconds_")
    }
    count = values['racer_request_latency_seconds_count{route="racer"}']
    metric_mean = values['racer_request_latency_seconds_sum{route="racer"}'] / count
    client_mean = float(np.mean(latencies))
    print(f"client mean {client_mean * 1000:.1f} ms, metric mean {metric_mean * 1000:.1f} ms")
    assert count == 200
    # within 20 % (issue 10); the old in-handler metric under-reported about 10x
    assert 0.8 * client_mean <= metric_mean <= client_mean


@pytest.mark.parametrize(("on_log_failure", "workers"), [("serve", 1), ("refuse", 2)])
def test_a_postgres_outage_under_load_loses_no_logged_decision(deployment, on_log_failure, workers):
    """The database goes away for 2 s under load (a restart, as its clients see it)."""
    folder, queries = deployment
    with proxied_postgres() as (url, proxy):
        settings = yaml.safe_load((folder / "gateway.yaml").read_text(encoding="utf-8"))
        settings["decision_log"] = {"url": url, "on_log_failure": on_log_failure}
        (folder / "pg.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
        process = start_gateway(folder, port := free_port(), workers, "pg.yaml")
        base, admin = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {ADMIN_KEY}"}
        try:
            load = Load(port, queries)
            load.wait_for(20)
            proxy.cut()
            cut = time.monotonic()
            while (ready := httpx.get(f"{base}/readyz", timeout=5)).status_code == 200:
                assert time.monotonic() - cut < 2, "readiness missed the outage"
                time.sleep(0.05)
            some_id = next(a[1] for a in load.answers if a[2])
            feedback = httpx.post(
                f"{base}/v1/feedback", json={"id": some_id, "correct": True}, headers=admin
            )
            metrics = httpx.get(f"{base}/metrics", headers=admin)
            health = httpx.get(f"{base}/healthz", headers=admin)
            time.sleep(max(0.0, cut + 2 - time.monotonic()))
            proxy.restore()
            while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() - cut < 12, "the log did not reconnect"
                time.sleep(0.05)
            back = time.monotonic()
            load.wait_for(20)
            load.stop()
        finally:
            kill_9(process)
        import psycopg

        with psycopg.connect(os.environ["RACER_TEST_POSTGRES_URL"]) as connection:
            stored = {row[0] for row in connection.execute("SELECT id FROM decisions")}
    assert ready.status_code == 503 and int(ready.headers["retry-after"]) >= 1
    assert feedback.status_code == 503 and metrics.status_code == health.status_code == 200
    assert "racer_decision_log_up 0.0" in metrics.text
    answered = [a for a in load.answers if a[0] == 200]
    logged = {decision_id for _, decision_id, was_logged, _ in answered if was_logged}
    unlogged = [a for a in answered if not a[2]]
    refused = [a for a in load.answers if a[0] == 503]
    print(
        f"{on_log_failure}, {workers} worker(s): {len(answered)} answered, "
        f"{len(unlogged)} unlogged, "
        f"{len(refused)} refused, reconnected {back - cut:.1f} s after the cut"
    )
    assert logged <= stored  # no answer says logged: true without being in the log
    assert not [a for a in unlogged if a[3] > back]  # once ready again: all logged
    assert len(logged) >= 40
    if on_log_failure == "refuse":
        assert not unlogged and refused
    else:
        assert unlogged and not refused


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unreachable_postgres_at_start_is_one_error_line(deployment, workers, monkeypatch):
    pytest.importorskip("psycopg")
    from typer.testing import CliRunner

    from racer.cli import app

    folder, _ = deployment
    closed_port = free_port()
    settings = yaml.safe_load((folder / "gateway.yaml").read_text(encoding="utf-8"))
    settings["decision_log"] = {"url": f"postgresql://racer:s3cret@127.0.0.1:{closed_port}/db"}
    (folder / "unreachable.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    monkeypatch.setenv("RACER_ADMIN_KEYS", ADMIN_KEY)
    command = serve_command(folder, "unreachable.yaml", free_port(), workers)
    done = CliRunner().invoke(app, command[3:])  # in this process: nothing starts
    errors = done.output.strip().splitlines()
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit)
    assert len(errors) == 1, errors
    redacted = f"postgresql://racer@127.0.0.1:{closed_port}/db"
    assert errors[0].startswith(f"Error: cannot connect to the decision log at {redacted}: ")
    assert "s3cret" not in errors[0]
