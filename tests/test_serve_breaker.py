"""The circuit breaker counts only the backend's own failures (issue 18, item 3).

One client's requests never take a model down: a prompt the upstream rejects (its status
and message reach the client), a refusal, a content filter, a stream that ends in a
client-error event, a long healthy stream (never cut: ``timeout_s`` bounds the wait for
each chunk) and a member cut by ``grace_s`` leave the breaker closed for everyone else.
A real outage still opens it, and the first probe after the backend is back gets through
within the early cooldown. Transitions are logged and exported as metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import httpx
import pytest
from serve_fakes import (
    ADMIN,
    MODELS,
    TableRouter,
    answering,
    by_prompt,
    chat,
    content_filtered,
    delayed,
    delta,
    failing,
    raising,
    refusing,
    serving,
    streaming,
)

from racer.serve.breaker import CircuitBreaker

A, B, C = MODELS
ONLY_A = TableRouter({}, default=[0.9, 0.2, 0.1])
A_THEN_B = TableRouter({"only a": [0.9, 0.2, 0.1]}, default=[0.9, 0.7, 0.1])
TOO_LONG = "This model's maximum context length is 8192 tokens; your messages had 9000."
# An opened breaker would refuse every later call for a minute.
STRICT = {"breaker_failures": 2, "cooldown_s": 60.0}
FILTER_EVENT = {"error": {"message": "flagged", "type": "invalid_request_error"}}
SERVER_EVENT = {"error": {"message": "overloaded", "type": "server_error"}}


def upstream(**special):
    """Model A: the handler of the first special word in the prompt, else a plain answer."""
    handlers = {A: answering("A-answer"), B: answering("B-answer"), C: answering("C-answer")}
    handlers[A] = by_prompt(special, answering("A-answer"))
    return handlers


def breaker_metrics(text: str) -> dict[str, float]:
    """``racer_breaker_*`` samples by name and labels."""
    return {
        name: float(value)
        for name, value in re.findall(r"^(racer_breaker_\S+) (\S+)$", text, re.MULTILINE)
    }


async def ten_ordinary(client: httpx.AsyncClient, query: str = "q") -> list[int]:
    """Ten ordinary requests from another key; their statuses."""
    responses = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=chat(query), headers=ADMIN) for _ in range(10))
    )
    return [r.status_code for r in responses]


def test_the_cooldown_doubles_on_each_failed_probe_and_transitions_are_told():
    now = [0.0]
    breaker = CircuitBreaker(2, 1.0, 3.0, name="m", clock=lambda: now[0])
    moves: list[tuple[str, str, str]] = []
    breaker.listeners.append(lambda *move: moves.append(move))
    breaker.failure()
    breaker.release()  # a client error between two failures: neither resets nor counts
    breaker.failure()
    assert breaker.state_code == 2 and breaker.retry_in() == 1.0
    cooldowns = []
    for _ in range(4):  # each failed probe: twice the last cooldown, at most 3 s
        now[0] += breaker.retry_in()
        assert breaker.state_code == 1 and breaker.admit() and not breaker.admit()
        breaker.failure()
        cooldowns.append(breaker.retry_in())
    assert cooldowns == [2.0, 3.0, 3.0, 3.0]
    breaker.failure()  # a late failure while open changes nothing
    assert breaker.retry_in() == 3.0
    now[0] += 3.0
    assert breaker.admit()
    breaker.release()  # the probe met a bad prompt: the next call probes at once
    assert breaker.admit()
    breaker.release()  # cancelled at the route's deadline (released), then counted
    breaker.failure()
    assert breaker.state == "open" and breaker.retry_in() == 3.0
    now[0] += 3.0
    assert breaker.admit()
    breaker.success()
    assert breaker.state_code == 0 and breaker.describe()["cooldown_s"] == 1.0
    assert moves[0] == ("m", "closed", "open") and moves[-1] == ("m", "half_open", "closed")
    assert [new for _, _, new in moves].count("half_open") == 7


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_prompts_the_upstream_rejects_get_its_status_and_leave_the_model_up(status):
    special = {"BADPROMPT": failing(status, TOO_LONG)}
    async with serving(upstream(**special), ONLY_A, backend_defaults=STRICT) as (client, gw):
        rejected = [
            await client.post("/v1/chat/completions", json=chat("BADPROMPT", stream=stream))
            for stream in (False, True, False, True, False)
        ]
        assert [r.status_code for r in rejected] == [status] * 5
        assert all(TOO_LONG in r.json()["error"]["message"] for r in rejected)
        assert rejected[0].json()["error"]["code"] == "upstream_rejected"
        assert await ten_ordinary(client) == [200] * 10
        assert gw.backends[A].breaker.describe()["consecutive_failures"] == 0
        assert breaker_metrics(gw.metrics.render().decode()) == {
            f'racer_breaker_state{{backend="{m}"}}': 0.0 for m in MODELS
        }


@pytest.mark.asyncio
async def test_a_set_passes_on_a_client_error_only_when_no_member_answers():
    rejecting = {A: failing(400, TOO_LONG), B: failing(422, "unprocessable"), C: answering("C")}
    async with serving(rejecting, A_THEN_B, backend_defaults=STRICT) as (client, _):
        everyone = await client.post("/v1/chat/completions", json=chat("q"))
    assert everyone.status_code == 400 and TOO_LONG in everyone.json()["error"]["message"]
    rejecting[B] = answering("B-answer")
    async with serving(rejecting, A_THEN_B, backend_defaults=STRICT) as (client, _):
        served = await client.post("/v1/chat/completions", json=chat("q"))
    assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"] == (
        "B-answer"
    )


@pytest.mark.asyncio
async def test_refusals_and_content_filters_are_answers_not_failures():
    special = {"REFUSE": refusing("No."), "FILTER": content_filtered()}
    async with serving(upstream(**special), ONLY_A, backend_defaults=STRICT) as (client, gw):
        answers = [
            (await client.post("/v1/chat/completions", json=chat(word))).json()
            for word in ("REFUSE", "FILTER", "REFUSE", "FILTER", "REFUSE")
        ]
        assert await ten_ordinary(client) == [200] * 10
        assert gw.backends[A].breaker.describe()["consecutive_failures"] == 0
    choices = [a["choices"][0] for a in answers]
    assert [c["message"].get("refusal") for c in choices[::2]] == ["No."] * 3
    assert [c["finish_reason"] for c in choices[1::2]] == ["content_filter"] * 2
    assert all(c["message"]["content"] is None for c in choices)


@pytest.mark.asyncio
async def test_a_refusal_from_the_top_member_is_served_or_passed_over_and_flagged():
    refused = {A: refusing("No."), B: answering("B-answer"), C: answering("C-answer")}
    async with serving(refused, A_THEN_B) as (client, _):
        safe = await client.post("/v1/chat/completions", json=chat("q"))
    route = {"on_reference_failure": "serve"}
    async with serving(refused, A_THEN_B, route=route) as (client, gw):
        served = await client.post("/v1/chat/completions", json=chat("q"))
        streamed = await client.post("/v1/chat/completions", json=chat("q", stream=True))
        logged = await gw.decision_log.find(served.json()["racer"]["id"])
        metrics = gw.metrics.render().decode()
    assert safe.headers["x-racer-certified"] == "true"
    assert safe.json()["choices"][0]["message"]["refusal"] == "No."
    assert served.headers["x-racer-certified"] == streamed.headers["x-racer-certified"] == "false"
    assert '"uncertified":"top_model_refused"' in streamed.text
    assert served.json()["choices"][0]["message"]["content"] == "B-answer"
    assert served.json()["racer"]["uncertified"] == "top_model_refused"
    assert logged.uncertified == "top_model_refused"
    assert 'racer_uncertified_answers_total{reason="top_model_refused",route="racer"} 2.0' in (
        metrics
    )


@pytest.mark.asyncio
async def test_client_error_events_and_long_healthy_streams_leave_the_breaker_closed():
    special = {
        "ERREVENT": streaming([delta("AB"), FILTER_EVENT]),
        "LONG": streaming([delta(".")] * 8 + ["[DONE]"], every_s=0.05),  # 0.4 s > timeout
        "BROKEN": streaming([delta("AB"), SERVER_EVENT]),
        "SILENT": streaming([delta("AB"), delta("."), "[DONE]"], every_s=0.3),
    }
    defaults = {**STRICT, "timeout_s": 0.2}
    async with serving(upstream(**special), ONLY_A, backend_defaults=defaults) as (client, gw):
        for word in ("ERREVENT", "LONG", "ERREVENT", "LONG", "ERREVENT"):
            response = await client.post("/v1/chat/completions", json=chat(word, stream=True))
            assert response.status_code == 200
            # timeout_s bounds the wait for each chunk: a long healthy stream is never cut
            interrupted = "stream_interrupted" in response.text
            assert interrupted == (word == "ERREVENT")
        assert await ten_ordinary(client) == [200] * 10
        assert gw.backends[A].breaker.describe()["consecutive_failures"] == 0
        # A server error event, or a stream silent for timeout_s, is the backend's: it counts.
        await client.post("/v1/chat/completions", json=chat("BROKEN", stream=True))
        assert gw.backends[A].breaker.describe()["consecutive_failures"] == 1
        silent = await client.post("/v1/chat/completions", json=chat("SILENT", stream=True))
        assert "stream_interrupted" in silent.text
        assert gw.backends[A].breaker.describe()["consecutive_failures"] == 2


@pytest.mark.asyncio
async def test_a_member_cut_by_grace_is_only_slower_and_stays_up_for_other_requests():
    slow_a = upstream()
    slow_a[A] = delayed(0.3, answering("A-answer"))
    route = {"aggregator": "best", "grace_s": 0.05}
    async with serving(slow_a, A_THEN_B, route=route, backend_defaults=STRICT) as (client, gw):
        for _ in range(5):
            body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
            assert body["racer"]["chosen"] == B and body["racer"]["completion"]["reason"] == "grace"
        assert await ten_ordinary(client, "only a") == [200] * 10  # the one-model set {A}
        assert gw.backends[A].breaker.state == "closed"


@pytest.mark.asyncio
async def test_an_outage_opens_the_breaker_and_the_first_probe_after_recovery_gets_through(caplog):
    down = [True]

    async def flaky(request: httpx.Request) -> httpx.Response:
        if down[0]:
            return await raising(httpx.ConnectError)(request)
        return await by_prompt({"BADPROMPT": failing(400, TOO_LONG)}, answering("back"))(request)

    handlers = {**upstream(), A: flaky}
    defaults = {"breaker_failures": 2, "cooldown_s": 0.1, "max_cooldown_s": 0.4}
    caplog.set_level(logging.INFO, logger="racer.serve")
    async with serving(handlers, ONLY_A, backend_defaults=defaults) as (client, gw):
        breaker = gw.backends[A].breaker
        for _ in range(6):  # down: 502, the breaker opens, failed probes double the cooldown
            response = await client.post("/v1/chat/completions", json=chat("q"))
            assert response.status_code == 502
            await asyncio.sleep(0.05)
        assert breaker.state_code in (1, 2) and breaker.describe()["cooldown_s"] > 0.1
        down[0] = False
        back_at, early_probe_s = time.perf_counter(), breaker.retry_in()
        # A bad prompt that happens to be the probe gets its 400 and keeps nothing open.
        await asyncio.sleep(early_probe_s)
        bad = await client.post("/v1/chat/completions", json=chat("BADPROMPT"))
        good = await client.post("/v1/chat/completions", json=chat("q"))
        served_after = time.perf_counter() - back_at
        metrics = breaker_metrics(gw.metrics.render().decode())
    assert bad.status_code == 400 and good.status_code == 200
    assert served_after <= early_probe_s + 0.5 and early_probe_s <= 0.4  # not 30 s
    assert breaker.state == "closed"
    assert metrics[f'racer_breaker_state{{backend="{A}"}}'] == 0.0
    transitions = {
        state: metrics[f'racer_breaker_transitions_total{{backend="{A}",state="{state}"}}']
        for state in ("open", "half_open", "closed")
    }
    assert transitions["closed"] == 1 and transitions["half_open"] == transitions["open"] + 1
    logged = [r.getMessage() for r in caplog.records if r.name == "racer.serve"]
    assert f"backend '{A}': circuit open after 2 consecutive failure(s); next probe in 0.1 s" in (
        logged
    )
    assert f"backend '{A}': circuit closed, the backend answered" in logged
