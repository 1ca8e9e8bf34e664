"""End to end over real HTTP on loopback: RouterBench replay servers for the 11 models,
the gateway (built from a YAML file and saved artifacts) in front, the official
`openai` client as the caller.

Artifacts: a logistic router fitted on the first 60 % of each RouterBench training
file, RACER calibrated on the other 40 %, served on the test files' prompts. Routes:
``racer-arc`` (ARC-Challenge, alpha = 0.05: sets of 1-3 models, letter votes),
``racer-arc-0.2`` (alpha = 0.2, refusals allowed: some empty sets, i.e. refusals) and ``racer-mbpp``
(MBPP, alpha = 0.2: sets of 0-11 models, best-in-set).
"""

from __future__ import annotations

import asyncio
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import yaml
from replay_gateway import quietly_load

from racer.aggregate import choose_response
from racer.artifact import load_artifact, save_artifact
from racer.data.dataset import RoutingDataset
from racer.estimator import RACER
from racer.refusal import refusal_reason
from racer.routers.embeddings import TfidfEmbedder
from racer.routers.linear import LogisticRouter
from racer.serve.app import app_from_config
from racer.serve.config import DEFAULT_ABSTENTION_MESSAGE, load_config
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.runner import ServerThread

KEY = "e2e-gateway-key"
ADMIN_KEY = "e2e-admin-key"
ROUTES = {  # route: (task, alpha, aggregator)
    "racer-arc": ("arc_challenge", 0.05, "vote"),
    "racer-arc-0.2": ("arc_challenge", 0.2, "vote"),
    "racer-mbpp": ("mbpp", 0.2, "best"),
}


@dataclass
class Served:
    """What a route serves: its test prompts and the sets its artifact gives them."""

    data: RoutingDataset
    scores: np.ndarray
    sets: np.ndarray
    aggregator: str
    threshold: float

    def expected_set(self, row: int) -> list[str]:
        order = np.argsort(-self.scores[row], kind="stable")
        return [self.data.model_names[k] for k in order if self.sets[row, k]]

    def expected_answer(self, row: int) -> str:
        members = self.expected_set(row)
        if not members:  # a refusal states its reason: the level and the best score
            reason = refusal_reason(
                self.scores[row], self.data.model_names, mode="flag", threshold=self.threshold
            )
            return f"{DEFAULT_ABSTENTION_MESSAGE}: {reason}."
        columns = [self.data.model_names.index(m) for m in members]
        responses = [self.data.responses[row, c] for c in columns]
        chosen = choose_response(responses, self.scores[row, columns], method=self.aggregator)
        return responses[chosen]


@pytest.fixture(scope="module")
def deployment(shared_data, tmp_path_factory):
    """Artifacts on disk and, per route, the sets they give the test prompts."""
    folder = tmp_path_factory.mktemp("deployment")
    served, routers = {}, {}
    for route, (task, alpha, aggregator) in ROUTES.items():
        train = quietly_load(shared_data / "routerbench" / f"{task}_train.csv")
        cut = int(0.6 * train.n_queries)
        names = list(train.model_names)
        if task not in routers:
            # A small embedding keeps the fit to seconds; routing quality is not tested here.
            embedder = TfidfEmbedder(n_components=32, max_features=4000, progress=False)
            routers[task] = LogisticRouter(C=1.0, embedder=embedder).fit(
                list(train.queries[:cut]), train.labels[:cut], model_names=names
            )
        calibration_scores = routers[task].predict_proba(list(train.queries[cut:]))
        with warnings.catch_warnings():  # one calibration row has an unknown label
            warnings.simplefilter("ignore")
            # refusals allowed and free, so that the refusal path is served end to end
            estimator = RACER(alpha=alpha, delta=0.1, refusals=True, refusal_cost=0.0).fit(
                calibration_scores, train.labels[cut:], model_names=names
            )
        save_artifact(folder / route, routers[task], estimator)
        artifact = load_artifact(folder / route, model_names=names)
        test = quietly_load(shared_data / "routerbench" / f"{task}_test.csv")
        queries = list(test.queries)
        sets = artifact.predict_sets(queries)
        served[route] = Served(
            test, artifact.predict_proba(queries), sets, aggregator, artifact.racer.threshold_
        )
    return folder, served


