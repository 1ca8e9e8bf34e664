"""The replay server: real recorded RouterBench responses behind an OpenAI-compatible API."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from dataclasses import replace

import httpx
import pytest

from racer.data.load import load_dataset
from racer.serve.replay import ReplayBook, create_replay_app, normalise

GPT4 = "gpt-4-1106-preview"
MIXTRAL = "mistralai/mixtral-8x7b-chat"


@pytest.fixture(scope="module")
def book(shared_data) -> ReplayBook:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_dataset(shared_data / "routerbench" / "mbpp_test.csv")
    return ReplayBook(data)


def ask(app, model: str, prompt: str, **extra) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replay") as client:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
            return await client.post("/v1/chat/completions", json=body)

    return asyncio.run(post())


def recorded(book: ReplayBook, row: int, model: str) -> str:
    return book.dataset.responses[row, book.model_names.index(model)]


def test_prompts_are_found_by_exact_then_normalised_text(book):
    prompt = book.dataset.queries[3]
    assert book.find(prompt) == 3
    assert book.find("  " + prompt.upper().replace(" ", "\n ") + " ") == 3
    assert normalise(" A\tb\n C ") == "a b c"
    assert book.find("a prompt nobody recorded") is None


def test_the_request_model_chooses_whose_recorded_response_comes_back(book):
    app = create_replay_app(book)
    prompt = book.dataset.queries[5]
    for model in (GPT4, MIXTRAL):
        body = ask(app, model, prompt).json()
        assert body["choices"][0]["message"]["content"] == recorded(book, 5, model)
        assert body["model"] == model and body["usage"]["completion_tokens"] >= 1


def test_a_server_bound_to_one_model_answers_as_that_model(book):
    app = create_replay_app(book, model=MIXTRAL)
    body = ask(app, "whatever", book.dataset.queries[0]).json()
    assert body["choices"][0]["message"]["content"] == recorded(book, 0, MIXTRAL)


def test_unknown_models_and_prompts_are_404_with_a_reason(book):
    app = create_replay_app(book)
    unknown_model = ask(app, "gpt-9", book.dataset.queries[0])
    assert unknown_model.status_code == 404 and "gpt-9" in unknown_model.json()["error"]["message"]
    unknown_prompt = ask(app, GPT4, "never asked")
    assert unknown_prompt.status_code == 404
    assert "not in the data" in unknown_prompt.json()["error"]["message"]


def test_latency_and_failures_can_be_injected(book):
    prompt = book.dataset.queries[0]
    started = time.perf_counter()
    assert ask(create_replay_app(book, latency_s=0.05), GPT4, prompt).status_code == 200
    assert time.perf_counter() - started >= 0.05
    broken = create_replay_app(book, failure_rate=1.0)
    assert ask(broken, GPT4, prompt).status_code == 500
    with pytest.raises(ValueError, match="failure_rate"):
        create_replay_app(book, failure_rate=2.0)
    with pytest.raises(ValueError, match="Unknown model"):
        create_replay_app(book, model="gpt-9")


def test_streams_carry_the_recorded_text_and_usage_on_request(book):
    app = create_replay_app(book)
    response = ask(
        app, GPT4, book.dataset.queries[2], stream=True, stream_options={"include_usage": True}
    )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == recorded(book, 2, GPT4)
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_data_without_responses_cannot_be_replayed(book):
    with pytest.raises(ValueError, match="no recorded responses"):
        ReplayBook(replace(book.dataset, responses=None))
