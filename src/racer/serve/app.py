"""The gateway's HTTP layer: an OpenAI-compatible FastAPI app over a :class:`Gateway`.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/feedback``
(bearer token required), ``GET /healthz`` and ``GET /metrics`` (open, for probes and
scrapers). Errors use OpenAI's error object; malformed input is a 4xx, never a 500.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from racer.serve.config import GatewayConfig
from racer.serve.gateway import Gateway, GatewayError
from racer.serve.metrics import CONTENT_TYPE_LATEST
from racer.serve.reload import install_admin
from racer.serve.schemas import (
    ChatCompletionRequest,
    FeedbackRequest,
    error_body,
    validation_message,
)

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


_BEARER = HTTPBearer(auto_error=False, description="A gateway API key.")


class BearerKeys:
    """FastAPI dependency: 401 unless the request carries one of the accepted tokens."""

    def __init__(self, accepted: frozenset[str]):
        self._accepted = [key.encode() for key in accepted]

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        if not self._accepted:
            return
        token = credentials.credentials.encode() if credentials else b""
        if not any(hmac.compare_digest(token, key) for key in self._accepted):
            raise HTTPException(401, "Missing or invalid gateway API key (Authorization: Bearer).")


def create_app(gateway: Gateway, api_keys: frozenset[str] = frozenset()) -> FastAPI:
    """The FastAPI app serving ``gateway``.

    Parameters
    ----------
    gateway : Gateway
        The routing pipeline (closed when the app shuts down).
    api_keys : frozenset of str
        Accepted bearer tokens; empty serves without authentication.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    app = FastAPI(
        title="RACER gateway",
        description="OpenAI-compatible routing through calibrated sets of models.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=gateway.config.server.max_request_bytes)
    authorized = [Depends(BearerKeys(api_keys))]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body(validation_message(error.errors()), "invalid_request_error"), 400
        )

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, error: GatewayError) -> JSONResponse:
        return JSONResponse(error_body(str(error), error.kind, error.code), error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        kind = "authentication_error" if error.status_code == 401 else "invalid_request_error"
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
        return JSONResponse(error_body(str(error.detail), kind), error.status_code, headers)

    @app.post("/v1/chat/completions", dependencies=authorized)
    async def chat_completions(request: ChatCompletionRequest) -> Response:
        if request.stream:
            events = await gateway.stream(request)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(await gateway.complete(request))

    started = int(time.time())
    model_list = {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": started, "owned_by": "racer"}
            for name in gateway.routes
        ],
    }

    @app.get("/v1/models", dependencies=authorized)
    async def models() -> dict[str, Any]:
        return model_list

    @app.post("/v1/feedback", dependencies=authorized)
    async def feedback(request: FeedbackRequest) -> dict[str, Any]:
        return await gateway.feedback(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "routes": {name: route.describe() for name, route in gateway.routes.items()},
            "backends": sorted(gateway.backends),
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    install_admin(app, gateway)  # hook (issue 12): POST /admin/reload
    return app


def app_from_config(config: GatewayConfig) -> FastAPI:
    """Validate keys, load artifacts, open backends and the log, and build the app.

    Raises
    ------
    ConfigError
        When a key, an artifact, a backend or the log cannot be set up.
    """
    api_keys = config.auth.resolve_keys()
    return create_app(Gateway.from_config(config), api_keys)