@pytest.fixture(scope="module")
def replays(shared_data):
    """One replay server per RouterBench model, over both test files."""
    book = ReplayBook(
        quietly_load(
            [
                shared_data / "routerbench" / "arc_challenge_test.csv",
                shared_data / "routerbench" / "mbpp_test.csv",
            ]
        )
    )
    with ServerThread([create_replay_app(book, m) for m in book.model_names]) as servers:
        yield dict(zip(book.model_names, servers.urls, strict=True)), book


def start_gateway(folder: Path, backend_urls: dict[str, str], routes: list[str], extra: dict):
    """A gateway from a YAML file, on a free loopback port (a context manager)."""
    config = {
        "backend_defaults": {"timeout_s": 10, "retries": 1, "backoff_s": 0.01},
        "backends": [
            {
                "name": m,
                "base_url": f"{url}/v1",
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
                **extra.get(m, {}),
            }
            for m, url in backend_urls.items()
        ],
        "routes": [{"name": r, "artifact": r, "aggregator": ROUTES[r][2]} for r in routes],
        "auth": {"api_keys": [KEY], "admin_keys": [ADMIN_KEY]},
        "decision_log": {"url": f"sqlite:///decisions-{'-'.join(routes)}.sqlite3"},
    }
    path = folder / f"gateway-{len(extra)}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return ServerThread([app_from_config(load_config(path))])


@pytest.fixture(scope="module")
def gateway(deployment, replays):
    folder, _ = deployment
    with start_gateway(folder, replays[0], list(ROUTES), {}) as servers:
        yield servers.urls[0]


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)


def sample_rows(served: Served, per_size: int = 3) -> list[int]:
    """A few prompts of every set size the route produces."""
    sizes = served.sets.sum(axis=1)
    return [int(row) for s in np.unique(sizes) for row in np.flatnonzero(sizes == s)[:per_size]]


def test_answers_are_the_recorded_responses_or_their_aggregation(gateway, deployment):
    client = client_for(gateway)
    seen_sizes = Counter()
    for route, served in deployment[1].items():
        for row in sample_rows(served):
            answer = client.chat.completions.create(
                model=route, messages=[{"role": "user", "content": served.data.queries[row]}]
            )
            racer = answer.model_extra["racer"]
            assert racer["set"] == served.expected_set(row), (route, row)
            assert answer.choices[0].message.content == served.expected_answer(row)
            assert racer["abstained"] == (not racer["set"])
            assert set(racer["backends"]) == set(racer["set"])
            # members whose answers could not change the aggregate may be left out
            assert all(b["ok"] or b["abandoned"] for b in racer["backends"].values())
            assert not racer["set"] or racer["backends"][racer["chosen"]]["ok"]
            seen_sizes[len(racer["set"])] += 1
    assert seen_sizes[0] >= 1, "no abstention was exercised"
    assert max(seen_sizes) >= 3, "no large set was exercised"


