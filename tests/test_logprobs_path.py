"""Token logprobs end to end, with recorded synthetic logprobs (no real ones here).

A replay server holding a small dataset with known synthetic token logprobs answers
them to a request that asks; ``racer collect`` asks the backends whose configuration
sets ``logprobs: true`` and stores them; ``racer grade`` keeps them; the gateway's
audited sample stores them and ``racer dataset --from-log`` exports them; every file
loads back into ``RoutingDataset.logprobs`` with the recorded values, and the answer
signals (``policy_data(...).signals``) are their means and minima. The gateway asks a
backend with ``logprobs: true`` for them and returns them only to a client that asked.
"""

from __future__ import annotations

import asyncio
import json
import warnings

import httpx
import numpy as np
import pytest
import yaml
from serve_fakes import FixedThreshold, TableRouter, answering, chat, serving
from typer.testing import CliRunner

from racer.cli import app as cli
from racer.data.dataset import RoutingDataset
from racer.data.load import load_dataset
from racer.evaluation.certified import policy_data
from racer.serve.app import create_app
from racer.serve.backends import Backend
from racer.serve.config import parse_config
from racer.serve.decision_log import DecisionLog
from racer.serve.gateway import Gateway
from racer.serve.monitor import RiskMonitor
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.route import Route
from racer.serve.runner import ServerThread

MODELS = ("small", "large")
N_QUERIES = 8
NO_LOGPROBS = (3, 0)  # the cell whose backend returned none (recorded as None)


def synthetic() -> RoutingDataset:
    """Eight multiple-choice queries, two models, seeded synthetic token logprobs."""
    rng = np.random.default_rng(17)
    queries = [f"Question {i}: is {i} even? Answer A (yes) or B (no)." for i in range(N_QUERIES)]
    right = ["A" if i % 2 == 0 else "B" for i in range(N_QUERIES)]
    responses = np.empty((N_QUERIES, 2), dtype=object)
    logprobs = np.empty((N_QUERIES, 2), dtype=object)
    labels = np.zeros((N_QUERIES, 2))
    for i in range(N_QUERIES):
        for j in range(2):
            wrong = j == 0 and i % 3 == 0  # the small model errs on every third query
            responses[i, j] = ("B" if right[i] == "A" else "A") if wrong else right[i]
            labels[i, j] = float(not wrong)
            logprobs[i, j] = -rng.exponential(0.4, size=1 + (i + j) % 4)
    logprobs[NO_LOGPROBS] = None
    return RoutingDataset(
        queries=np.array(queries, dtype=object),
        model_names=MODELS,
        labels=labels,
        costs=np.tile([1e-4, 2e-3], (N_QUERIES, 1)),
        responses=responses,
        logprobs=logprobs,
        query_ids=[f"q{i}" for i in range(N_QUERIES)],
    )


@pytest.fixture(scope="module")
def recorded() -> RoutingDataset:
    return synthetic()


def in_recorded_order(data: RoutingDataset, recorded: RoutingDataset) -> RoutingDataset:
    rows = [list(data.query_ids).index(q) for q in recorded.query_ids]
    return data.subset(np.array(rows)).select_models(list(recorded.model_names))


def assert_same_logprobs(loaded: np.ndarray, expected: np.ndarray) -> None:
    assert loaded.shape == expected.shape
    for (i, j), values in np.ndenumerate(expected):
        if values is None:
            assert loaded[i, j] is None, (i, j)
        else:
            assert loaded[i, j] is not None, (i, j)
            assert loaded[i, j].tolist() == values.tolist(), (i, j)


