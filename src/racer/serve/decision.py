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
    group : str, optional
        The request's group (:meth:`racer.serve.route.Route.group_of`).
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
    group: str | None = None
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
    """What a routed request answers: the assistant message and the ``racer`` object.

    Attributes
    ----------
    message : dict
        The assistant message of the first choice.
    finish_reason : str
        Its ``finish_reason``.
    racer : dict
        The decision's ``racer`` object (logged).
    choices : tuple of dict
        Every choice as OpenAI sends it (``index``, ``message``, ``finish_reason``,
        ``logprobs``): the answering upstream's own choices (``n`` of them when the
        request asked for ``n``). Empty: the one ``message`` is the only choice.
    system_fingerprint : str, optional
        The answering upstream's ``system_fingerprint``.
    """

    message: dict[str, Any]
    finish_reason: str
    racer: dict[str, Any]
    choices: tuple[dict[str, Any], ...] = ()
    system_fingerprint: str | None = None

    def all_choices(self) -> list[dict[str, Any]]:
        """Every choice of the answer, in ``index`` order."""
        if self.choices:
            return list(self.choices)
        return [single_choice(self.message, self.finish_reason)]


def single_choice(message: dict[str, Any], finish_reason: str, index: int = 0) -> dict[str, Any]:
    """One OpenAI choice holding ``message`` (no log probabilities)."""
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None}


def message_of(call: BackendCall) -> dict[str, Any]:
    """The assistant message to return for ``call`` (the upstream's own, when it has one)."""
    if call.message is not None:
        return {"role": "assistant", **call.message}
    return {"role": "assistant", "content": call.text or ""}


def upstream_choices(call: BackendCall) -> tuple[dict[str, Any], ...]:
    """Every choice ``call``'s upstream answered (empty when it sent no usable list).

    Each keeps the upstream's fields (``logprobs`` included, unless the gateway asked
    for them and the client did not: :attr:`BackendCall.logprobs_added`); its message
    gets the ``assistant`` role and a missing ``finish_reason`` becomes ``"stop"``.
    """
    choices = (call.upstream or {}).get("choices")
    if not isinstance(choices, list) or not all(
        isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices
    ):
        return ()
    return tuple(
        {
            **choice,
            "index": choice.get("index", position),
            "message": {"role": "assistant", **choice["message"]},
            "finish_reason": choice.get("finish_reason") or "stop",
            "logprobs": None if call.logprobs_added else choice.get("logprobs"),
        }
        for position, choice in enumerate(choices)
    )


def answer_of(call: BackendCall, racer: dict[str, Any]) -> Answer:
    """The answer ``call`` makes: its message, every choice, its ``system_fingerprint``."""
    fingerprint = (call.upstream or {}).get("system_fingerprint")
    return Answer(
        message_of(call),
        call.finish_reason or "stop",
        racer,
        upstream_choices(call),
        fingerprint if isinstance(fingerprint, str) else None,
    )
