"""What the gateway does while its decision log is down: readiness, refusals, metrics.

- ``GET /readyz`` (no key, for load balancers): 200 ``{"status": "ready"}`` while the
  log answers, else 503 ``{"status": "unavailable", "decision_log": "unavailable"}``
  with ``Retry-After``. ``GET /healthz`` stays a liveness probe.
- A request that needs the log while it is down (feedback, a reload, a decision that
  ``on_log_failure: refuse`` will not serve unlogged) is answered 503 with an OpenAI
  error body and ``Retry-After``, never 500. With ``refuse``, chat completions are
  answered 503 at once while the outage is known, before any backend is called; a
  relayed stream whose decision cannot be logged at its end stops without ``[DONE]``.
- Metrics: ``racer_decision_log_up`` (0 during an outage; the minimum over workers),
  ``racer_decisions_unlogged_total`` (answered with ``logged: false``) and
  ``racer_decision_log_refusals_total`` (answered 503 instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge

from racer.serve.decision_log import DecisionLog, DecisionLogUnavailable
from racer.serve.schemas import error_body

logger = logging.getLogger("racer.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBE_TIMEOUT_S = 2.0


class LogOutageMetrics:
    """The decision log's availability and the decisions it could not take, in Prometheus.

    Parameters
    ----------
    registry : CollectorRegistry
        The gateway's registry (its metrics render them; summed across workers).
    """

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.up = Gauge(
            "racer_decision_log_up",
            "1 while the decision log is reachable, 0 during an outage.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.unlogged = Counter(
            "racer_decisions_unlogged",
            "Decisions answered although the log could not store them (logged: false).",
            registry=registry,
        )
        self.refusals = Counter(
            "racer_decision_log_refusals",
            "Requests answered 503 because the decision log was unavailable.",
            registry=registry,
        )
        self.up.set(1)

    def availability(self, up: bool) -> None:
        """The log became reachable (True) or unreachable (False)."""
        self.up.set(1 if up else 0)

    def not_logged(self, refused: bool) -> None:
        """A decision could not be logged: it was refused, or answered unlogged."""
        (self.refusals if refused else self.unlogged).inc()


def find_outage(error: BaseException | None) -> DecisionLogUnavailable | None:
    """The :class:`DecisionLogUnavailable` behind ``error`` (its causes, its group), if any."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DecisionLogUnavailable):
            return current
        pending.extend([current.__cause__, current.__context__])
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
    return None


def unavailable_response(outage: DecisionLogUnavailable) -> JSONResponse:
    """503 with the outage's message and ``Retry-After``."""
    body = error_body(str(outage), "service_unavailable", "decision_log_unavailable")
    return JSONResponse(body, 503, {"Retry-After": str(max(1, round(outage.retry_after_s)))})


class LogOutageGuard:
    """ASGI middleware: 503 instead of 500 for anything the log's outage stops.

    Parameters
    ----------
    app : ASGI app
        The wrapped app.
    log : DecisionLog
        The gateway's decision log.
    metrics : LogOutageMetrics
        Where refusals are counted.
    """

    def __init__(self, app: ASGIApp, log: DecisionLog, metrics: LogOutageMetrics):
        self.app = app
        self.log = log
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (
            self.log.on_failure == "refuse"
            and not self.log.available
            and scope.get("path") == "/v1/chat/completions"
        ):
            self.metrics.not_logged(refused=True)
            await unavailable_response(self.log.outage())(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            outage = find_outage(error)
            if outage is None:
                raise
            if started:  # a stream already under way: end it without [DONE]
                logger.warning("a response was cut short: %s", outage)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await unavailable_response(outage)(scope, receive, send)


def install_log_outage(app: FastAPI, log: DecisionLog, registry: CollectorRegistry) -> None:
    """Add ``GET /readyz``, the 503 guard and the log's metrics to the gateway's app."""
    metrics = log.observer  # a second app over the same gateway shares its metrics
    if not isinstance(metrics, LogOutageMetrics) or metrics.registry is not registry:
        metrics = log.observer = LogOutageMetrics(registry)
    metrics.availability(log.available)

    async def readyz() -> JSONResponse:
        try:
            ready = await asyncio.wait_for(asyncio.wrap_future(log.probe()), PROBE_TIMEOUT_S)
        except TimeoutError:  # the log's thread is stuck on the database
            ready = False
        if ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": "unavailable", "decision_log": "unavailable"},
            503,
            {"Retry-After": str(log.retry_after_s())},
        )

    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_middleware(LogOutageGuard, log=log, metrics=metrics)
