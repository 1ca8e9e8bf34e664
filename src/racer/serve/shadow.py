"""Shadow routes: a candidate artifact decides on live traffic without serving.

A route with a ``shadow`` (:class:`~racer.serve.config.ShadowConfig`) hands each of
its decisions to :meth:`ShadowDecisions.observe` once answered: in the background, off
the request's path, the shadow scores the same query and forms its calibrated set. It
calls no backend. Its decision is logged through the decision log's public API under
the shadow's route name, with id ``ID+shadow`` (``ID`` the served decision's), its
set in ``invoked``, ``chosen`` empty and no cost; :mod:`racer.serve.shadow_report`
pairs them up and compares. Shadow decisions are written after the answer, not
before it: one in flight when the process is killed is lost (the served one is not).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from racer.serve.decision import Decision
from racer.serve.decision_log import DecisionLog, DecisionRecord
from racer.serve.route import Route

logger = logging.getLogger("racer.serve")
SHADOW_SUFFIX = "+shadow"


def shadow_id(decision_id: str) -> str:
    """The id the shadow decision of served decision ``decision_id`` is logged under."""
    return decision_id + SHADOW_SUFFIX


def shadow_record(shadow: Route, decision: Decision) -> DecisionRecord:
    """The shadow's decision on ``decision``'s query (it scores; it calls nothing)."""
    started = time.perf_counter()
    scores, invoked, column_0 = shadow.decision(decision.query, decision.group)
    return DecisionRecord(
        id=shadow_id(decision.id),
        created=time.time(),
        route=shadow.name,
        query=decision.query,
        invoked=invoked,
        scores={m: float(s) for m, s in zip(shadow.model_names, scores, strict=True)},
        threshold=shadow.threshold_of(decision.group),
        abstained=not invoked,
        chosen=None,
        backends={},
        cost_usd=None,
        latency_ms=(time.perf_counter() - started) * 1000,
        owner=decision.owner,
        mode=shadow.mode,
        abstain_flag=column_0,
    )


class ShadowDecisions:
    """Lets each route's shadow decide on the route's requests, in the background.

    Parameters
    ----------
    decision_log : DecisionLog
        Where the shadow decisions are written.
    """

    def __init__(self, decision_log: DecisionLog):
        self.decision_log = decision_log
        self.pending: set[asyncio.Task[Any]] = set()

    def observe(self, decision: Decision) -> None:
        """Let ``decision``'s route's shadow (if it has one) decide on the same query."""
        shadow = decision.route.shadow
        if shadow is None:
            return
        task = asyncio.ensure_future(self.decide(shadow, decision))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def decide(self, shadow: Route, decision: Decision) -> None:
        """Score, form the shadow's set and log it; a failure is logged, never raised."""
        try:
            record = await asyncio.to_thread(shadow_record, shadow, decision)
            await self.decision_log.record(record)
        except Exception:  # a broken candidate must never touch the served traffic
            logger.exception("shadow route %r could not decide", shadow.name)

    async def drain(self) -> None:
        """Wait for the shadow decisions under way (at shutdown, in tests)."""
        while self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)
