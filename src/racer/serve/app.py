"""The gateway's HTTP layer: an OpenAI-compatible FastAPI app over a :class:`Gateway`.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/feedback`` (a client or admin key); ``GET /metrics``, ``/docs``,
``/openapi.json`` and the detailed ``GET /healthz`` (an admin key); ``GET /healthz``
without an admin key is a bare liveness probe (``{"status": "ok"}``). Errors use
OpenAI's error object, with the codes the OpenAPI schema documents (400, 401, 404,
413, 429, 502, 504); malformed input is a 4xx, never a 500, and error messages never
echo long input.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from racer.serve.config import GatewayConfig
from racer.serve.gateway import Gateway, GatewayError, truncate
from racer.serve.log_outage import install_log_outage
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


_BEARER = HTTPBearer(auto_error=False, description="A gateway API key.")


def key_fingerprint(key: str) -> str:
    """What the decision log stores of the key that made a request (never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Caller:
    """Who is calling: the fingerprint of their key, and whether it is an admin key."""

    def __init__(self, owner: str | None, admin: bool):
        self.owner = owner
        self.admin = admin


class BearerKeys:
    """FastAPI dependency: 401 unless the request carries an accepted token.

    Parameters
    ----------
    accepted : frozenset of str
        Client tokens.
    admin : frozenset of str, optional
        Admin tokens (accepted everywhere).
    admin_only : bool, default False
        Accept admin tokens only. When no key at all is configured (an
        unauthenticated demo), everyone is admin.
    """

    def __init__(
        self,
        accepted: frozenset[str],
        admin: frozenset[str] = frozenset(),
        admin_only: bool = False,
    ):
        self._open = not accepted and not admin
        self._admin = [key.encode() for key in admin]
        self._accepted = [] if admin_only else [key.encode() for key in accepted]

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> Caller:
        if self._open:
            return Caller(None, True)
        token = credentials.credentials.encode() if credentials else b""
        is_admin = False
        for key in self._admin:  # every comparison runs: no timing signal of which matched
            is_admin |= hmac.compare_digest(token, key)
        is_client = False
        for key in self._accepted:
            is_client |= hmac.compare_digest(token, key)
        if not (is_admin or is_client):
            raise HTTPException(401, "Missing or invalid gateway API key (Authorization: Bearer).")
        return Caller(key_fingerprint(token.decode()), is_admin)


def _optional_admin(
    admin: frozenset[str], accepted: frozenset[str]
) -> Callable[..., Awaitable[bool]]:
    keys = BearerKeys(accepted, admin, admin_only=True)

    async def is_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> bool:
        try:
            return (await keys(credentials)).admin
        except HTTPException:
            return False

    return is_admin


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}
_ERRORS = {
    400: "Invalid request (malformed JSON, invalid field, text that is not Unicode).",
    401: "Missing or invalid gateway API key.",
    404: "Unknown model (route) or decision.",
    409: "Different feedback was already given on this decision.",
    413: "Request body over the configured limit.",
    429: "Every backend of the routed set is rate-limited; see Retry-After.",
    502: "Every backend of the routed set failed.",
    504: "No backend of the routed set answered within the route's deadline_s.",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": _ERROR_SCHEMA}},
        }
        for code in codes
    }