def test_streaming_gives_the_same_answers_through_the_openai_client(gateway, deployment):
    client = client_for(gateway)
    for route in ("racer-arc-0.2", "racer-arc"):
        served = deployment[1][route]
        sizes = served.sets.sum(axis=1)
        for size in np.unique(sizes):
            row = int(np.flatnonzero(sizes == size)[0])
            chunks = list(
                client.chat.completions.create(
                    model=route,
                    messages=[{"role": "user", "content": served.data.queries[row]}],
                    stream=True,
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == served.expected_answer(row), (route, size)
            assert chunks[-1].model_extra["racer"]["set"] == served.expected_set(row)


def test_models_feedback_and_metrics_over_http(gateway, deployment):
    client = client_for(gateway)
    assert {m.id for m in client.models.list()} == set(ROUTES)
    served = deployment[1]["racer-arc"]
    headers = {"Authorization": f"Bearer {KEY}"}
    for row in range(5):
        answer = client.chat.completions.create(
            model="racer-arc", messages=[{"role": "user", "content": served.data.queries[row]}]
        )
        labels = dict(zip(served.data.model_names, served.data.labels[row], strict=True))
        verdict = {m: bool(v == 1) for m, v in labels.items() if not np.isnan(v)}
        response = httpx.post(
            f"{gateway}/v1/feedback",
            json={"id": answer.id, "models_correct": verdict},
            headers=headers,
        )
        assert response.status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(f"{gateway}/healthz").json() == {"status": "ok"}
    health = httpx.get(f"{gateway}/healthz", headers=admin).json()
    assert health["routes"]["racer-arc"]["monitor"]["n_feedback"] == 5
    metrics = httpx.get(f"{gateway}/metrics", headers=admin).text
    assert 'racer_monitor_feedback{route="racer-arc"} 5.0' in metrics
    assert 'racer_requests_total{outcome="answered",route="racer-arc"}' in metrics


def test_a_killed_a_failing_and_a_hanging_backend_do_not_break_the_others(deployment, replays):
    folder, served_by_route = deployment
    healthy_urls, book = replays
    served = served_by_route["racer-mbpp"]
    failing, hanging, killed = "claude-v1", "claude-v2", "mistralai/mixtral-8x7b-chat"
    faulty = [
        create_replay_app(book, failing, failure_rate=1.0),
        create_replay_app(book, hanging, latency_s=30.0),
        create_replay_app(book, killed),
    ]
    # The hanging server's requests are cancelled at shutdown: keep that out of the log.
    with ServerThread(faulty, log_level="critical") as fault_servers:
        urls = {
            **healthy_urls,
            **dict(zip((failing, hanging, killed), fault_servers.urls, strict=True)),
        }
        extra = {hanging: {"timeout_s": 1.0}}
        with start_gateway(folder, urls, ["racer-mbpp"], extra) as gateway_servers:

            async def ask_all(rows: list[int]):
                client = openai.AsyncOpenAI(
                    base_url=f"{gateway_servers.urls[0]}/v1",
                    api_key=KEY,
                    max_retries=0,
                    timeout=30,
                )

                async def ask(row: int):
                    answer = await client.chat.completions.create(
                        model="racer-mbpp",
                        messages=[{"role": "user", "content": served.data.queries[row]}],
                    )
                    return row, answer

                async with client:
                    return await asyncio.gather(*(ask(row) for row in rows))

            rows = [r for r in range(served.data.n_queries) if served.sets[r].any()][:16]
            before = asyncio.run(ask_all(rows[:8]))
            fault_servers.stop_one(2)
            after = asyncio.run(ask_all(rows[8:]))

    broken = {failing: "HTTP 500", hanging: "timed out", killed: "connection failed"}
    for phase, results in (("before", before), ("after", after)):
        dead = {failing, hanging} | ({killed} if phase == "after" else set())
        for row, answer in results:
            members = set(served.expected_set(row))
            assert members - dead, "every sampled set keeps a healthy model"
            racer = answer.model_extra["racer"]
            assert racer["chosen"] in members - dead
            column = served.data.model_names.index(racer["chosen"])
            assert answer.choices[0].message.content == served.data.responses[row, column]
            for member in members:
                report = racer["backends"][member]
                # A member may also be left out once the answer is decided, or skipped
                # while its circuit breaker is open.
                skipped = report["abandoned"] or "circuit open" in (report["error"] or "")
                if member in dead:
                    assert skipped or broken[member] in report["error"], (phase, member, report)
                else:
                    assert report["ok"] or report["abandoned"], (phase, member, report)
    exercised = [set(served.expected_set(row)) for row, _ in before + after]
    assert all(any(m in s for s in exercised) for m in broken), "every fault was exercised"
