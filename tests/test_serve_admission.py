"""Admission control: beyond server.max_in_flight chat completions, 429 with Retry-After at
once; other endpoints always get through; the slots come back when requests end."""

from __future__ import annotations

import asyncio

import pytest
from serve_fakes import ADMIN, MODELS, TableRouter, answering, chat, serving

from racer.serve.admission import Admission

TOP = TableRouter({}, default=[0.9, 0.2, 0.1])  # the set {alpha-small}


@pytest.mark.asyncio
async def test_one_request_over_the_limit_gets_429_with_retry_after_at_once():
    release, started = asyncio.Event(), []

    async def held(request):
        started.append(request)
        await release.wait()
        return await answering("held answer")(request)

    handlers = {m: held for m in MODELS}
    async with serving(handlers, TOP, server={"max_in_flight": 2}) as (client, _):
        admitted = [asyncio.create_task(client.post("/v1/chat/completions", json=chat(f"q{i}")))
                    for i in range(2)]  # fmt: skip
        while len(started) < 2:  # both are waiting for their backend
            await asyncio.sleep(0.01)
        refused = await asyncio.wait_for(
            client.post("/v1/chat/completions", json=chat("one more")), 1.0
        )  # at once: the held requests are still waiting for their backend
        streamed = await client.post("/v1/chat/completions", json=chat("s", stream=True))
        health = await client.get("/healthz")
        release.set()
        answers = await asyncio.gather(*admitted)
        after = await client.post("/v1/chat/completions", json=chat("after"))
        metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "overloaded")
    assert "max_in_flight" in error["message"]
    assert streamed.status_code == 429 and health.status_code == 200
    assert [a.status_code for a in answers] == [200, 200] and after.status_code == 200
    assert "racer_requests_overloaded_total 2.0" in metrics
    assert "racer_requests_in_flight 0.0" in metrics


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Admission(lambda *_: None, max_in_flight=0)