def expected_stats(logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and minimum of each cell, computed here (NaN where there are none)."""
    mean = np.full(logprobs.shape, np.nan)
    low = np.full(logprobs.shape, np.nan)
    for (i, j), values in np.ndenumerate(logprobs):
        if values is not None:
            mean[i, j] = sum(values.tolist()) / len(values)
            low[i, j] = min(values.tolist())
    return mean, low


def invoke(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


async def post(app, body: dict) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://replay") as client:
        return await client.post("/v1/chat/completions", json=body)


def streamed_logprobs(response: httpx.Response) -> tuple[str, list | None]:
    """The text of a streamed answer and the logprob values its chunks carried."""
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text, values, seen = "", [], False
    for event in events[:-1]:
        for choice in json.loads(event)["choices"]:
            text += choice["delta"].get("content") or ""
            if choice.get("logprobs") is not None:
                seen = True
                values += [item["logprob"] for item in choice["logprobs"]["content"]]
    return text, values if seen else None


# ---------------------------------------------------------------------------
# The replay server


def test_replay_returns_recorded_logprobs_only_when_asked(recorded):
    app = create_replay_app(ReplayBook(recorded))
    prompt = str(recorded.queries[1])

    def ask(**extra) -> dict:
        body = {"model": "large", "messages": [{"role": "user", "content": prompt}], **extra}
        return asyncio.run(post(app, body)).json()

    values = recorded.logprobs[1, 1].tolist()
    asked = ask(logprobs=True)["choices"][0]
    assert asked["message"]["content"] == recorded.responses[1, 1]
    assert asked["logprobs"] == {
        "content": [{"token": "", "logprob": v, "bytes": None, "top_logprobs": []} for v in values]
    }
    assert ask()["choices"][0]["logprobs"] is None
    assert ask(logprobs=False)["choices"][0]["logprobs"] is None
    # a recorded answer without logprobs has none, even when asked
    none_prompt = str(recorded.queries[NO_LOGPROBS[0]])
    body = {"model": "small", "messages": [{"role": "user", "content": none_prompt}]}
    answer = asyncio.run(post(app, {**body, "logprobs": True})).json()
    assert answer["choices"][0]["logprobs"] is None


def test_replay_streams_recorded_logprobs_only_when_asked(recorded):
    app = create_replay_app(ReplayBook(recorded))
    prompt = str(recorded.queries[2])
    body = {"model": "large", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    text, values = streamed_logprobs(asyncio.run(post(app, {**body, "logprobs": True})))
    assert text == recorded.responses[2, 1] and values == recorded.logprobs[2, 1].tolist()
    text, values = streamed_logprobs(asyncio.run(post(app, body)))
    assert text == recorded.responses[2, 1] and values is None


# ---------------------------------------------------------------------------
# racer collect -> racer grade -> load_dataset -> policy_data, over loopback


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_collect_stores_logprobs_that_load_into_the_dataset_and_its_signals(
    recorded, tmp_path, suffix
):
    """``small`` has ``logprobs: true``, ``large`` not: only small's are asked and stored,
    though the replay server holds both."""
    book = ReplayBook(recorded)
    queries = tmp_path / "queries.jsonl"
    with queries.open("w", encoding="utf-8") as handle:
        for i in range(N_QUERIES):
            reference = "A" if i % 2 == 0 else "B"
            record = {"id": recorded.query_ids[i], "query": recorded.queries[i]}
            handle.write(json.dumps({**record, "reference": reference}) + "\n")
    with ServerThread([create_replay_app(book, m) for m in MODELS]) as servers:
        urls = dict(zip(MODELS, servers.urls, strict=True))
        config = {
            "backend_defaults": {"retries": 0},
            "backends": [
                {"name": "small", "base_url": f"{urls['small']}/v1", "logprobs": True},
                {"name": "large", "base_url": f"{urls['large']}/v1"},
            ],
        }
        gateway_yaml = tmp_path / "gateway.yaml"
        gateway_yaml.write_text(yaml.safe_dump(config), encoding="utf-8")
        out = tmp_path / f"responses{suffix}"
        invoke("collect", "--config", gateway_yaml, "--queries", queries, "--out", out,
               "--no-progress")  # fmt: skip
    graded = tmp_path / f"graded{suffix}"
    invoke("grade", "--data", out, "--out", graded)
    data = in_recorded_order(load_dataset(graded), recorded)

    expected = recorded.logprobs.copy()
    expected[:, 1] = None  # large was not asked
    assert_same_logprobs(data.logprobs, expected)
    assert np.array_equal(data.labels, recorded.labels)
    signals = policy_data(data, None, None).signals
    mean, low = expected_stats(expected)
    np.testing.assert_array_equal(signals.logprob_mean, mean)
    np.testing.assert_array_equal(signals.logprob_min, low)
    assert signals.has_logprobs.sum() == N_QUERIES - 1

    # the collected file is replayable: its recorded logprobs come back when asked
    replay = create_replay_app(ReplayBook(data))
    for i in (0, 5):
        prompt = str(recorded.queries[i])
        body = {"model": "small", "logprobs": True,
                "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
        content = asyncio.run(post(replay, body)).json()["choices"][0]["logprobs"]["content"]
        assert [item["logprob"] for item in content] == recorded.logprobs[i, 0].tolist()


# ---------------------------------------------------------------------------
# The gateway: its audited sample -> racer dataset --from-log -> load_dataset


def replay_gateway(book: ReplayBook, log_url: str, backend_options: dict) -> Gateway:
    """A gateway over in-process replay servers; its route's set is {small}, every
    request audited (so large is called in the background)."""
    config = parse_config(
        {
            "backend_defaults": {"retries": 0, **backend_options},
            "backends": [{"name": m, "base_url": f"http://{m}.invalid/v1"} for m in MODELS],
            "routes": [{"name": "racer", "artifact": "unused", "audit_rate": 1.0}],
            "auth": {"api_keys": ["k"], "admin_keys": ["a"]},
            "decision_log": {"url": log_url, "store_prompts": True},
        }
    )
    backends = {
        b.name: Backend(b, transport=httpx.ASGITransport(app=create_replay_app(book, b.name)))
        for b in config.backends
    }
    route = Route(
        config.routes[0], TableRouter({}, [0.9, 0.2]), FixedThreshold(), MODELS,
        RiskMonitor(0.1, 0.05),
    )  # fmt: skip
    return Gateway(config, {"racer": route}, backends, DecisionLog(log_url, store_prompts=True))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_audited_logprobs_reach_racer_dataset_but_not_the_client(recorded, tmp_path, suffix):
    log_url = f"sqlite:///{tmp_path / 'decisions.sqlite3'}"
    gateway = replay_gateway(ReplayBook(recorded), log_url, {"logprobs": True})
    app = create_app(gateway, frozenset({"k"}), frozenset({"a"}))

    async def ask_all() -> list[dict]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer k"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=headers
        ) as client:
            answers = [
                (await client.post("/v1/chat/completions", json=chat(str(q)))).json()
                for q in recorded.queries
            ]
        await gateway.aclose()
        return answers

    answers = asyncio.run(ask_all())
    assert [a["racer"]["set"] for a in answers] == [["small"]] * N_QUERIES
    assert all(a["choices"][0]["logprobs"] is None for a in answers)  # nobody asked
    out = tmp_path / f"audited{suffix}"
    invoke("dataset", "--from-log", log_url, "--out", out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no labels yet (no grades, no feedback)
        exported = load_dataset(out)
    by_id = {str(a["racer"]["id"]): str(q) for a, q in zip(answers, recorded.queries, strict=True)}
    rows = [list(recorded.queries).index(by_id[str(i)]) for i in exported.query_ids]
    order = np.argsort(rows)
    data = exported.subset(order).select_models(list(MODELS))
    assert [str(q) for q in data.queries] == [str(q) for q in recorded.queries]
    assert_same_logprobs(data.logprobs, recorded.logprobs)
    mean, low = expected_stats(recorded.logprobs)
    signals = policy_data(data, None, None).signals
    np.testing.assert_array_equal(signals.logprob_mean, mean)
    np.testing.assert_array_equal(signals.logprob_min, low)


# ---------------------------------------------------------------------------
# The gateway asks, and relays, logprobs as the backend setting and the client say


def logprob_upstream(values: list[float], seen: list[dict]):
    """An upstream that answers "B" with ``values`` as logprobs, only when asked for them
    (as vLLM and OpenAI do), and records every request body in ``seen``."""
    content = [{"token": "B", "logprob": v, "bytes": [66], "top_logprobs": []} for v in values]

    async def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        probs = {"content": content} if body.get("logprobs") else None
        if body.get("stream"):
            chunks = [
                {"id": "up", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                {"id": "up", "choices": [{"index": 0, "delta": {"content": "B"},
                                          "logprobs": probs}]},
                {"id": "up", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ]  # fmt: skip
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        choice = {"index": 0, "message": {"role": "assistant", "content": "B"},
                  "finish_reason": "stop", "logprobs": probs}  # fmt: skip
        usage = {"prompt_tokens": 3, "completion_tokens": 1}
        return httpx.Response(200, json={"id": "up", "choices": [choice], "usage": usage})

    return handle


VALUES = [-0.125, -0.5, -0.0625]
ONE_MODEL = TableRouter({}, [0.9, 0.1, 0.1])  # the set is alpha-small alone


@pytest.mark.asyncio
@pytest.mark.parametrize("setting", [True, False])
@pytest.mark.parametrize("client", [None, True, False])
async def test_the_gateway_asks_by_the_backend_setting_and_answers_by_the_client(
    setting, client
):
    seen: list[dict] = []
    handlers = {m: logprob_upstream(VALUES, seen) for m in ("alpha-small", "beta-medium")}
    handlers["gamma-large"] = answering("unused")
    extra = {} if client is None else {"logprobs": client}
    async with serving(handlers, ONE_MODEL, backend_defaults={"logprobs": setting}) as (
        http,
        gateway,
    ):
        answer = (await http.post("/v1/chat/completions", json=chat("q", **extra))).json()
        call = await gateway.backends["alpha-small"].complete(chat("q", **extra))
    asked = setting if client is None else client
    assert [body.get("logprobs", False) for body in seen] == [asked, asked]
    returned = answer["choices"][0]["logprobs"]
    if client:
        assert [item["logprob"] for item in returned["content"]] == VALUES
    else:
        assert returned is None  # the client did not ask: none, even when the gateway did
    # what the stop rule reads: the values whenever the upstream was asked
    assert call.token_logprobs == (VALUES if asked else None)


@pytest.mark.asyncio
@pytest.mark.parametrize("client", [None, True])
async def test_a_relayed_stream_carries_logprobs_only_when_the_client_asked(client):
    seen: list[dict] = []
    handlers = {m: logprob_upstream(VALUES, seen) for m in ("alpha-small", "beta-medium")}
    handlers["gamma-large"] = answering("unused")
    extra = {"stream": True} if client is None else {"stream": True, "logprobs": client}
    async with serving(handlers, ONE_MODEL, backend_defaults={"logprobs": True}) as (http, _):
        response = await http.post("/v1/chat/completions", json=chat("q", **extra))
    assert [body.get("logprobs") for body in seen] == [client]  # a stream is not asked
    text, values = streamed_logprobs(response)
    assert text == "B" and values == (VALUES if client else None)
