"""Concurrent requests are scored together: exactly the decisions they get alone, a lone
request at once, and a query the router cannot score fails only its own request."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings

import numpy as np
import pytest
from serve_fakes import MODELS, TableRouter

from racer.estimator import RACER
from racer.routers import KNNRouter, LogisticRouter, PriorRouter, TfidfEmbedder
from racer.serve.config import RouteConfig
from racer.serve.monitor import RiskMonitor
from racer.serve.route import Route
from racer.serve.scoring_batcher import LONG_QUERY_CHARS, ScoringBatcher

WORDS = ("algebra", "poem", "history", "code", "physics", "recipe", "law", "chess")


@pytest.fixture(scope="module")
def fitted() -> dict:
    """Routers fitted on 240 synthetic questions, with their calibrations at alpha 0.1."""
    rng = np.random.default_rng(1)
    queries = [" ".join(rng.choice(WORDS, size=5)) + f" #{i}" for i in range(240)]
    topic = np.array([WORDS.index(q.split()[0]) for q in queries])
    labels = rng.random((240, 3)) < np.stack([topic < 3, topic % 2 == 0, topic > 4], 1) * 0.6 + 0.3
    routers = {}
    small = {"n_components": 16, "max_features": 2000, "progress": False}
    for name, router in {
        "prior": PriorRouter(),
        "logistic": LogisticRouter(C=1.0, embedder=TfidfEmbedder(**small)),
        "knn": KNNRouter(embedder=TfidfEmbedder(**small)),
    }.items():
        router.fit(queries[:120], labels[:120], model_names=list(MODELS))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the prior router flags every query
            racer = RACER(alpha=0.1, delta=0.1).fit(
                router.predict_proba(queries[120:]), labels[120:], model_names=list(MODELS)
            )
        routers[name] = (router, racer)
    return routers


@pytest.mark.parametrize(
    ("name", "batch_scoring", "tolerance"),
    [
        ("prior", "one_call", 0.0),  # scores rows independently
        ("logistic", "per_query", 0.0),
        ("knn", "per_query", 0.0),
        ("logistic", "one_call", 1e-15),  # BLAS: the last bits only
    ],
)
def test_batched_decisions_equal_one_by_one_decisions(fitted, name, batch_scoring, tolerance):
    config = RouteConfig(name="racer", artifact="unused", batch_scoring=batch_scoring)
    route = Route(config, *fitted[name], MODELS, RiskMonitor(0.1))
    rng = np.random.default_rng(2)
    queries = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 9)))) for _ in range(24)]
    batcher = ScoringBatcher(max_batch=8)

    async def concurrently():
        return await asyncio.gather(*(batcher.decision(route, q) for q in queries))

    batched = asyncio.run(concurrently())
    assert batcher.batch_sizes == [8, 8, 8]  # 24 concurrent queries, 3 thread hops
    alone = [route.decision(query) for query in queries]
    batched_scores = np.array([scores for scores, _, _ in batched])
    alone_scores = np.array([scores for scores, _, _ in alone])
    if tolerance == 0.0:
        assert np.array_equal(batched_scores, alone_scores)  # bit for bit
    assert np.abs(batched_scores - alone_scores).max() <= tolerance
    assert [b[1:] for b in batched] == [a[1:] for a in alone]  # the same sets and column 0
    assert name == "prior" or len({tuple(s) for _, s, _ in alone}) > 1  # sets do differ


class GatedRouter(TableRouter):
    """Holds the query "slow" until released; refuses to score the query "bad"."""

    def __init__(self):
        super().__init__({}, default=[0.9, 0.6, 0.1])
        self.release = threading.Event()

    def predict_proba(self, queries):
        if "bad" in queries:
            raise ValueError("cannot score this query")
        if any(query.startswith("slow") for query in queries):
            self.release.wait(5)
        return super().predict_proba(queries)


def gated_route() -> tuple[Route, GatedRouter]:
    from serve_fakes import FixedThreshold

    router = GatedRouter()
    config = RouteConfig(name="racer", artifact="unused")
    return Route(config, router, FixedThreshold(0.5), MODELS, RiskMonitor(0.1)), router


def test_a_lone_request_is_scored_at_once_and_later_ones_wait_only_for_the_batch_in_progress():
    route, router = gated_route()
    batcher = ScoringBatcher()

    async def scenario():
        started = time.perf_counter()
        _, alone, _ = await batcher.decision(route, "alone")
        alone_s = time.perf_counter() - started
        slow = asyncio.ensure_future(batcher.decision(route, "slow"))
        await asyncio.sleep(0.05)
        later = [asyncio.ensure_future(batcher.decision(route, f"q{i}")) for i in range(5)]
        await asyncio.sleep(0.05)
        waiting = [task.done() for task in later]
        router.release.set()
        results = await asyncio.gather(slow, *later)
        return alone, alone_s, waiting, results

    alone, alone_s, waiting, results = asyncio.run(scenario())
    assert alone == [MODELS[0], MODELS[1]] and alone_s < 0.5  # no batch window to wait out
    assert waiting == [False] * 5  # they wait for the batch being scored ...
    assert batcher.batch_sizes == [1, 1, 5]  # ... and are then scored together
    assert all(invoked == [MODELS[0], MODELS[1]] for _, invoked, _ in results)


def test_a_query_the_router_cannot_score_fails_only_its_own_request():
    route, router = gated_route()
    router.release.set()
    batcher = ScoringBatcher()

    async def scenario():
        first = asyncio.ensure_future(batcher.decision(route, "slow"))
        rest = [batcher.decision(route, q) for q in ("a", "bad", "b")]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(scenario())
    assert isinstance(results[2], ValueError) and "cannot score" in str(results[2])
    assert [r[1] for i, r in enumerate(results) if i != 2] == [[MODELS[0], MODELS[1]]] * 3


def test_a_huge_prompt_is_scored_beside_the_batches_and_holds_up_no_one():
    route, router = gated_route()
    batcher = ScoringBatcher()

    async def scenario():
        huge = asyncio.ensure_future(batcher.decision(route, "slow" + "x" * LONG_QUERY_CHARS))
        await asyncio.sleep(0.05)
        short = await asyncio.wait_for(batcher.decision(route, "short"), 2.0)
        huge_done = huge.done()
        router.release.set()
        return short, huge_done, await huge

    short, huge_done, huge = asyncio.run(scenario())
    assert not huge_done and short[1] == huge[1] == [MODELS[0], MODELS[1]]
    assert batcher.batch_sizes == [1]  # the short one; the huge one went alone
