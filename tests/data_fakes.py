"""Loopback stand-ins for the collect / grade / audit tests: replay servers that count
the prompts they are asked, a rule-driven judge server, and RouterBench ARC queries."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from racer.aggregate import extract_answer
from racer.data.dataset import RoutingDataset
from racer.data.load import load_dataset


class CountingApp:
    """ASGI wrapper counting each (model of the server, prompt) chat request it receives."""

    def __init__(self, app: Any, model: str, counts: Counter):
        self.app, self.model, self.counts = app, model, counts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        messages, chunks = [], []
        while True:
            message = await receive()
            messages.append(message)
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = json.loads(b"".join(chunks) or b"{}")
        prompt = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        self.counts[(self.model, prompt)] += 1
        replay = iter(messages)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


def arc_test(shared_data: Path, n: int | None = None) -> RoutingDataset:
    """RouterBench ARC-Challenge test data (its first ``n`` queries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_dataset(shared_data / "routerbench" / "arc_challenge_test.csv")
    return data if n is None else data.subset(np.arange(n))


def derived_references(data: RoutingDataset) -> list[str]:
    """The answer letter of each query, derived from the data alone.

    The letter most of the models labelled correct answered; when no model is correct,
    the first of A-D that no model answered (the answer is none of theirs).
    """
    references = []
    for row in range(data.n_queries):
        letters = [extract_answer(r, "choice") for r in data.responses[row]]
        right = Counter(
            x for x, y in zip(letters, data.labels[row], strict=True) if y == 1 and x is not None
        )
        if right:
            references.append(right.most_common(1)[0][0])
        else:
            references.append(next(c for c in "ABCDE" if c not in letters))
    return references


def write_queries(data: RoutingDataset, path: Path, references: list[str] | None = None) -> Path:
    """A collect queries file: ``id``, ``query`` (and ``reference``) per line."""
    with path.open("w", encoding="utf-8") as handle:
        for row in range(data.n_queries):
            record = {"id": str(data.query_ids[row]), "query": str(data.queries[row])}
            if references is not None:
                record["reference"] = references[row]
            handle.write(json.dumps(record) + "\n")
    return path


def judge_app(rule: Callable[[str, int], str | None], calls: Counter) -> FastAPI:
    """A fake OpenAI-compatible judge: ``rule(prompt, attempt)`` gives the reply text,
    None answers HTTP 500. ``calls`` counts the requests per prompt."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(body: dict) -> JSONResponse:
        prompt = body["messages"][-1]["content"]
        calls[prompt] += 1
        text = rule(prompt, calls[prompt])
        if text is None:
            return JSONResponse({"error": {"message": "judge down"}}, 500)
        return JSONResponse(
            {
                "id": "judge",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10},
            }
        )

    return app