def create_app(
    gateway: Gateway,
    api_keys: frozenset[str] = frozenset(),
    admin_keys: frozenset[str] = frozenset(),
) -> FastAPI:
    """The FastAPI app serving ``gateway``.

    Parameters
    ----------
    gateway : Gateway
        The routing pipeline (closed when the app shuts down).
    api_keys : frozenset of str
        Accepted client bearer tokens; with no admin key either, the gateway serves
        without authentication (and everyone is admin).
    admin_keys : frozenset of str
        Tokens that may also read the detailed health, metrics and API docs, and give
        feedback on any decision.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    app = FastAPI(
        title="RACER gateway",
        description="OpenAI-compatible routing through calibrated sets of models.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(BodySizeLimit, max_bytes=gateway.config.server.max_request_bytes)
    app.add_middleware(ClientLatency, gateway=gateway)
    client = BearerKeys(api_keys, admin_keys)
    admin_only = [Depends(BearerKeys(api_keys, admin_keys, admin_only=True))]
    client_key = Depends(client)
    admin_check = Depends(_optional_admin(admin_keys, api_keys))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body(validation_message(error.errors()), "invalid_request_error"), 400
        )

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, error: GatewayError) -> JSONResponse:
        body = error_body(str(error), error.kind, error.code)
        return JSONResponse(body, error.status, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        kind = "authentication_error" if error.status_code == 401 else "invalid_request_error"
        headers = dict(error.headers or {})
        if error.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(
            error_body(truncate(str(error.detail), 200), kind), error.status_code, headers or None
        )

    @app.post(
        "/v1/chat/completions",
        responses=_responses(400, 401, 404, 413, 429, 502, 504),
    )
    async def chat_completions(
        request: ChatCompletionRequest,
        http: Request,
        caller: Caller = client_key,
    ) -> Response:
        started = http.scope.get("state", {}).get("racer_started")
        if request.model in gateway.routes:
            http.scope.setdefault("state", {})["racer_route"] = request.model
        if request.stream:
            events = await gateway.stream(request, started, caller.owner)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(await gateway.complete(request, started, caller.owner))

    started = int(time.time())
    model_cards = {
        name: {"id": name, "object": "model", "created": started, "owned_by": "racer"}
        for name in gateway.routes
    }
    model_list = {"object": "list", "data": list(model_cards.values())}

    @app.get("/v1/models", dependencies=[Depends(client)], responses=_responses(401))
    async def models() -> dict[str, Any]:
        return model_list

    @app.get(
        "/v1/models/{model_id:path}",
        dependencies=[Depends(client)],
        responses=_responses(401, 404),
    )
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in model_cards:
            gateway.route(model_id)  # raises the 404
        return model_cards[model_id]

    @app.post("/v1/feedback", responses=_responses(400, 401, 404, 409, 413))
    async def feedback(request: FeedbackRequest, caller: Caller = client_key) -> dict[str, Any]:
        return await gateway.feedback(request, caller.owner, caller.admin)

    @app.get("/healthz")
    async def healthz(admin: bool = admin_check) -> dict[str, Any]:
        if not admin:
            return {"status": "ok"}
        await _sync(gateway)
        return {
            "status": "ok",
            "routes": {name: route.describe() for name, route in gateway.routes.items()},
            "backends": {
                name: backend.breaker.describe() for name, backend in gateway.backends.items()
            },
        }

    @app.get(
        "/metrics",
        dependencies=admin_only,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **_responses(401)},
    )
    async def metrics() -> Response:
        await _sync(gateway)
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def openapi_schema() -> dict[str, Any]:
        schema = app.openapi()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        return schema

    @app.get("/openapi.json", dependencies=admin_only, include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return openapi_schema()

    @app.get("/docs", dependencies=admin_only, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="RACER gateway")

    install_admin(app, gateway)  # hook (issue 12): POST /admin/reload
    install_log_outage(app, gateway.decision_log, gateway.metrics.registry)  # GET /readyz
    return app


async def _sync(gateway: Gateway) -> None:
    """Bring the monitors up to the database (other workers' feedback included)."""
    await asyncio.to_thread(gateway.sync_monitors)


def app_from_config(config: GatewayConfig) -> FastAPI:
    """Validate keys, load artifacts, open backends and the log, and build the app.

    Raises
    ------
    ConfigError
        When a key, an artifact, a backend or the log cannot be set up.
    """
    admin_keys = config.auth.resolve_admin_keys()
    api_keys = config.auth.resolve_keys(has_admin=bool(admin_keys))
    return create_app(Gateway.from_config(config), api_keys, admin_keys)


CONFIG_ENV = "RACER_GATEWAY_CONFIG"


def app_from_environment() -> FastAPI:
    """The app of the configuration file named by ``RACER_GATEWAY_CONFIG`` (for workers)."""
    from racer.serve.config import load_config

    return app_from_config(load_config(os.environ[CONFIG_ENV]))
