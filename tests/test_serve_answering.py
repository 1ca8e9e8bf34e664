"""The gateway hands each request to its route's way of answering, which answers once;
JSON or server-sent events is only how the gateway sends that answer."""

from __future__ import annotations

import dataclasses
import json

import pytest
from serve_fakes import MODELS, TableRouter, answering, build_gateway, chat, counting

from racer.serve.decision import Answer, Decision
from racer.serve.schemas import ChatCompletionRequest

ONLY_A = TableRouter({}, default=[0.9, 0.2, 0.1])


class Scripted:
    """A way of answering that records each decision and answers a fixed message."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    async def answer(self, decision: Decision) -> Answer:
        self.decisions.append(decision)
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        message = {"role": "assistant", "content": f"scripted {decision.query}"}
        return Answer(message, "stop", {"id": decision.id, "usage": usage})


@pytest.mark.asyncio
async def test_one_answer_is_sent_as_json_or_as_events_by_the_gateway_alone():
    calls: dict[str, int] = {}
    upstreams = {m: counting(answering(m), calls, m) for m in MODELS}
    gateway, _ = build_gateway(upstreams, ONLY_A)
    scripted = Scripted()
    gateway.strategies["calibrated_set"] = scripted  # a new way of answering plugs in here
    try:
        body = await gateway.complete(ChatCompletionRequest.model_validate(chat("q")))
        request = ChatCompletionRequest.model_validate(chat("q", stream=True))
        sent = b"".join([event async for event in await gateway.stream(request)]).decode()
    finally:
        await gateway.aclose()
    assert [d.stream for d in scripted.decisions] == [False, True] and calls == {}
    assert body["choices"][0]["message"]["content"] == "scripted q"
    assert body["usage"]["total_tokens"] == 3
    payloads = [line[6:] for line in sent.splitlines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "scripted q" and events[-1]["racer"]["id"] == scripted.decisions[1].id


@pytest.mark.asyncio
async def test_every_route_names_a_way_of_answering_the_gateway_has():
    gateway, _ = build_gateway({m: answering(m) for m in MODELS}, ONLY_A)
    route = gateway.routes["racer"]
    with_policy = dataclasses.replace(route, policy=object())  # only its presence counts
    await gateway.aclose()
    assert [route.answering, with_policy.answering] == ["calibrated_set", "certified_policy"]
    assert set(gateway.strategies) == {route.answering, with_policy.answering}
