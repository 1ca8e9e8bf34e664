"""The HTTP layer: authentication, size limits, clear 4xx for bad input, the open
endpoints, keys kept secret, and a bounded fuzzing pass over the OpenAPI schema."""

from __future__ import annotations

import logging

import httpx
import pytest
from conftest import import_or_skip
from hypothesis import HealthCheck, given, settings
from serve_fakes import (
    ADMIN,
    KEY,
    MODELS,
    TableRouter,
    answering,
    build_gateway,
    chat,
    failing,
    serving,
)

from racer.serve.backends import Backend
from racer.serve.config import BackendConfig
from racer.serve.runner import ServerThread

A, B = MODELS[:2]
ROUTER = TableRouter({"hard": [0.1, 0.2, 0.3]}, default=[0.9, 0.7, 0.1])
UPSTREAMS = {m: answering(f"{m} says B") for m in MODELS}


@pytest.mark.asyncio
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
async def test_requests_without_a_valid_gateway_key_get_401(headers):
    async with serving(UPSTREAMS, ROUTER) as (client, _):
        client.headers.pop("Authorization")
        for method, path, body in [
            ("POST", "/v1/chat/completions", chat("q")),
            ("GET", "/v1/models", None),
            ("POST", "/v1/feedback", {"id": "x", "correct": True}),
        ]:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"
        bare = await client.get("/healthz", headers=headers)
        assert bare.status_code == 200 and bare.json() == {"status": "ok"}
        for path in ("/metrics", "/openapi.json", "/docs"):
            assert (await client.get(path, headers=headers)).status_code == 401, path


