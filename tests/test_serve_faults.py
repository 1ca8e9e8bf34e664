"""Faults: circuit breakers, deadlines, the set completion rule, retries only before an
answer byte, rate limits, tool calls and broken streams; then the fault run of issue 10
over real loopback HTTP (11 backends, one killed, one hung, one answering 500)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from serve_fakes import (
    MODELS,
    TableRouter,
    answering,
    chat,
    counting,
    delayed,
    raising,
    serving,
    tool_call,
)

from racer.serve.backends import Backend
from racer.serve.breaker import CircuitBreaker
from racer.serve.config import parse_config
from racer.serve.decision_log import DecisionLog
from racer.serve.gateway import Gateway
from racer.serve.monitor import RiskMonitor
from racer.serve.route import Route
from racer.serve.runner import ServerThread

A, B, C = MODELS
TOP_TWO = TableRouter({}, default=[0.9, 0.7, 0.1])
B_FIRST = TableRouter({}, default=[0.7, 0.9, 0.1])
ONLY_A = TableRouter({}, default=[0.9, 0.2, 0.1])
HANG = 30.0


def handlers(**overrides):
    base = {A: answering("A-answer"), B: answering("B-answer"), C: answering("C-answer")}
    return {**base, **overrides}


def test_the_breaker_opens_cools_down_and_lets_one_probe_through():
    now = [0.0]
    breaker = CircuitBreaker(3, 10.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure()
    assert breaker.admit() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.admit()
    now[0] = 9.9
    assert not breaker.admit()
    now[0] = 10.0
    assert [breaker.admit() for _ in range(3)] == [True, False, False]
    breaker.failure()  # the probe failed: another full cooldown
    now[0] = 19.9
    assert not breaker.admit()
    now[0] = 20.0
    assert breaker.admit()
    breaker.success()
    assert breaker.state == "closed" and breaker.admit() and breaker.probes == 2


@pytest.mark.asyncio
async def test_a_dead_backend_is_skipped_while_its_breaker_is_open():
    calls: dict[str, int] = {}
    upstreams = {
        m: counting(h, calls, m) for m, h in handlers(**{B: raising(httpx.ConnectError)}).items()
    }
    defaults = {"breaker_failures": 2, "cooldown_s": 0.3}
    async with serving(upstreams, TOP_TWO, backend_defaults=defaults) as (client, _):
        bodies = [
            (await client.post("/v1/chat/completions", json=chat("q"))).json() for _ in range(6)
        ]
        assert calls[B] == 2 and calls[A] == 6
        assert bodies[-1]["racer"]["backends"][B]["attempts"] == 0
        assert "circuit open" in bodies[-1]["racer"]["backends"][B]["error"]
        await asyncio.sleep(0.35)
        await asyncio.gather(
            *(client.post("/v1/chat/completions", json=chat("q")) for _ in range(4))
        )
    assert calls[B] == 3  # one probe after the cooldown, however many requests came
    assert all(b["choices"][0]["message"]["content"] == "A-answer" for b in bodies)


@pytest.mark.asyncio
async def test_the_deadline_bounds_a_request_whose_only_backend_hangs():
    upstreams = handlers(**{A: delayed(HANG, answering("late"))})
    async with serving(upstreams, ONLY_A, route={"deadline_s": 0.3}) as (client, _):
        started = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=chat("q"))
        elapsed = time.perf_counter() - started
    assert response.status_code == 504 and elapsed < 1.5
    assert response.json()["error"]["code"] == "deadline_exceeded"


@pytest.mark.asyncio
async def test_grace_and_decided_rules_answer_without_waiting_for_stragglers():
    slow_b = handlers(**{B: delayed(HANG, answering("B-answer"))})
    async with serving(slow_b, TOP_TWO, route={"aggregator": "best"}) as (client, _):
        started = time.perf_counter()
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
        decided_s = time.perf_counter() - started
    assert decided_s < 1.0 and body["racer"]["completion"]["reason"] == "decided"
    assert body["racer"]["backends"][B]["abandoned"] and body["racer"]["chosen"] == A

    slow_a = handlers(**{A: delayed(HANG, answering("A-answer"))})  # the best one hangs
    route = {"aggregator": "best", "grace_s": 0.2}
    async with serving(slow_a, TOP_TWO, route=route) as (client, _):
        started = time.perf_counter()
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
        grace_s = time.perf_counter() - started
    assert 0.2 <= grace_s < 1.5 and body["racer"]["completion"]["reason"] == "grace"
    assert body["choices"][0]["message"]["content"] == "B-answer"
    assert body["racer"]["completion"]["abandoned"] == [A]


@pytest.mark.asyncio
async def test_a_vote_is_decided_once_the_pending_weight_cannot_change_it():
    router = TableRouter({}, default=[0.9, 0.8, 0.6])
    upstreams = {
        A: answering("The answer is B"),
        B: answering("The answer is B"),
        C: delayed(HANG, answering("The answer is C")),
    }
    async with serving(upstreams, router) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
    assert body["racer"]["completion"]["reason"] == "decided"
    upstreams[B] = answering("The answer is C")  # 0.9 vs 0.8 + pending 0.6: not decided
    async with serving(upstreams, router, route={"deadline_s": 0.3}) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
    assert body["racer"]["completion"]["reason"] == "deadline"


class _Broken(httpx.AsyncByteStream):
    """A body that starts and then breaks (or drips one byte per ``drip_s`` forever)."""

    def __init__(self, drip_s: float | None = None):
        self.drip_s = drip_s

    async def __aiter__(self):
        yield b'{"choices": [{"mess'
        if self.drip_s is None:
            raise httpx.ReadError("connection reset mid-body")
        while True:
            await asyncio.sleep(self.drip_s)
            yield b" "


@pytest.mark.asyncio
async def test_no_retry_after_an_answer_began_and_timeouts_are_deadlines():
    attempts: dict[str, int] = {}

    async def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Broken())

    async def dripping(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Broken(drip_s=0.05))

    defaults = {"retries": 2, "timeout_s": 0.4}
    upstreams = handlers(**{A: counting(broken, attempts, A), B: counting(dripping, attempts, B)})
    async with serving(upstreams, TOP_TWO, backend_defaults=defaults) as (client, _):
        started = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=chat("q"))
        elapsed = time.perf_counter() - started
    assert attempts == {A: 1, B: 1}  # never re-sent: it could bill twice
    assert response.status_code == 502 and elapsed < 1.5
    message = response.json()["error"]["message"]
    assert "interrupted upstream answer" in message and "timed out after 0.4 s" in message


@pytest.mark.asyncio
async def test_a_set_rate_limited_everywhere_is_429_with_retry_after():
    async def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after": "7"}
        )

    upstreams = handlers(**{A: limited, B: limited})
    async with serving(upstreams, TOP_TWO, backend_defaults={"max_backoff_s": 0}) as (
        client,
        gateway,
    ):
        response = await client.post("/v1/chat/completions", json=chat("q"))
        assert gateway.backends[A].breaker.state == "closed"  # a 429 is not a dead backend
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.asyncio
async def test_tool_calls_pass_through_and_larger_sets_use_the_best_members_call():
    async with serving(handlers(**{A: tool_call()}), ONLY_A) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"

    upstreams = handlers(**{A: tool_call("from_a", "text too"), B: tool_call("from_b")})
    tools = [{"type": "function", "function": {"name": "from_a"}}]
    async with serving(upstreams, B_FIRST) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q", tools=tools))).json()
        streamed = await client.post(
            "/v1/chat/completions", json=chat("q", tools=tools, stream=True)
        )
    assert body["racer"]["chosen"] == B  # the best-scored member, never a vote
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "from_b"
    events = [
        json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")
    ]
    deltas = [e["choices"][0] for e in events if e["choices"]]
    calls = [d["delta"]["tool_calls"] for d in deltas if "tool_calls" in d["delta"]]
    assert calls[0][0]["index"] == 0 and calls[0][0]["function"]["name"] == "from_b"
    assert deltas[-1]["finish_reason"] == "tool_calls"
    assert streamed.text.rstrip().endswith("data: [DONE]")


@pytest.mark.asyncio
async def test_non_sse_or_broken_streams_fail_over_or_end_in_an_error_event():
    async def not_sse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": "plain"}}]})

    async def cut(request: httpx.Request) -> httpx.Response:
        body = 'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n'
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    with_fallback = {"fallbacks": [C]}
    async with serving(handlers(**{A: not_sse}), ONLY_A, route=with_fallback) as (client, _):
        failed_over = await client.post("/v1/chat/completions", json=chat("q", stream=True))
    assert failed_over.status_code == 200 and "C-answer" in failed_over.text
    assert failed_over.text.rstrip().endswith("data: [DONE]")
    async with serving(handlers(**{A: not_sse}), ONLY_A) as (client, _):
        refused = await client.post("/v1/chat/completions", json=chat("q", stream=True))
    assert refused.status_code == 502 and "without an event stream" in refused.text
    async with serving(handlers(**{A: cut}), ONLY_A) as (client, gateway):
        broken = await client.post("/v1/chat/completions", json=chat("q", stream=True))
        assert gateway.backends[A].breaker.describe()["consecutive_failures"] == 1
    assert broken.status_code == 200 and "data: [DONE]" not in broken.text.splitlines()
    last = json.loads(broken.text.strip().splitlines()[-1][6:])
    assert (
        last["error"]["code"] == "stream_interrupted"
        and "without [DONE]" in last["error"]["message"]
    )


# --- the fault run over loopback -------------------------------------------------------

ELEVEN = tuple(f"model-{k:02d}" for k in range(11))
HEALTHY_DELAY_S = 0.03


def upstream_app(mode: str) -> FastAPI:
    """A loopback OpenAI-compatible upstream: healthy (answers "B" after 30 ms), hung, or 500."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete() -> JSONResponse:
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "error":
            return JSONResponse({"error": {"message": "internal"}}, 500)
        await asyncio.sleep(HEALTHY_DELAY_S)
        message = {"role": "assistant", "content": "The answer is B"}
        return JSONResponse(
            {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        )

    return app


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, counting the attempts (connections tried)."""

    def __init__(self):
        super().__init__()
        self.attempts: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(time.monotonic())
        return await super().handle_async_request(request)


def test_an_eleven_model_set_survives_a_killed_a_hung_and_a_failing_backend():
    dead, hung, erroring = ELEVEN[0], ELEVEN[1], ELEVEN[2]
    modes = ["ok"] * 11
    with (
        ServerThread([upstream_app(m) for m in modes]) as upstreams,
        ServerThread([upstream_app("hang"), upstream_app("error")]) as faulty,
    ):
        urls = dict(zip(ELEVEN, upstreams.urls, strict=True))
        cooldown_s = 1.0
        config = parse_config(
            {
                "backend_defaults": {
                    # generous for a loaded CI machine: the hung member never holds the
                    # answer (completion rule), only its own background call
                    "timeout_s": 2.0,
                    "retries": 1,
                    "backoff_s": 0.01,
                    "breaker_failures": 3,
                    "cooldown_s": cooldown_s,
                },
                # The hung member is cut by grace_s on every request; one call at a time
                # runs on to its timeout_s, and three such timeouts open its breaker.
                "backends": [
                    {"name": m, "base_url": f"{u}/v1", **({"timeout_s": 0.4} if m == hung else {})}
                    for m, u in urls.items()
                ],
                "routes": [{"name": "racer", "artifact": "unused", "grace_s": 0.15}],
                "auth": {"api_keys": ["k"]},
                "decision_log": {"url": "sqlite:///:memory:"},
            }
        )
        counters = {m: CountingTransport() for m in ELEVEN}
        backends = {b.name: Backend(b, transport=counters[b.name]) for b in config.backends}
        # Every model is in the set; the faulty ones are scored highest (they decide when
        # the vote is final), so only the breakers and the grace rule can keep latency.
        scores = [0.99, 0.98, 0.97] + [0.6] * 8
        router = TableRouter({}, default=scores)
        route = Route(config.routes[0], router, _Everything(), ELEVEN, RiskMonitor(0.1, 0.05))
        gateway = Gateway(config, {"racer": route}, backends, DecisionLog("sqlite:///:memory:"))
        from racer.serve.app import create_app

        with ServerThread([create_app(gateway, frozenset({"k"}))]) as front:
            url = front.urls[0]

            def phase(seconds: float) -> tuple[list[float], list[httpx.Response]]:
                latencies, responses = [], []
                with httpx.Client(
                    base_url=url, headers={"Authorization": "Bearer k"}, timeout=10
                ) as client:
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        started = time.perf_counter()
                        responses.append(client.post("/v1/chat/completions", json=chat("q")))
                        latencies.append(time.perf_counter() - started)
                return latencies, responses

            healthy, healthy_responses = phase(2.0)
            # Kill one; hang one and make one answer 500 (pointed at the faulty servers).
            upstreams.stop_one(0)
            backends[hung]._url = httpx.URL(f"{faulty.urls[0]}/v1/chat/completions")
            backends[erroring]._url = httpx.URL(f"{faulty.urls[1]}/v1/chat/completions")
            fault_started = time.monotonic()
            faults, fault_responses = phase(4.5)
            fault_ended = time.monotonic()
    failed = [r.text[:300] for r in healthy_responses + fault_responses if r.status_code != 200]
    assert not failed, failed
    contents = [r.json()["choices"][0]["message"] for r in fault_responses]
    wrong = [c for c in contents if c.get("content") != "The answer is B"]
    assert not wrong, wrong[:3]
    healthy_p50, fault_p50 = statistics.median(healthy), statistics.median(faults)
    print(
        f"healthy p50 {healthy_p50 * 1000:.1f} ms ({len(healthy)} requests), "
        f"faults p50 {fault_p50 * 1000:.1f} ms ({len(faults)} requests)"
    )
    assert fault_p50 <= 1.5 * healthy_p50
    dead_attempts = [t for t in counters[dead].attempts if t >= fault_started]
    opened = dead_attempts[min(len(dead_attempts), 3 * 2) - 1]  # 3 failed calls x 2 attempts
    after = [t for t in dead_attempts if t > opened]
    windows = (fault_ended - opened) / cooldown_s
    assert len(after) <= int(windows) + 1, (len(after), windows)
    assert len(dead_attempts) < len(faults) / 3


class _Everything:
    """A calibration stand-in that invokes every model."""

    alpha = 0.1
    delta = 0.1
    threshold_ = 1.0

    def predict(self, scores, *, include_abstain=False, abstain_scores=None):
        import numpy as np

        scores = np.asarray(scores)
        decision = np.ones((scores.shape[0], scores.shape[1] + 1), dtype=bool)
        decision[:, 0] = False
        return decision if include_abstain else decision[:, 1:]


@pytest.mark.asyncio
async def test_abandoned_members_are_cancelled_unless_configured_to_run_on():
    finished: dict[str, int] = {}
    slow_b = {
        **handlers(),
        B: delayed(0.4, counting(answering("B-answer"), finished, B)),  # counts a finished answer
    }
    for cancel, expected in ((None, 0), (False, 1)):
        finished.clear()
        route = {"aggregator": "best"} | ({} if cancel is None else {"cancel_abandoned": cancel})
        async with serving(slow_b, TOP_TWO, route=route) as (client, gateway):
            body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
            await asyncio.sleep(0.8)  # well past B's answer, had it gone on
            running = len(gateway._background)
        completion = body["racer"]["completion"]
        assert completion["reason"] == "decided" and completion["abandoned"] == [B]
        assert completion["cancelled"] == ([] if cancel is False else [B])
        assert finished.get(B, 0) == expected and running == 0
