"""One upstream: answers, costs, retries with backoff, timeouts, the concurrency cap."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from serve_fakes import answering, completion, failing, raising, sequence

from racer.serve.backends import Backend
from racer.serve.config import BackendConfig

BODY = {"model": "ignored", "messages": [{"role": "user", "content": "q"}]}


def backend(handler, **options) -> Backend:
    options = {
        "backoff_s": 0.001,
        "input_cost_per_token": 0.5,
        "output_cost_per_token": 1.0,
        **options,
    }
    config = BackendConfig(name="m", base_url="http://m.invalid/v1", model="upstream-m", **options)
    return Backend(config, transport=httpx.MockTransport(handler))


async def call(handler, **options):
    client = backend(handler, **options)
    try:
        return await client.complete(BODY)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_an_answer_carries_text_usage_and_cost_and_the_upstream_model_id():
    sent = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return completion("hi", prompt_tokens=4, completion_tokens=2)

    result = await call(handler)
    assert result.ok and result.text == "hi" and result.attempts == 1
    assert result.cost_usd == 4 * 0.5 + 2 * 1.0
    assert sent[0].url == "http://m.invalid/v1/chat/completions"
    assert b'"model":"upstream-m"' in sent[0].content.replace(b" ", b"")


@pytest.mark.asyncio
async def test_retries_back_off_exponentially_honouring_a_capped_retry_after(monkeypatch):
    waits = []
    slept = asyncio.sleep

    async def record_sleep(seconds):
        waits.append(seconds)
        await slept(0)

    async def retry_after(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"retry-after": "100"}, json={"error": {"message": "slow"}}
        )

    handler = sequence(failing(500), failing(502), retry_after, answering("ok"))
    monkeypatch.setattr("racer.serve.backends.asyncio.sleep", record_sleep)
    result = await call(handler, retries=3, backoff_s=0.01, max_backoff_s=0.5)
    assert result.ok and result.attempts == 4
    assert waits == [0.01, 0.02, 0.5]


@pytest.mark.asyncio
async def test_failures_are_described_never_raised():
    refused = await call(raising(httpx.ConnectError), retries=1)
    assert refused.attempts == 2 and "connection failed (ConnectError" in refused.error
    hung = await call(raising(httpx.ReadTimeout), retries=3, timeout_s=2)
    assert hung.attempts == 1 and hung.error.startswith("timed out after 2 s")

    async def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    malformed = await call(garbage)
    assert malformed.error == "malformed upstream response (IndexError)"
    no_usage = await call(
        lambda request: httpx.Response(200, json={"choices": [{"message": {"content": "x"}}]})
    )
    assert no_usage.ok and no_usage.cost_usd is None


@pytest.mark.asyncio
async def test_no_more_than_max_concurrency_requests_are_in_flight():
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return completion("ok")

    client = backend(slow, max_concurrency=3)
    results = await asyncio.gather(*(client.complete(BODY) for _ in range(12)))
    await client.aclose()
    assert all(r.ok for r in results) and peak == 3


@pytest.mark.asyncio
async def test_a_cancelled_call_gives_its_concurrency_slot_back():
    entered = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        entered.set()
        await asyncio.sleep(30)
        return completion("late")

    client = backend(sequence(hang, answering("ok")), max_concurrency=1)
    hung = asyncio.create_task(client.complete(BODY))
    await entered.wait()
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    result = await asyncio.wait_for(client.complete(BODY), timeout=5)
    await client.aclose()
    assert result.ok and result.text == "ok"


@pytest.mark.asyncio
async def test_logprobs_setting_asks_upstream_and_marks_what_the_client_did_not_ask():
    """``logprobs: true`` asks for them unless the client set ``logprobs``; the call reads
    them either way, and its relayed choices keep them only when the client asked."""
    from racer.serve.decision import upstream_choices

    sent = []
    content = [{"token": "hi", "logprob": -0.75, "bytes": None, "top_logprobs": []}]

    async def handler(request: httpx.Request) -> httpx.Response:
        asked = json.loads(request.content).get("logprobs")
        sent.append(asked)
        choice = {"message": {"content": "hi"}, "logprobs": {"content": content} if asked else None}
        return httpx.Response(200, json={"choices": [choice]})

    plain = await call(handler, logprobs=True)
    own = backend(handler, logprobs=True)
    try:
        asked = await own.complete({**BODY, "logprobs": True})
        declined = await own.complete({**BODY, "logprobs": False})
        streamed = own.adds_logprobs(BODY, stream=True)
    finally:
        await own.aclose()
    default = await call(handler)
    assert sent == [True, True, False, None]
    assert plain.token_logprobs == [-0.75] and plain.logprobs_added
    assert upstream_choices(plain)[0]["logprobs"] is None
    assert asked.token_logprobs == [-0.75] and not asked.logprobs_added
    assert upstream_choices(asked)[0]["logprobs"] == {"content": content}
    assert declined.token_logprobs is None and default.token_logprobs is None
    assert not streamed  # a stream is not asked
