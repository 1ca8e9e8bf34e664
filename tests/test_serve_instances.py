"""Two ``racer serve`` instances behind HAProxy on one PostgreSQL decision log: a reload on
one is followed by the other, both hold the same risk monitors, and killing one under
load fails only the requests it was working on (docs/scale.md).

Needs RACER_TEST_POSTGRES_URL (``.ci/run`` starts a throwaway server) and ``haproxy``
on the PATH (``.ci/run`` installs it with apt-get when missing); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from fastapi import FastAPI

from racer.artifact import save_artifact
from racer.estimator import RACER
from racer.routers import PriorRouter
from racer.serve.reload import artifact_id_on_disk
from racer.serve.runner import ServerThread

pytestmark = pytest.mark.skipif(
    not os.environ.get("RACER_TEST_POSTGRES_URL") or shutil.which("haproxy") is None,
    reason="set RACER_TEST_POSTGRES_URL and install haproxy (.ci/run does both)",
)

MODELS = ("small", "medium", "large")
KEY, ADMIN_KEY = "instances-key", "instances-admin"
SRC = Path(__file__).resolve().parents[1] / "src"
ROUTE = f"racer-{uuid.uuid4().hex[:8]}"  # this run's decisions only, in a shared database
CLIENTS = 12


def upstream() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete() -> dict:
        await asyncio.sleep(0.15)  # requests stay in flight on the gateways a while
        message = {"role": "assistant", "content": "The answer is B"}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    return app


def artifact(folder: Path, alpha: float) -> Path:
    queries = [f"question {i}" for i in range(200)]
    labels = np.random.default_rng(0).random((200, 3)) < [0.8, 0.6, 0.4]
    router = PriorRouter().fit(queries, labels, model_names=list(MODELS))
    scores = router.predict_proba(queries)
    racer = RACER(alpha=alpha, delta=0.1).fit(scores, labels, model_names=list(MODELS))
    return save_artifact(folder, router, racer)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.05)


def answers(port: int, path: str = "/readyz") -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_instance(config: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", "from racer.cli import app; app()", "serve", "--config",
         str(config), "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": str(SRC), "RACER_ADMIN_KEYS": ADMIN_KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    wait_until(lambda: answers(port) or process.poll() is not None, 90, "instance up")
    assert process.poll() is None, "racer serve exited"
    return process


HAPROXY = """global
    maxconn 2000
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
backend gateways
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 200ms fall 1 rise 2
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
frontend clients
    bind 127.0.0.1:{front}
    default_backend gateways
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """An upstream per model, two instances on one PostgreSQL, HAProxy in front."""
    folder = tmp_path_factory.mktemp("instances")
    first, second = artifact(folder / "first", 0.1), artifact(folder / "second", 0.2)
    processes: list[subprocess.Popen] = []
    with ServerThread([upstream() for _ in MODELS]) as upstreams:
        config = {
            "backends": [{"name": m, "base_url": f"{u}/v1"}
                         for m, u in zip(MODELS, upstreams.urls, strict=True)],
            "routes": [{"name": ROUTE, "artifact": str(first)}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": os.environ["RACER_TEST_POSTGRES_URL"]},
        }  # fmt: skip
        path = folder / "gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        ports = {"a": free_port(), "b": free_port(), "front": free_port()}
        try:
            processes += [start_instance(path, ports["a"]), start_instance(path, ports["b"])]
            (folder / "haproxy.cfg").write_text(HAPROXY.format(**ports), encoding="utf-8")
            processes.append(
                subprocess.Popen(
                    ["haproxy", "-db", "-f", str(folder / "haproxy.cfg")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            wait_until(lambda: answers(ports["front"]), 30, "haproxy up")
            yield {"ports": ports, "processes": processes, "artifacts": (first, second)}
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(20)


def client(port: int, key: str = KEY) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
    )


def serving(port: int) -> dict:
    with client(port, ADMIN_KEY) as admin:
        route = admin.get("/healthz").json()["routes"][ROUTE]
    return {"artifact_id": route["artifact_id"], "monitor": route["monitor"]}


def chat(query: str) -> dict:
    return {"model": ROUTE, "messages": [{"role": "user", "content": query}]}


def test_a_reload_on_one_instance_is_followed_by_the_other_with_its_monitor(cluster):
    ports, (first, second) = cluster["ports"], cluster["artifacts"]
    with client(ports["front"]) as balanced:  # decisions and feedback land on either
        for i in range(12):
            answer = balanced.post("/v1/chat/completions", json=chat(f"q{i}")).json()
            verdict = {"id": answer["id"], "correct": False}
            assert balanced.post("/v1/feedback", json=verdict).status_code == 200
    alarmed = {"n_feedback": 12, "alarm": True}
    for name in ("a", "b"):
        state = serving(ports[name])
        assert state["artifact_id"] == artifact_id_on_disk(first)
        assert {k: state["monitor"][k] for k in alarmed} == alarmed

    with client(ports["a"], ADMIN_KEY) as admin:
        reload = admin.post("/admin/reload", json={"route": ROUTE, "artifact": str(second)})
    assert reload.status_code == 200 and reload.json()["shared_with_workers"]
    new_id = artifact_id_on_disk(second)
    wait_until(lambda: serving(ports["b"])["artifact_id"] == new_id, 10, "b follows a")
    assert serving(ports["b"])["monitor"]["n_feedback"] == 0  # a new certificate's monitor

    with client(ports["b"], ADMIN_KEY) as admin:  # and back, from the other side
        reload = admin.post("/admin/reload", json={"route": ROUTE, "artifact": str(first)})
    assert reload.status_code == 200
    wait_until(
        lambda: serving(ports["a"])["artifact_id"] == artifact_id_on_disk(first), 10, "a follows b"
    )
    assert {k: serving(ports["a"])["monitor"][k] for k in alarmed} == alarmed


def test_killing_one_instance_under_load_fails_only_its_in_flight_requests(cluster):
    ports, processes = cluster["ports"], cluster["processes"]
    results: list[tuple[float, bool]] = []  # (sent, answered 200)
    stop = threading.Event()

    def load(k: int) -> None:
        with client(ports["front"]) as balanced:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    status = balanced.post("/v1/chat/completions", json=chat(f"l{k}"), timeout=10)
                    ok = status.status_code == 200
                except httpx.HTTPError:  # HAProxy closes the connection of a cut request
                    ok = False
                results.append((sent, ok))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(results) >= 60, 30, "load running")
    os.killpg(processes[0].pid, signal.SIGKILL)  # instance a, with its requests in flight
    processes[0].wait(10)
    killed_at = time.monotonic()  # a is gone: what is sent from now on must be answered
    wait_until(lambda: sum(sent > killed_at for sent, _ in results) >= 60, 30, "load goes on")
    stop.set()
    for thread in threads:
        thread.join(15)

    failed_at = [sent for sent, ok in results if not ok]
    assert all(sent < killed_at for sent in failed_at)  # only requests already sent ...
    assert len(failed_at) <= CLIENTS  # ... and at most the ones in flight
    after = [ok for sent, ok in results if sent > killed_at]
    assert len(after) >= 60 and all(after)  # instance b answers everything since
