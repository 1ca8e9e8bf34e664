"""The routing pipeline: calibrated set -> concurrent calls -> aggregation, abstention,
partial failure, fallbacks, retries, streaming, decision log and feedback."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from serve_fakes import (
    ADMIN,
    MODELS,
    TableRouter,
    answering,
    build_gateway,
    chat,
    counting,
    failing,
    raising,
    sequence,
    serving,
)

from racer.serve.config import ConfigError
from racer.serve.decision_log import DecisionRecord, prompt_digest
from racer.serve.feedback import misrouting_loss
from racer.serve.gateway import Gateway
from racer.serve.schemas import ChatCompletionRequest, FeedbackRequest

A, B, C = MODELS
TOP_TWO = TableRouter({}, default=[0.9, 0.7, 0.1])
NOBODY = TableRouter({}, default=[0.2, 0.3, 0.1])
ONLY_A = TableRouter({}, default=[0.9, 0.2, 0.1])


def handlers(**overrides):
    base = {A: answering("A-answer"), B: answering("B-answer"), C: answering("C-answer")}
    return {**base, **overrides}


def sse_events(text: str) -> list[dict]:
    """The JSON events of a stream; a normal end ([DONE]) unless the last one is an error."""
    payloads = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    if payloads[-1] != "[DONE]":
        assert "error" in json.loads(payloads[-1]), "a stream without [DONE] must end in error"
        return [json.loads(p) for p in payloads]
    return [json.loads(p) for p in payloads[:-1]]


@pytest.mark.asyncio
async def test_the_calibrated_set_is_called_and_reported():
    calls: dict[str, int] = {}
    counted = {m: counting(h, calls, m) for m, h in handlers().items()}
    async with serving(counted, TOP_TWO, route={"aggregator": "best"}) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat("q"))
    assert response.status_code == 200
    body = response.json()
    racer = body["racer"]
    assert calls == {A: 1, B: 1}
    assert racer["set"] == [A, B] and racer["chosen"] == A and not racer["abstained"]
    assert body["choices"][0]["message"]["content"] == "A-answer"
    assert racer["scores"] == {A: 0.9, B: 0.7, C: 0.1} and racer["threshold"] == 0.5
    assert racer["backends"][A]["ok"] and racer["backends"][A]["latency_ms"] > 0
    assert racer["backends"][A]["cost_usd"] == pytest.approx(10 * 0.001 + 5 * 0.002)
    assert racer["cost_usd"] == pytest.approx(2 * 0.02)
    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    assert body["object"] == "chat.completion" and body["model"] == "racer"


@pytest.mark.asyncio
async def test_vote_weights_answers_by_score():
    router = TableRouter({}, default=[0.6, 0.55, 0.9])
    upstreams = handlers(**{A: answering("A"), B: answering("B"), C: answering("The answer is B")})
    async with serving(upstreams, router) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
    assert body["choices"][0]["message"]["content"] == "The answer is B"
    assert body["racer"]["chosen"] == C


@pytest.mark.asyncio
async def test_an_empty_set_abstains_at_once_without_calling_any_backend():
    calls: dict[str, int] = {}
    counted = {m: counting(h, calls, m) for m, h in handlers().items()}
    async with serving(counted, NOBODY, route={"abstention_message": "No."}) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
    assert calls == {}
    reason = body["racer"]["refusal_reason"]
    assert reason.startswith("no model's score cleared the calibrated threshold")
    assert body["choices"][0]["message"]["content"] == f"No: {reason}."
    assert body["racer"]["refused"] and body["racer"]["set"] == []
    assert body["racer"]["abstained"] and not body["racer"]["flagged"]
    assert body["racer"]["backends"] == {} and body["racer"]["cost_usd"] is None


@pytest.mark.asyncio
async def test_a_failing_backend_is_left_out_and_reported():
    upstreams = handlers(**{A: failing(500, "disk on fire")})
    async with serving(upstreams, TOP_TWO) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat("q"))
    assert response.status_code == 200
    racer = response.json()["racer"]
    assert response.json()["choices"][0]["message"]["content"] == "B-answer"
    assert racer["chosen"] == B
    assert racer["backends"][A]["error"] == "HTTP 500: disk on fire"
    assert racer["backends"][A]["ok"] is False


@pytest.mark.asyncio
async def test_when_every_backend_fails_the_answer_is_502_saying_which_and_why():
    upstreams = handlers(**{A: failing(500, "disk on fire"), B: raising(httpx.ReadTimeout)})
    async with serving(upstreams, TOP_TWO) as (client, gateway):
        response = await client.post("/v1/chat/completions", json=chat("q"))
        metrics = gateway.metrics.render().decode()
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert f"{A}: HTTP 500: disk on fire" in message
    assert f"{B}: timed out" in message
    assert 'racer_requests_total{outcome="failed",route="racer"} 1.0' in metrics


@pytest.mark.asyncio
async def test_fallbacks_answer_when_the_whole_set_failed():
    upstreams = handlers(**{A: failing(503)})
    async with serving(upstreams, ONLY_A, route={"fallbacks": [C]}) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
    assert body["choices"][0]["message"]["content"] == "C-answer"
    assert body["racer"]["chosen"] == C and set(body["racer"]["backends"]) == {A, C}


@pytest.mark.asyncio
async def test_429_and_5xx_are_retried_with_backoff_but_timeouts_and_4xx_are_not():
    flaky = sequence(failing(429), failing(503), answering("late"))
    async with serving(handlers(**{A: flaky}), ONLY_A, backend_defaults={"retries": 2}) as (
        client,
        _,
    ):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
    assert body["choices"][0]["message"]["content"] == "late"
    assert body["racer"]["backends"][A]["attempts"] == 3
    for handler, status in ((raising(httpx.ReadTimeout), 502), (failing(400, "bad prompt"), 400)):
        async with serving(handlers(**{A: handler}), ONLY_A, backend_defaults={"retries": 2}) as (
            client,
            _,
        ):
            response = await client.post("/v1/chat/completions", json=chat("q"))
        assert response.status_code == status  # the upstream's client error is passed on
        assert response.json()["error"]["message"].count(A) == 1


@pytest.mark.asyncio
async def test_an_unknown_route_is_404_naming_the_served_ones():
    async with serving(handlers(), TOP_TWO) as (client, _):
        response = await client.post("/v1/chat/completions", json={**chat("q"), "model": "gpt-5"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "racer" in response.json()["error"]["message"]


@pytest.mark.asyncio
async def test_a_single_model_set_streams_through_with_the_gateway_id_and_racer_chunk():
    async with serving(handlers(), ONLY_A) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat("q", stream=True))
    events = sse_events(response.text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "A-answer"
    ids = {e["id"] for e in events}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    final = events[-1]
    assert final["choices"] == [] and final["racer"]["set"] == [A]
    assert final["racer"]["backends"][A]["cost_usd"] == pytest.approx(3 * 0.001 + 4 * 0.002)


@pytest.mark.asyncio
async def test_a_larger_set_streams_the_aggregated_answer():
    async with serving(handlers(), TOP_TWO, route={"aggregator": "best"}) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat("q", stream=True))
    events = sse_events(response.text)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "A-answer"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["racer"]["set"] == [A, B]


@pytest.mark.asyncio
async def test_streaming_abstains_and_fails_like_the_plain_answer():
    async with serving(handlers(), NOBODY, route={"abstention_message": "No."}) as (client, _):
        events = sse_events(
            (await client.post("/v1/chat/completions", json=chat("q", stream=True))).text
        )
    assert events[1]["choices"][0]["delta"]["content"].startswith("No: no model's score")
    assert events[-1]["racer"]["refused"]
    async with serving(handlers(**{A: failing(500)}), ONLY_A) as (client, _):
        response = await client.post("/v1/chat/completions", json=chat("q", stream=True))
    assert response.status_code == 502


@pytest.mark.asyncio
async def test_every_decision_is_logged_and_feedback_feeds_the_monitor(caplog):
    async with serving(handlers(), TOP_TWO) as (client, gateway):
        ids = []
        for _ in range(12):
            ids.append((await client.post("/v1/chat/completions", json=chat("q"))).json()["id"])
        assert gateway.decision_log.count() == 12
        stored = await gateway.decision_log.find(ids[0])
        assert stored.invoked == [A, B] and not stored.abstained
        assert stored.query == prompt_digest("q")  # the default: prompts are hashed
        first = await client.post("/v1/feedback", json={"id": ids[0], "correct": True})
        assert first.status_code == 200 and first.json()["loss"] == 0.0
        again = await client.post("/v1/feedback", json={"id": ids[0], "correct": False})
        assert again.status_code == 409
        repeated = await client.post("/v1/feedback", json={"id": ids[0], "correct": True})
        assert repeated.status_code == 200 and repeated.json()["repeated"]
        assert repeated.json()["monitor"]["n_feedback"] == 1
        unknown = await client.post("/v1/feedback", json={"id": "nope", "correct": True})
        assert unknown.status_code == 404
        bad_name = await client.post(
            "/v1/feedback", json={"id": ids[1], "models_correct": {"gpt-9": True}}
        )
        assert bad_name.status_code == 400
        with caplog.at_level(logging.WARNING, logger="racer.serve"):
            for decision_id in ids[1:]:
                state = (
                    await client.post("/v1/feedback", json={"id": decision_id, "correct": False})
                ).json()["monitor"]
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        assert gateway.decision_log.count("feedback") == 12
    assert state["alarm"] and state["n_feedback"] == 12
    assert state["risk_lower_bound"] > 0.1
    assert "no longer supports misrouting risk <= alpha" in caplog.text
    assert 'racer_monitor_alarm{route="racer"} 1.0' in metrics


@pytest.mark.asyncio
async def test_monitors_resume_from_the_stored_feedback(tmp_path):
    url = f"sqlite:///{tmp_path / 'decisions.sqlite3'}"
    async with serving(handlers(), TOP_TWO, log_url=url) as (client, _):
        decision = (await client.post("/v1/chat/completions", json=chat("q"))).json()["id"]
        await client.post("/v1/feedback", json={"id": decision, "correct": False})
    async with serving(handlers(), TOP_TWO, log_url=url) as (_, gateway):
        assert gateway.routes["racer"].monitor.n == 1
        assert gateway.routes["racer"].monitor.mean_loss == 1.0


def _decision(invoked: list[str], abstained: bool = False) -> DecisionRecord:
    return DecisionRecord(
        "id", 0.0, "racer", None, invoked, {}, 0.5, abstained, None, {}, None, 1.0
    )


def test_the_misrouting_loss_follows_the_method():
    in_set = FeedbackRequest(id="id", models_correct={A: False, B: True, C: True})
    only_outside = FeedbackRequest(id="id", models_correct={A: False, C: True})
    nobody = FeedbackRequest(id="id", models_correct={A: False, B: False, C: False})
    unknown_c = FeedbackRequest(id="id", models_correct={A: False, B: False})
    assert misrouting_loss(_decision([A, B]), in_set, MODELS) == 0.0
    assert misrouting_loss(_decision([A, B]), only_outside, MODELS) == 1.0
    assert misrouting_loss(_decision([], abstained=True), only_outside, MODELS) == 1.0
    assert misrouting_loss(_decision([], abstained=True), nobody, MODELS) == 0.0
    # C's label is unknown: it may be the good one, so abstaining counts as a misroute.
    assert misrouting_loss(_decision([], abstained=True), unknown_c, MODELS) == 1.0
    wrong_answer = FeedbackRequest(id="id", correct=False)
    assert misrouting_loss(_decision([A]), wrong_answer, MODELS) == 1.0


@pytest.mark.asyncio
async def test_a_route_model_without_a_backend_is_a_start_up_error():
    gateway, _ = build_gateway(handlers(), TOP_TWO)
    route = gateway.routes["racer"]
    route.model_names = (*MODELS, "delta-missing")
    with pytest.raises(ConfigError, match="delta-missing"):
        Gateway(gateway.config, {"racer": route}, gateway.backends, gateway.decision_log)
    await gateway.aclose()


@pytest.mark.asyncio
async def test_a_stream_broken_upstream_or_left_by_the_client_is_still_logged():
    async def garbled(request: httpx.Request) -> httpx.Response:
        body = 'data: {"choices": [{"index": 0, "delta": {"content": "he"}}]}\n\ndata: {oops\n\n'
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    upstream = sequence(garbled, answering("hello"))
    async with serving(handlers(**{A: upstream}), ONLY_A) as (client, gateway):
        events = sse_events(
            (await client.post("/v1/chat/completions", json=chat("q", stream=True))).text
        )
        assert events[0]["choices"][0]["delta"]["content"] == "he"
        assert events[-1]["error"]["code"] == "stream_interrupted"
        assert "stream interrupted (JSONDecodeError" in events[-1]["racer"]["backends"][A]["error"]

        request = ChatCompletionRequest.model_validate(chat("q", stream=True))
        stream = (await gateway.stream(request)).events
        await anext(stream)
        await stream.aclose()
        assert gateway.decision_log.count() == 2
        logged = gateway.metrics.render().decode()
    assert 'racer_requests_total{outcome="failed",route="racer"} 2.0' in logged
