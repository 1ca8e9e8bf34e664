"""While the decision log is down: 503 (never 500) with Retry-After, /readyz says so,
refusals and unlogged answers are counted; a PostgreSQL log reconnects by itself."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, generate_latest
from tcp_proxy import proxied_postgres

from racer.serve.decision_log import DecisionLog, DecisionLogUnavailable, DecisionRecord
from racer.serve.log_outage import install_log_outage


class DownLog:
    """What the HTTP layer reads of a decision log, stuck in an outage."""

    available = False
    observer = None

    def __init__(self, on_failure: str):
        self.on_failure = on_failure

    def outage(self) -> DecisionLogUnavailable:
        return DecisionLogUnavailable("The decision log is unavailable; retry later.", 2)

    def retry_after_s(self) -> int:
        return 2

    def probe(self) -> Future[bool]:
        answered: Future[bool] = Future()
        answered.set_result(False)
        return answered


def outage_app(on_failure: str) -> tuple[FastAPI, CollectorRegistry]:
    app, registry = FastAPI(), CollectorRegistry()
    log = DownLog(on_failure)

    @app.post("/v1/feedback")
    async def feedback() -> dict:
        raise log.outage()

    @app.post("/v1/chat/completions")
    async def chat(stream: bool = False):
        if not stream:
            return {"answered": True}

        async def events():
            yield b"data: {}\n\n"
            raise log.outage()  # the decision cannot be logged at the stream's end

        return StreamingResponse(events(), media_type="text/event-stream")

    install_log_outage(app, log, registry)
    return app, registry


def metric(registry: CollectorRegistry, name: str) -> float:
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


@pytest.mark.parametrize("on_failure", ["serve", "refuse"])
def test_an_outage_is_a_503_with_retry_after_and_readiness_fails(on_failure):
    app, registry = outage_app(on_failure)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return [
                await client.get("/readyz"),
                await client.post("/v1/feedback"),
                await client.post("/v1/chat/completions"),
                await client.post("/v1/chat/completions?stream=true"),
            ]

    ready, feedback, chat, stream = asyncio.run(scenario())
    assert (ready.status_code, ready.headers["retry-after"]) == (503, "2")
    assert ready.json() == {"status": "unavailable", "decision_log": "unavailable"}
    assert (feedback.status_code, feedback.headers["retry-after"]) == (503, "2")
    assert feedback.json()["error"]["code"] == "decision_log_unavailable"
    assert metric(registry, "racer_decision_log_up") == 0.0
    if on_failure == "refuse":  # refused before any backend is called
        assert chat.status_code == stream.status_code == 503
        assert metric(registry, "racer_decision_log_refusals_total") == 2.0
    else:
        assert chat.json() == {"answered": True}
        assert stream.status_code == 200 and stream.text == "data: {}\n\n"  # no [DONE]


def decision(decision_id: str) -> DecisionRecord:
    return DecisionRecord(decision_id, 1.0, "r", "q", [], {}, None, False, None, {}, None, 1.0)


@pytest.fixture
def postgres():
    """A fresh PostgreSQL log behind a proxy the test can cut, and the proxy."""
    with proxied_postgres() as (url, proxy):
        yield url, proxy


def until(condition, timeout_s: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("on_failure", ["serve", "refuse"])
def test_a_postgres_log_reconnects_after_an_outage(postgres, on_failure):
    url, proxy = postgres
    log = DecisionLog(url, on_failure=on_failure)
    events: list[tuple[str, bool]] = []

    class Observer:
        def availability(self, up: bool) -> None:
            events.append(("up", up))

        def not_logged(self, refused: bool) -> None:
            events.append(("refused", refused))

    log.observer = Observer()

    async def record(decision_id: str) -> bool | str:
        try:
            return await log.record(decision(decision_id))
        except DecisionLogUnavailable as error:
            return f"refused, retry after {error.retry_after_s} s"

    assert asyncio.run(record("before"))
    proxy.cut()
    lost = asyncio.run(record("lost"))  # the write that finds the connection gone
    assert not log.available and not log.probe().result()
    assert log.feedback_losses() == []  # the monitors keep their state meanwhile
    with pytest.raises(DecisionLogUnavailable):
        log.count()
    proxy.restore()
    print(f"reconnected {until(lambda: log.available):.2f} s after the restore")
    assert asyncio.run(record("after")) is True and log.probe().result()
    assert log.count() == 2  # "before" and "after"
    log.close()
    if on_failure == "serve":
        assert lost is False
    else:
        assert lost == "refused, retry after 1 s"
    assert events == [("up", False), ("refused", on_failure == "refuse"), ("up", True)]
