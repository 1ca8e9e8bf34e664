"""Scoring the queries of concurrent requests together: one router call, one thread hop.

Scoring in a worker thread keeps a long prompt from stalling the event loop, but one
thread hop per request costs CPU that, under load, the process no longer has. The
batcher scores each route's waiting queries in one ``predict_proba`` call in the
worker thread: a request that arrives while no batch of its route is being scored is
scored at once, alone (it never waits for a batch to fill); the requests that arrive
meanwhile wait for that batch to finish and are then scored together in the next one.
Under light load every request is scored alone as before; under heavy load the hops
per request fall with the batch size.

How a batch is scored is the route's ``batch_scoring``:

- ``"one_call"`` (default): one ``predict_proba`` call for the whole batch, the
  cheapest (a TF-IDF + logistic router: about 0.5 ms of CPU a query in a batch of 16
  against 2.2 ms alone). The sets are computed row by row, but a router's matrix
  products may round differently for one row and for many (BLAS kernels): scores
  can differ from a lone query's in the last bits (measured: 1e-16 for the linear,
  MLP and cluster routers, 1.5e-7 for kNN; exact for the prior router), as the
  calibration scores, computed in batches, already did.
- ``"per_query"``: one call per query, still one thread hop per batch: every query
  gets bit for bit the scores and set it gets alone.

A batch whose scoring fails is scored again one query at a time, so that one query
the router cannot score fails only its own request. A query longer than
:data:`LONG_QUERY_CHARS` is scored alone in its own thread, beside the batches, so that
one huge prompt does not hold up the requests that arrive while it is scored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from racer.serve.route import Route

Scored = tuple["np.ndarray", list[str], bool]
LONG_QUERY_CHARS = 16_384


@dataclass
class _Queue:
    route: Route
    waiting: list[tuple[str, str | None, asyncio.Future[Scored]]] = field(default_factory=list)
    busy: bool = False


class ScoringBatcher:
    """Per-route batches of the queries waiting to be scored.

    Parameters
    ----------
    max_batch : int, default 64
        The most queries scored in one call.

    Examples
    --------
    In a coroutine: ``scores, invoked, column_0 = await batcher.decision(route, query)``.
    """

    def __init__(self, max_batch: int = 64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
        self.max_batch = max_batch
        self.batch_sizes: list[int] = []  # of the last batches scored (for tests)
        self._queues: dict[int, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def decision(self, route: Route, query: str, group: str | None = None) -> Scored:
        """The route's scores, set and column 0 for ``query`` of ``group`` (as
        ``route.decision``: the group picks the certificate of a per-group route)."""
        if len(query) > LONG_QUERY_CHARS:
            return (await asyncio.to_thread(_score, route, [(query, group)]))[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scored] = loop.create_future()
        queue = self._queues.get(id(route))
        if queue is None or queue.route is not route:
            queue = self._queues[id(route)] = _Queue(route)
        queue.waiting.append((query, group, future))
        if not queue.busy:  # a task, so that a cancelled request cannot strand the others
            queue.busy = True
            task = loop.create_task(self._drain(queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, queue: _Queue) -> None:
        try:
            while queue.waiting:
                await self._score_next(queue)
        finally:
            queue.busy = False
            if self._queues.get(id(queue.route)) is queue:
                del self._queues[id(queue.route)]

    async def _score_next(self, queue: _Queue) -> None:
        batch = queue.waiting[: self.max_batch]
        del queue.waiting[: self.max_batch]
        self.batch_sizes = [*self.batch_sizes[-99:], len(batch)]
        queries = [(query, group) for query, group, _ in batch]
        try:
            results = await asyncio.to_thread(_score, queue.route, queries)
        except Exception:  # score one by one: only the query that fails fails
            results = await asyncio.to_thread(_score_each, queue.route, queries)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():  # the request was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _score(route: Route, queries: list[tuple[str, str | None]]) -> list[Any]:
    if route.config.batch_scoring == "per_query" and len(queries) > 1:
        return [result for query in queries for result in _score(route, [query])]
    scores, sets, column_0 = route.decisions(
        [query for query, _ in queries], [group for _, group in queries]
    )
    return [(scores[i], sets[i], bool(column_0[i])) for i in range(len(queries))]


def _score_each(route: Route, queries: list[tuple[str, str | None]]) -> list[Any]:
    results: list[Any] = []
    for query in queries:
        try:
            results.extend(_score(route, [query]))
        except Exception as error:
            results.append(error)
    return results
