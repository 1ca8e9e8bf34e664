"""One request's routing decision, and the answer a way of answering makes of it.

:class:`Decision` is what every step after scoring reads: the route, the query and
upstream body, the router's scores, the calibrated set, the deadline and the ids. The
ways of answering (:mod:`racer.serve.answering`) and the shared services (fan-out,
records, streaming) all take it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from racer.serve.backends import BackendCall
from racer.serve.route import Route

# Requests whose answers cannot be voted on: the best-in-set member's message is returned.
WHOLE_MESSAGE_FIELDS = ("tools", "functions", "tool_choice", "function_call", "response_format")


@dataclass
class Decision:
    """The routing part of one request, shared by the plain and the streaming answers.

    Attributes
    ----------
    route : Route
        The route the request named (kept even if the route is reloaded meanwhile).
    query : str
        The text the router scored.
    body : dict
        The request as sent upstream.
    scores : numpy.ndarray
        The router's score of each of the route's models.
    invoked : list of str
        The models called, best-scored first (the calibrated set, or what a policy called).
    started, deadline : float
        ``time.perf_counter`` values: when the request arrived, when it must be answered.
    owner : str, optional
        The fingerprint of the key that asked.
    column_0 : bool
        The abstain flag or decision of the calibration (False in mode "off").
    stream : bool
        Whether the answer is sent as server-sent events.
    id, created : str, int
        The completion's id and Unix time.
    completion : dict
        How the calls ended (completion rule and reason), reported in ``racer``.
    """

    route: Route
    query: str
    body: dict[str, Any]
    scores: np.ndarray
    invoked: list[str]
    started: float
    deadline: float
    owner: str | None = None
    column_0: bool = False
    stream: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    completion: dict[str, Any] = field(default_factory=dict)

    def score_of(self, model: str) -> float:
        """The router's score of ``model``."""
        return float(self.scores[self.route.model_names.index(model)])

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.deadline - time.perf_counter()

    @property
    def needs_whole_message(self) -> bool:
        """Whether the answer must be one member's message as is (tools, structured output)."""
        return any(key in self.body for key in WHOLE_MESSAGE_FIELDS)


@dataclass(frozen=True)
class Answer:
    """What a routed request answers: the assistant message and the ``racer`` object."""

    message: dict[str, Any]
    finish_reason: str
    racer: dict[str, Any]


def message_of(call: BackendCall) -> dict[str, Any]:
    """The assistant message to return for ``call`` (the upstream's own, when it has one)."""
    if call.message is not None:
        return {"role": "assistant", **call.message}
    return {"role": "assistant", "content": call.text or ""}
