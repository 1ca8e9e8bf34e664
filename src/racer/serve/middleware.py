"""The gateway app's ASGI middleware: body size limit, client latency, shared reloads."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from racer.serve.gateway import Gateway
from racer.serve.reload import ReloadFeed
from racer.serve.schemas import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request body over ``max_bytes`` (declared or sent)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    @staticmethod
    async def _reject(scope: Scope, send: Send, status: int, message: str) -> None:
        response = JSONResponse(error_body(message, "invalid_request_error"), status)
        await response(scope, _no_receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(
                scope,
                send,
                413 if declared.isdigit() else 400,
                f"Request body too large or invalid Content-Length; the limit is "
                f"{self.max_bytes} bytes.",
            )
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(
                    scope, send, 413, f"Request body over the limit of {self.max_bytes} bytes."
                )
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class ClientLatency:
    """ASGI middleware: time each chat completion as its client sees it.

    The clock starts when the request reaches the app (before its body is read) and
    stops when the last byte of the answer is handed to the server, so queueing for
    the event loop, scoring, backends, logging and streaming are all counted. The
    start time is also put in ``scope["state"]["racer_started"]`` for the deadline.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        # From the first byte read by the server protocol when it records it, else now.
        started = state.get("racer_received", time.perf_counter())
        state["racer_started"] = started

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                route = state.get("racer_route")
                if route is not None:
                    self.gateway.metrics.observe_latency(route, time.perf_counter() - started)

        await self.app(scope, receive, timed_send)


class FollowReloads:
    """ASGI middleware: the first request starts the worker's :class:`ReloadFeed`."""

    def __init__(self, app: ASGIApp, feed: ReloadFeed):
        self.app, self.feed = app, feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.feed.started:
            await self.feed.start()
        await self.app(scope, receive, send)
