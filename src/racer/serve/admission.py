"""Admission control: a bounded number of chat completions in flight per process.

Beyond its capacity a process that queues every request without limit makes every
request slower (congestion collapse: the queue grows, each request waits longer,
clients time out and retry). The gateway instead works on at most
``server.max_in_flight`` chat completions at once (a stream counts until its last
byte) and answers one more at once with 429, ``Retry-After`` and an OpenAI-style
error, which clients (the ``openai`` library among them) retry after a back-off, and
which a load balancer can send to another instance. Only ``/v1/chat/completions`` is
counted: health checks, metrics, feedback and admin calls always get through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from fastapi.responses import JSONResponse

from racer.serve.schemas import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADMITTED_PATH = "/v1/chat/completions"


class AdmissionObserver(Protocol):
    """What is told of admissions (the gateway's metrics)."""

    def requests_in_flight(self, count: int) -> None:
        """The number of chat completions in flight changed."""

    def refused_overloaded(self) -> None:
        """A chat completion was refused with 429."""


class Admission:
    """ASGI middleware: at most ``max_in_flight`` chat completions at once, 429 beyond.

    Parameters
    ----------
    app : ASGI app
        The gateway app.
    max_in_flight : int
        Chat completions worked on at once.
    retry_after_s : int, default 1
        The ``Retry-After`` of a refused request.
    observer : AdmissionObserver, optional
        Told of the count in flight and of each refusal.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        retry_after_s: int = 1,
        observer: AdmissionObserver | None = None,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}.")
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.observer = observer
        self.count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != ADMITTED_PATH:
            await self.app(scope, receive, send)
            return
        if self.count >= self.max_in_flight:
            await self._refuse(scope, send)
            return
        self._change(+1)
        try:
            await self.app(scope, receive, send)
        finally:
            self._change(-1)

    def _change(self, step: int) -> None:
        self.count += step
        if self.observer is not None:
            self.observer.requests_in_flight(self.count)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if self.observer is not None:
            self.observer.refused_overloaded()
        body = error_body(
            f"The gateway is at its limit of {self.max_in_flight} requests in flight "
            f"(server.max_in_flight); retry after {self.retry_after_s} s.",
            "rate_limit_error",
            "overloaded",
        )
        response = JSONResponse(body, 429, {"Retry-After": str(self.retry_after_s)})
        await response(scope, _disconnected, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}
