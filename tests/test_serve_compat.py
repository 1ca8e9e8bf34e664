"""The official ``openai`` client reads RACER as it reads OpenAI: ``n`` choices, ``logprobs``,
usage details and ``system_fingerprint``, with a summed usage flagged as summed; every
answer, JSON or streamed, explains itself in ``x-racer-*`` headers."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
import pytest_asyncio
from serve_fakes import KEY, MODELS, TableRouter, build_gateway, failing, serving

ROUTER = TableRouter(
    {"one model": [0.9, 0.1, 0.1], "three models": [0.9, 0.8, 0.7]}, default=[0.9, 0.1, 0.1]
)
DETAILS = {"prompt_tokens_details": {"cached_tokens": 4}}


def logprobs_of(text: str) -> dict:
    return {"content": [{"token": text, "logprob": -0.25, "bytes": None, "top_logprobs": []}]}


def rich(model: str):
    """An upstream answering as OpenAI does: n choices, logprobs when asked, usage details."""

    async def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        n = body.get("n", 1)
        texts = [f"{model} answer {i}" for i in range(n)]
        usage = {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}
        usage |= DETAILS
        if body.get("stream"):
            chunks = [
                {
                    "id": "up",
                    "system_fingerprint": f"fp_{model}",
                    "choices": [
                        {
                            "index": i,
                            "delta": {"content": text},
                            "logprobs": logprobs_of(text) if body.get("logprobs") else None,
                            "finish_reason": "stop",
                        }
                    ],
                }
                for i, text in enumerate(texts)
            ]
            chunks.append({"id": "up", "choices": [], "usage": usage})
            events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=events, headers={"content-type": "text/event-stream"})
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": logprobs_of(text) if body.get("logprobs") else None,
            }
            for i, text in enumerate(texts)
        ]
        answer = {"id": "up", "object": "chat.completion", "choices": choices, "usage": usage}
        return httpx.Response(200, json=answer | {"system_fingerprint": f"fp_{model}"})

    return handle


@pytest_asyncio.fixture
async def client():
    gateway, app = build_gateway({m: rich(m) for m in MODELS}, ROUTER)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield openai.AsyncOpenAI(
            base_url="http://gateway.test/v1", api_key=KEY, http_client=http, max_retries=0
        )
    await gateway.aclose()


def ask(query: str) -> dict:
    return {"model": "racer", "messages": [{"role": "user", "content": query}]}


@pytest.mark.asyncio
async def test_n_choices_with_logprobs_usage_details_and_fingerprint(client):
    raw = await client.chat.completions.with_raw_response.create(
        **ask("one model"), n=2, logprobs=True, top_logprobs=1
    )
    answer = raw.parse()
    assert [c.message.content for c in answer.choices] == [
        "alpha-small answer 0",
        "alpha-small answer 1",
    ]
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.choices[1].logprobs.content[0].logprob == -0.25
    assert answer.usage.prompt_tokens_details.cached_tokens == 4
    assert answer.usage.completion_tokens == 10
    assert answer.system_fingerprint == "fp_alpha-small"
    assert answer.model_extra["racer"]["usage_summed"] is False
    assert raw.headers["x-racer-route"] == "racer"
    assert raw.headers["x-racer-models"] == "alpha-small"
    assert raw.headers["x-racer-decision"] == "set of 1: all answered"
    assert float(raw.headers["x-racer-cost-usd"]) == pytest.approx(10 * 0.001 + 10 * 0.002)
    assert raw.headers["x-racer-certificate"] == "alpha=0.1; delta=0.1; abstention=off"
    assert raw.headers["x-racer-id"] == answer.id


@pytest.mark.asyncio
async def test_a_multi_model_answer_sums_usage_and_says_so(client):
    raw = await client.chat.completions.with_raw_response.create(
        **ask("three models"), extra_body={}
    )
    answer = raw.parse()
    racer = answer.model_extra["racer"]
    assert answer.usage.prompt_tokens == 30  # 3 models x 10
    assert answer.usage.prompt_tokens_details.cached_tokens == 12
    assert racer["usage_summed"] is True
    assert racer["usage_by_model"]["beta-medium"]["prompt_tokens"] == 10
    assert raw.headers["x-racer-models"] == "alpha-small,beta-medium,gamma-large"
    assert raw.headers["x-racer-decision"].startswith("set of 3: ")


@pytest.mark.asyncio
async def test_streams_carry_the_headers_and_the_choices(client):
    # one model: relayed as the upstream streams it; the cost comes in the final chunk
    async with client.chat.completions.with_streaming_response.create(
        **ask("one model"), stream=True, n=2, logprobs=True
    ) as raw:
        assert raw.headers["x-racer-cost-usd"] == "pending"
        assert raw.headers["x-racer-decision"] == "set of 1: relayed"
        chunks = [chunk async for chunk in await raw.parse()]
    texts = {c.choices[0].index: c.choices[0].delta.content for c in chunks if c.choices}
    assert texts == {0: "alpha-small answer 0", 1: "alpha-small answer 1"}
    assert chunks[0].choices[0].logprobs.content[0].logprob == -0.25
    assert chunks[-1].model_extra["racer"]["cost_usd"] == pytest.approx(0.03)
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 4
    # three models: a finished answer, so everything is known before the first byte
    async with client.chat.completions.with_streaming_response.create(
        **ask("three models"), stream=True, n=2, logprobs=True
    ) as raw:
        assert float(raw.headers["x-racer-cost-usd"]) == pytest.approx(3 * 0.03)
        chunks = [chunk async for chunk in await raw.parse()]
    pieces: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            pieces[choice.index] = pieces.get(choice.index, "") + (choice.delta.content or "")
            assert chunk.system_fingerprint == "fp_alpha-small"
    assert pieces == {0: "alpha-small answer 0", 1: "alpha-small answer 1"}
    with_logprobs = [c for c in chunks if c.choices and c.choices[0].logprobs]
    assert [c.choices[0].index for c in with_logprobs] == [0, 1]
    assert chunks[-1].model_extra["racer"]["usage_summed"] is True


@pytest.mark.asyncio
async def test_failures_and_abstentions_carry_the_headers_too():
    router = TableRouter({"nobody": [0.1, 0.1, 0.1]}, default=[0.9, 0.1, 0.1])
    gateway, app = build_gateway({m: failing(500) for m in MODELS}, router)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            failed = await http.post("/v1/chat/completions", json=ask("q"), headers=headers)
            refused = await http.post(
                "/v1/chat/completions", json=ask("nobody") | {"n": 2}, headers=headers
            )
    finally:
        await gateway.aclose()
    assert failed.status_code == 502
    assert failed.headers["x-racer-decision"] == "failed"
    assert failed.headers["x-racer-models"] == "alpha-small"
    assert refused.headers["x-racer-decision"] == "abstained"
    assert refused.headers["x-racer-models"] == ""
    assert len(refused.json()["choices"]) == 2


class Trickle(httpx.AsyncByteStream):
    """A stream sending its first chunk at once, then one every ``every_s`` seconds."""

    def __init__(self, pieces: list[str], every_s: float):
        self.pieces, self.every_s = pieces, every_s

    async def __aiter__(self):
        for position, piece in enumerate(self.pieces):
            await asyncio.sleep(self.every_s if position else 0)
            chunk = {"id": "up", "choices": [{"index": 0, "delta": {"content": piece}}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        end = {"id": "up", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode()


@pytest.mark.asyncio
async def test_timeout_s_bounds_the_wait_between_chunks_not_a_healthy_stream():
    async def trickling(request: httpx.Request) -> httpx.Response:
        stream = Trickle(["a", "b", "c", "d", "e", "f", "g"], every_s=0.1)
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    async def stalling(request: httpx.Request) -> httpx.Response:
        stream = Trickle(["a", "b"], every_s=0.6)
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    upstreams = {MODELS[0]: trickling, MODELS[1]: stalling, MODELS[2]: stalling}
    router = TableRouter({"stall": [0.1, 0.9, 0.1]}, default=[0.9, 0.1, 0.1])
    options = {"backend_defaults": {"timeout_s": 0.35}}
    async with serving(upstreams, router, **options) as (http, _):
        healthy = await http.post("/v1/chat/completions", json=ask("q") | {"stream": True})
        stalled = await http.post("/v1/chat/completions", json=ask("stall") | {"stream": True})
    # 0.6 s in all, 0.1 s between chunks: whole, although longer than timeout_s
    assert "[DONE]" in healthy.text and healthy.text.count('"content":"') == 7
    # 0.6 s between chunks > timeout_s: cut after its first chunk
    assert "stream interrupted" in stalled.text and "[DONE]" not in stalled.text
