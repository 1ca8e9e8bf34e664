"""Small stand-ins for the gateway tests: a table router, a fixed-threshold calibration,
fake upstreams (httpx mock transports) and a gateway app built from them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np

from racer.serve.app import create_app
from racer.serve.backends import Backend
from racer.serve.config import parse_config
from racer.serve.decision_log import DecisionLog
from racer.serve.gateway import Gateway
from racer.serve.monitor import RiskMonitor
from racer.serve.route import Route

MODELS = ("alpha-small", "beta-medium", "gamma-large")
KEY = "gateway-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN_KEY = "gateway-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class TableRouter:
    """Scores looked up by query text; unknown queries get ``default``."""

    def __init__(self, table: Mapping[str, Sequence[float]], default: Sequence[float]):
        self.table = {q: np.asarray(s, dtype=float) for q, s in table.items()}
        self.default = np.asarray(default, dtype=float)

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray:
        return np.vstack([self.table.get(q, self.default) for q in queries])


class FixedThreshold:
    """A calibration stand-in: invoke every model scored at least ``1 - threshold_``.

    Column 0 (abstain score ``1 - max score``): the flag when it also passes the
    threshold (mode "flag"), the abstain decision when it reaches ``abstain_threshold_``
    (mode "strict"), False (mode "off").
    """

    alpha = 0.1
    delta = 0.1

    def __init__(self, threshold: float = 0.5, mode: str = "off", abstain_threshold: float = 0.5):
        self.threshold_ = threshold
        self.abstention_mode_ = mode
        self.abstain_threshold_ = abstain_threshold if mode == "strict" else None

    def predict(
        self, scores: np.ndarray, *, include_abstain: bool = False, abstain_scores: Any = None
    ) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        invoked = scores >= 1 - self.threshold_
        s0 = 1 - scores.max(axis=1, keepdims=True)
        if self.abstention_mode_ == "flag":
            column_0 = s0 >= 1 - self.threshold_
        elif self.abstention_mode_ == "strict":
            column_0 = s0 >= self.abstain_threshold_
        else:
            column_0 = np.zeros_like(s0, dtype=bool)
        decision = np.hstack([column_0, invoked])
        return decision if include_abstain else decision[:, 1:]


def completion(text: str, prompt_tokens: int = 10, completion_tokens: int = 5) -> httpx.Response:
    """An upstream chat.completion answer."""
    return httpx.Response(
        200,
        json={
            "id": "up",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        },
    )


def answering(text: str) -> Handler:
    """An upstream that always answers ``text`` (and streams it when asked)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            chunks = [
                {"id": "up", "choices": [{"index": 0, "delta": {"content": text[:2]}}]},
                {"id": "up", "choices": [{"index": 0, "delta": {"content": text[2:]}}]},
                {"id": "up", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"id": "up", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
            ]
            body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        return completion(text)

    return handle


def failing(status: int = 500, message: str = "upstream broke") -> Handler:
    """An upstream that always answers an HTTP error."""

    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": message}})

    return handle


def raising(error: type[Exception]) -> Handler:
    """An upstream whose transport raises ``error`` (a timeout, a refused connection)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return handle


def sequence(*handlers: Handler) -> Handler:
    """An upstream answering with each handler in turn (the last one repeats)."""
    calls = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return await handlers[min(calls, len(handlers)) - 1](request)

    return handle


def delayed(seconds: float, handler: Handler) -> Handler:
    """``handler``, answering ``seconds`` late (a slow or, with a long delay, hung upstream)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return await handler(request)

    return handle


def tool_call(name: str = "get_weather", text: str | None = None) -> Handler:
    """An upstream answering with one tool call (and ``text`` as content, or null)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": name, "arguments": '{"city": "Paris"}'},
        }
        message = {"role": "assistant", "content": text, "tool_calls": [call]}
        return httpx.Response(
            200,
            json={
                "id": "up",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            },
        )

    return handle


def refusing(refusal: str = "I can't help with that.") -> Handler:
    """An upstream that refuses (structured-output refusal: ``content: null``)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        message = {"role": "assistant", "content": None, "refusal": refusal}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return httpx.Response(200, json={"id": "up", "choices": [choice]})

    return handle


def content_filtered() -> Handler:
    """An upstream whose content filter stops the answer (``content: null``)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        message = {"role": "assistant", "content": None}
        choice = {"index": 0, "message": message, "finish_reason": "content_filter"}
        return httpx.Response(200, json={"id": "up", "choices": [choice]})

    return handle


class _Events(httpx.AsyncByteStream):
    """Server-sent events, one every ``every_s`` seconds."""

    def __init__(self, events: Sequence[dict[str, Any] | str], every_s: float):
        self.events, self.every_s = events, every_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            data = event if isinstance(event, str) else json.dumps(event)
            yield f"data: {data}\n\n".encode()
            await asyncio.sleep(self.every_s)


def streaming(events: Sequence[dict[str, Any] | str], every_s: float = 0.0) -> Handler:
    """An upstream that streams ``events`` (chunks, error objects, "[DONE]") at that pace."""

    async def handle(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, stream=_Events(events, every_s), headers=headers)

    return handle


def delta(text: str) -> dict[str, Any]:
    """A stream chunk carrying ``text``."""
    return {"id": "up", "choices": [{"index": 0, "delta": {"content": text}}]}


def by_prompt(handlers: Mapping[str, Handler], default: Handler) -> Handler:
    """An upstream answering with the handler of the first word found in the prompt."""

    async def handle(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        word = next((w for w in handlers if w in prompt), None)
        return await (handlers[word] if word else default)(request)

    return handle


def counting(handler: Handler, counter: dict[str, int], name: str) -> Handler:
    """``handler``, counting its calls in ``counter[name]``."""

    async def handle(request: httpx.Request) -> httpx.Response:
        counter[name] = counter.get(name, 0) + 1
        await asyncio.sleep(0)
        return await handler(request)

    return handle


def build_gateway(
    handlers: Mapping[str, Handler],
    router: TableRouter,
    *,
    route: Mapping[str, Any] | None = None,
    backend_defaults: Mapping[str, Any] | None = None,
    log_url: str = "sqlite:///:memory:",
    max_request_bytes: int = 1_000_000,
    calibration: FixedThreshold | None = None,
    limits: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
) -> tuple[Gateway, Any]:
    """A gateway over fake upstreams (one per model of ``MODELS``) and its FastAPI app."""
    config = parse_config(
        {
            "server": {"max_request_bytes": max_request_bytes, **(server or {})},
            "backend_defaults": {"retries": 0, "backoff_s": 0, **(backend_defaults or {})},
            "backends": [
                {
                    "name": m,
                    "base_url": f"http://{m}.invalid/v1",
                    "input_cost_per_token": 0.001,
                    "output_cost_per_token": 0.002,
                }
                for m in MODELS
            ],
            "routes": [{"name": "racer", "artifact": "unused", **(route or {})}],
            "auth": {"api_keys": [KEY], "admin_keys": [ADMIN_KEY]},
            "decision_log": {"url": log_url},
            "limits": dict(limits or {}),
        }
    )
    backends = {
        b.name: Backend(b, transport=httpx.MockTransport(handlers[b.name])) for b in config.backends
    }
    calibration = calibration or FixedThreshold()
    gateway = Gateway(
        config,
        {"racer": Route(config.routes[0], router, calibration, MODELS, RiskMonitor(0.1, 0.05))},
        backends,
        DecisionLog(config.decision_log.url),
    )
    keys = config.auth.resolve_keys()
    return gateway, create_app(gateway, keys, config.auth.resolve_admin_keys())


def chat(query: str, **extra: Any) -> dict[str, Any]:
    """A chat-completion request body for the route ``racer``."""
    return {"model": "racer", "messages": [{"role": "user", "content": query}], **extra}


@asynccontextmanager
async def serving(
    handlers: Mapping[str, Handler], router: TableRouter, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """An in-process client of a fake-backed gateway (authorised), closed afterwards."""
    gateway, app = build_gateway(handlers, router, **options)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway.test", headers=AUTH
        ) as client:
            yield client, gateway
    finally:
        await gateway.aclose()
