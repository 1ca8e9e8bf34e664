"""The gateway's HTTP layer: an OpenAI-compatible FastAPI app over a :class:`Gateway`.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/feedback`` (a client or admin key); ``GET /metrics``, ``/docs``,
``/openapi.json`` and the detailed ``GET /healthz`` (an admin key); ``GET /healthz``
without an admin key is a bare liveness probe (``{"status": "ok"}``); ``POST
/admin/reload`` (:mod:`racer.serve.admin`). Errors use
OpenAI's error object, with the codes the OpenAPI schema documents (400, 401, 404,
413, 422, 429, 502, 504); malformed input is a 4xx, never a 500, and error messages never
echo long input.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from racer.serve.admin import install_admin
from racer.serve.admission import Admission
from racer.serve.auth import BearerKeys, Caller, optional_admin
from racer.serve.config import GatewayConfig
from racer.serve.errors import GatewayError, truncate
from racer.serve.gateway import Gateway
from racer.serve.headers import answer_headers
from racer.serve.log_outage import install_log_outage
from racer.serve.metrics import CONTENT_TYPE_LATEST
from racer.serve.middleware import BodySizeLimit, ClientLatency
from racer.serve.schemas import (
    ChatCompletionRequest,
    FeedbackRequest,
    error_body,
    validation_message,
)

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
    400: "Invalid request (malformed JSON, invalid field, text that is not Unicode), or the "
    "upstream rejected it (its status and message are passed on: 400, 404, 413, 422).",
    401: "Missing or invalid gateway API key.",
    404: "Unknown model (route) or decision (or the upstream's 404 for this request).",
    409: "Different feedback was already given on this decision.",
    413: "Request body over the configured limit (or the upstream's limit).",
    422: "The upstream rejected the request as unprocessable (its message is passed on).",
    429: "The gateway is at server.max_in_flight, or every backend of the routed set is "
    "rate-limited; see Retry-After.",
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
    app.add_middleware(  # outermost: a refused request costs no body read
        Admission, max_in_flight=gateway.config.server.max_in_flight, observer=gateway.metrics
    )
    client = BearerKeys(api_keys, admin_keys)
    admin_only = [Depends(BearerKeys(api_keys, admin_keys, admin_only=True))]
    client_key = Depends(client)
    admin_check = Depends(optional_admin(admin_keys, api_keys))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message = validation_message(error.errors(), await request.body())
        return JSONResponse(error_body(message, "invalid_request_error"), 400)

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
        responses=_responses(400, 401, 404, 413, 422, 429, 502, 504),
    )
    async def chat_completions(
        request: ChatCompletionRequest,
        http: Request,
        caller: Caller = client_key,
    ) -> Response:
        started = http.scope.get("state", {}).get("racer_started")
        if request.model in gateway.routes:
            http.scope.setdefault("state", {})["racer_route"] = request.model
        group = http.headers.get("x-racer-group")
        if request.stream:
            events = await gateway.stream(request, started, caller.owner, group)
            return StreamingResponse(events, media_type="text/event-stream", headers=events.headers)
        body = await gateway.complete(request, started, caller.owner, group)
        return JSONResponse(body, headers=answer_headers(body["racer"]))

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
                responses = operation.get("responses", {})
                if responses.get("422", {}).get("description") == "Validation Error":
                    responses.pop("422")  # FastAPI's own: validation errors are 400 here
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
