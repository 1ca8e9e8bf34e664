"""What every way of answering is: the protocol, and the shared services it may call.

A way of answering (a strategy) takes a routed request's :class:`~racer.serve.decision.Decision`
and returns its answer, once: a finished :class:`~racer.serve.decision.Answer` or, for a
streamed request it can pass through, a :class:`~racer.serve.streaming.Relay`. Whether it
is sent as JSON or as server-sent events is the gateway's business, not the strategy's.
It logs its decision through :class:`Services`' ``records`` (exactly once) and raises
:class:`~racer.serve.errors.GatewayError` when it cannot answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from racer.serve.backends import Backend
from racer.serve.decision import Answer, Decision
from racer.serve.records import DecisionRecorder
from racer.serve.streaming import Relay


@dataclass(frozen=True)
class Services:
    """The gateway's shared services a strategy calls.

    Attributes
    ----------
    backends : mapping of str to Backend
        The backend clients by name (see :mod:`racer.serve.fanout` for calling them).
    records : DecisionRecorder
        Logs, counts and audits a decision, and turns it into its answer or error.
    keep_running : callable
        Takes a task that outlives the request (an abandoned call), so that the
        gateway awaits it at shutdown.
    """

    backends: Mapping[str, Backend]
    records: DecisionRecorder
    keep_running: Callable[[asyncio.Task[Any]], None]


class AnsweringStrategy(Protocol):
    """One way of answering a routed request."""

    async def answer(self, decision: Decision) -> Answer | Relay:
        """Answer ``decision`` (a :class:`Relay` only when ``decision.stream``).

        Raises
        ------
        GatewayError
            When no call answered (429, 502 or 504), after logging the failure.
        """
        ...