@pytest.mark.asyncio
async def test_bodies_over_the_limit_get_413_declared_or_streamed():
    async with serving(UPSTREAMS, ROUTER, max_request_bytes=2048) as (client, _):
        big = chat("x" * 5000)
        assert (await client.post("/v1/chat/completions", json=big)).status_code == 413

        async def chunks():
            for _ in range(5):
                yield b"x" * 1000

        streamed = await client.post("/v1/chat/completions", content=chunks())
        assert streamed.status_code == 413
        assert "2048 bytes" in streamed.json()["error"]["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "The request body is not valid JSON: "),
        (b'{"model": "racer",\n "messages": [,]}', "at line 2 column 15."),
        ({"model": "racer"}, "messages: Field required"),
        ({"model": "racer", "messages": []}, "messages"),
        ({"model": "racer", "messages": [{"role": "system", "content": "hi"}]}, "role 'user'"),
        ({**chat("q"), "n": 129}, "n:"),
        ({"model": "racer", "messages": [{"role": "wizard", "content": "q"}]}, "role"),
        ({"model": "racer", "messages": "hello"}, "messages"),
        ([1, 2, 3], "Invalid request"),
    ],
)
async def test_malformed_requests_get_400_with_a_clear_message(body, expected):
    async with serving(UPSTREAMS, ROUTER) as (client, _):
        if isinstance(body, bytes):
            response = await client.post(
                "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
        else:
            response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and expected in error["message"]


@pytest.mark.asyncio
async def test_models_health_and_metrics_describe_the_gateway():
    async with serving(UPSTREAMS, ROUTER) as (client, _):
        await client.post("/v1/chat/completions", json=chat("q"))
        await client.post("/v1/chat/completions", json=chat("hard"))
        models = (await client.get("/v1/models")).json()
        health = (await client.get("/healthz", headers=ADMIN)).json()
        metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert models["data"][0]["id"] == "racer" and models["object"] == "list"
    assert health["routes"]["racer"]["models"] == list(MODELS)
    assert health["routes"]["racer"]["monitor"]["n_feedback"] == 0
    for line in [
        'racer_requests_total{outcome="answered",route="racer"} 1.0',
        'racer_abstentions_total{route="racer"} 1.0',
        'racer_set_size_count{route="racer"} 2.0',
        f'racer_backend_latency_seconds_count{{backend="{A}"}} 1.0',
        f'racer_cost_usd_total{{backend="{A}"}}',
        'racer_monitor_alarm{route="racer"} 0.0',
    ]:
        assert line in metrics


@pytest.mark.asyncio
async def test_upstream_keys_never_reach_responses_metrics_or_logs(monkeypatch, caplog):
    secret = "sk-upstream-very-secret"
    monkeypatch.setenv("RACER_TEST_UPSTREAM_KEY", secret)
    seen_headers = []

    async def echo_key(request: httpx.Request) -> httpx.Response:
        seen_headers.append(request.headers["authorization"])
        return httpx.Response(500, json={"error": {"message": f"bad key {secret}"}})

    async with serving({**UPSTREAMS, A: echo_key}, ROUTER) as (client, gateway):
        config = BackendConfig(
            name=A, base_url="http://a.invalid/v1", retries=0, api_key_env="RACER_TEST_UPSTREAM_KEY"
        )
        await gateway.backends[A].aclose()
        gateway.backends[A] = Backend(config, transport=httpx.MockTransport(echo_key))
        with caplog.at_level(logging.DEBUG):
            answer = await client.post("/v1/chat/completions", json=chat("q"))
            failed = await client.post("/v1/chat/completions", json={**chat("q"), "model": "x"})
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        health = (await client.get("/healthz", headers=ADMIN)).text
    assert seen_headers == [f"Bearer {secret}"]
    assert "bad key ***" in answer.json()["racer"]["backends"][A]["error"]
    for text in (answer.text, failed.text, metrics, health, caplog.text):
        assert secret not in text


def test_a_missing_upstream_key_variable_is_a_start_up_error(monkeypatch):
    from racer.serve.config import ConfigError

    monkeypatch.delenv("RACER_TEST_ABSENT_KEY", raising=False)
    config = BackendConfig(
        name=A, base_url="http://a.invalid/v1", api_key_env="RACER_TEST_ABSENT_KEY"
    )
    with pytest.raises(ConfigError, match="RACER_TEST_ABSENT_KEY"):
        Backend(config)


@pytest.fixture(scope="module")
def live_gateway():
    """A fake-backed gateway on a loopback port, for the fuzzer."""
    _, app = build_gateway({**UPSTREAMS, B: failing(500)}, ROUTER)  # sets of A, B: one fails
    with ServerThread([app]) as servers:
        yield servers.urls[0]


def test_fuzzing_the_openapi_schema_finds_no_server_error(live_gateway):
    schemathesis = import_or_skip("schemathesis", "ci")
    generation = schemathesis.GenerationMode
    schema = schemathesis.openapi.from_url(f"{live_gateway}/openapi.json", headers=ADMIN)
    failures, answered = [], []

    def call(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEY}"}
        if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
            case.body["model"] = "racer"  # reach the routing pipeline, not only the 404
        response = case.call(timeout=10)
        if response.status_code >= 500:
            failures.append((case.method, case.path, case.body, response.text[:300]))
        if response.status_code == 200 and case.path == "/v1/chat/completions":
            answered.append(case.body)

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        # Bodiless GETs have nothing to break: a few examples; bodies get both modes.
        has_body = operation.method.upper() == "POST"
        modes = [generation.POSITIVE, generation.NEGATIVE][: 2 if has_body else 1]
        bounded = settings(
            max_examples=50 if has_body else 3,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        for mode in modes:
            bounded(given(operation.as_strategy(generation_mode=mode))(call))()
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/feedback"}
    assert not failures, failures[:3]
    assert answered, "no generated request reached the routing pipeline"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"max_tokens": -5}, "max_tokens"),
        ({"temperature": 99}, "temperature"),
        ({"stream": 0}, "stream"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("lone surrogate", "not valid Unicode"),
    ],
)
async def test_openai_fields_are_validated_and_bad_text_is_400(extra, field):
    async with serving(UPSTREAMS, ROUTER) as (client, _):
        if extra == "lone surrogate":  # JSON may escape one; it is not text
            body = b'{"model": "racer", "messages": [{"role": "user", "content": "\\ud800"}]}'
            headers = {"content-type": "application/json"}
            response = await client.post("/v1/chat/completions", content=body, headers=headers)
        else:
            response = await client.post("/v1/chat/completions", json={**chat("q"), **extra})
    assert response.status_code == 400 and field in response.json()["error"]["message"]


@pytest.mark.asyncio
async def test_models_can_be_retrieved_one_by_one():
    async with serving(UPSTREAMS, ROUTER) as (client, _):
        found = await client.get("/v1/models/racer")
        missing = await client.get("/v1/models/gpt-9")
    assert found.status_code == 200 and found.json()["id"] == "racer"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


@pytest.mark.asyncio
async def test_feedback_is_only_taken_from_the_requesting_key_or_an_admin():
    async with serving(UPSTREAMS, ROUTER) as (client, gateway):
        answer = (await client.post("/v1/chat/completions", json=chat("q"))).json()
        other = {"Authorization": "Bearer another-client-key"}
        gateway_keys = {KEY, "another-client-key"}
        from racer.serve.app import create_app

        app = create_app(gateway, frozenset(gateway_keys), frozenset({"gateway-admin-key"}))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as second:
            refused = await second.post(
                "/v1/feedback", json={"id": answer["id"], "correct": True}, headers=other
            )
            taken = await second.post(
                "/v1/feedback", json={"id": answer["id"], "correct": True}, headers=ADMIN
            )
        huge = await client.post("/v1/feedback", json={"id": "x" * 900_000, "correct": True})
        model = await client.post(
            "/v1/chat/completions", json={**chat("q"), "model": "m" * 900_000}
        )
    assert refused.status_code == 404 and taken.status_code == 200
    assert huge.status_code == 400 and len(huge.content) < 2_000
    assert model.status_code == 404 and len(model.content) < 2_000
