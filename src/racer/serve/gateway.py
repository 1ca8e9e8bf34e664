"""One chat completion, start to finish: score, form the calibrated set, fan out, aggregate.

The HTTP layer (:mod:`racer.serve.app`) only parses and answers; everything a request
does happens here, in one order:

    query -> router scores -> calibrated set -> (empty: abstain)
          -> concurrent backend calls -> aggregation -> response + decision log + metrics
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from racer.aggregate import choose_response, extract_answer
from racer.losses import abstention_mode, served_losses
from racer.serve.audit import Auditor, artifact_id_of, recalibration_hint
from racer.serve.backends import Backend, BackendCall, UpstreamError, UpstreamStream
from racer.serve.config import ConfigError, GatewayConfig, RouteConfig
from racer.serve.decision_log import DecisionLog, DecisionRecord, FeedbackRecord
from racer.serve.metrics import GatewayMetrics
from racer.serve.monitor import RiskMonitor
from racer.serve.policy_route import (
    ServedPolicy,
    answer_with_policy,
    policy_feedback_loss,
    served_policy,
)
from racer.serve.schemas import (
    ChatCompletionRequest,
    FeedbackRequest,
    chunk_body,
    completion_body,
    error_event,
    message_events,
    sse,
)

logger = logging.getLogger("racer.serve")


class GatewayError(Exception):
    """A request that cannot be answered; ``status`` is the HTTP status to return."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code
        self.headers = headers


class ScoringRouter(Protocol):
    """What the gateway needs of a base router."""

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray: ...


class SetPredictor(Protocol):
    """What the gateway needs of a calibrated RACER."""

    alpha: float
    delta: float
    threshold_: float

    def predict(
        self, scores: np.ndarray, *, include_abstain: bool = False, abstain_scores: Any = None
    ) -> np.ndarray: ...


class AbstainScorer(Protocol):
    """What the gateway needs of a learned abstention head (optional)."""

    def abstain_score(self, queries: Sequence[str]) -> np.ndarray: ...


@dataclass
class Route:
    """A servable route: a base router, its calibration, and how to answer.

    Parameters
    ----------
    config : RouteConfig
        The route's configuration (name, aggregator, abstention message, fallbacks).
    router : ScoringRouter
        Any object with ``predict_proba(queries) -> (n, M)``.
    calibration : SetPredictor
        The fitted RACER estimator of that router.
    model_names : tuple of str
        The M candidate models, in the router's column order (= backend names).
    monitor : RiskMonitor
        The anytime-valid check of this route's realised misrouting rate.
    abstention : AbstainScorer, optional
        The learned abstain score, when the calibration uses one.
    artifact_id : str, optional
        Which artifact serves the route (logged with each decision).
    """

    config: RouteConfig
    router: ScoringRouter
    calibration: SetPredictor
    model_names: tuple[str, ...]
    monitor: RiskMonitor
    abstention: AbstainScorer | None = None
    artifact_id: str | None = None  # hook (issue 12): the decision log records it
    policy: ServedPolicy | None = None  # hook (issue 9): a certified policy answers

    @property
    def name(self) -> str:
        """The ``model`` value clients send."""
        return self.config.name

    @property
    def mode(self) -> str:
        """The abstention mode served: the calibration's ("flag", "strict" or "off")."""
        return abstention_mode(getattr(self.calibration, "abstention_mode_", False))

    def decide(self, query: str) -> tuple[np.ndarray, list[str]]:
        """The router's scores for ``query`` and the set to call, best-scored first."""
        scores, invoked, _ = self.decision(query)
        return scores, invoked

    def decision(self, query: str) -> tuple[np.ndarray, list[str], bool]:
        """Scores, the set to call (best-scored first) and column 0 of the decision.

        Column 0 is the abstain flag (mode "flag"), the abstain decision (mode
        "strict": then no model is called) or False (mode "off").
        """
        scores = np.asarray(self.router.predict_proba([query]), dtype=float).reshape(1, -1)
        abstain = None if self.abstention is None else self.abstention.abstain_score([query])
        decision = np.asarray(
            self.calibration.predict(scores, include_abstain=True, abstain_scores=abstain),
            dtype=bool,
        )[0]
        column_0, invoked = bool(decision[0]), decision[1:]
        if self.mode == "strict" and column_0:
            invoked = np.zeros_like(invoked)
        order = np.argsort(-scores[0], kind="stable")
        return scores[0], [self.model_names[k] for k in order if invoked[k]], column_0

    def describe(self) -> dict[str, Any]:
        """The route's calibration and monitor, for /healthz."""
        return {
            "models": list(self.model_names),
            "alpha": float(self.calibration.alpha),
            "delta": float(self.calibration.delta),
            "threshold": float(self.calibration.threshold_),
            "abstention": self.mode,
            "aggregator": self.config.aggregator,
            "monitor": self.monitor.state(),
            "artifact_id": self.artifact_id,  # hook (issue 12)
            "audit_rate": self.config.audit_rate,  # hook (issue 12)
            "policy": None if self.policy is None else self.policy.certificate,  # issue 9
        }


def load_route(config: RouteConfig, monitor_delta: float) -> Route:
    """Load a route's artifact (base router + calibrated RACER) from disk."""
    from racer.artifact import load_artifact

    try:
        artifact = load_artifact(config.artifact)
    except (OSError, ValueError) as error:
        raise ConfigError(f"route {config.name!r}: cannot load artifact: {error}") from error
    served = abstention_mode(getattr(artifact.racer, "abstention_mode_", False))
    if config.abstention is not None and config.abstention != served:
        raise ConfigError(
            f"route {config.name!r}: the artifact {config.artifact} was calibrated for "
            f"abstention {served!r}, but the route asks for abstention {config.abstention!r}; "
            f"its guarantee holds only for the mode it was calibrated for. Recalibrate with "
            f"RACER(abstention={config.abstention!r}) or set abstention: {served} in the route."
        )
    policy = None
    if artifact.policy is not None:  # hook (issue 9): the certified policy answers
        try:
            policy = served_policy(artifact.policy, tuple(artifact.model_names))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"route {config.name!r}: the artifact's certified policy cannot be served: {error}"
            ) from error
    return Route(
        config,
        artifact.router,
        artifact.racer,
        tuple(artifact.model_names),
        # a policy route promises its certificate's alpha on its own objective
        RiskMonitor(artifact.racer.alpha if policy is None else policy.alpha, monitor_delta),
        artifact.abstention,
        artifact_id_of(artifact.metadata),  # hook (issue 12)
        policy,
    )


@dataclass
class _Decision:
    """The routing part of one request, shared by the plain and the streaming answers."""

    route: Route
    query: str
    body: dict[str, Any]
    scores: np.ndarray
    invoked: list[str]
    started: float
    deadline: float
    owner: str | None = None
    column_0: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    completion: dict[str, Any] = field(default_factory=dict)

    def score_of(self, model: str) -> float:
        return float(self.scores[self.route.model_names.index(model)])

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    @property
    def needs_whole_message(self) -> bool:
        """Whether the answer must be one member's message as is (tools, structured output)."""
        return any(key in self.body for key in _WHOLE_MESSAGE_FIELDS)


# Requests whose answers cannot be voted on: the best-in-set member's message is returned.
_WHOLE_MESSAGE_FIELDS = ("tools", "functions", "tool_choice", "function_call", "response_format")


@dataclass(frozen=True)
class Answer:
    """What a routed request answers: the assistant message and the ``racer`` object."""

    message: dict[str, Any]
    finish_reason: str
    racer: dict[str, Any]


class Gateway:
    """Routes chat completions through calibrated sets of backends.

    Parameters
    ----------
    config : GatewayConfig
        The validated configuration.
    routes : mapping of str to Route
        The servable routes by name.
    backends : mapping of str to Backend
        The backend clients by name; every model of every route must have one.
    decision_log : DecisionLog
        Where decisions and feedback are written.

    Notes
    -----
    How a multi-model set's answers become one (the rule, documented in the README):
    when the request carries ``tools``, ``functions``, ``tool_choice``,
    ``function_call`` or ``response_format``, or any member answered with a tool call,
    the answer is the highest-scored answering member's message, unchanged (tool
    calls, ``finish_reason`` and all): tool calls are never voted on. Otherwise the
    route's aggregator picks among the text answers. A one-model set's message always
    passes through unchanged.
    """

    def __init__(
        self,
        config: GatewayConfig,
        routes: Mapping[str, Route],
        backends: Mapping[str, Backend],
        decision_log: DecisionLog,
    ):
        unserved = {
            name: {*route.model_names, *filter(None, [route.config.judge])} - set(backends)
            for name, route in routes.items()
        }
        missing = {name: sorted(models) for name, models in unserved.items() if models}
        if missing:
            raise ConfigError(
                f"Every model of a route needs a backend; missing: {missing}. Add them under "
                "`backends:` with the names the artifact uses."
            )
        self.config = config
        self.routes = dict(routes)
        self.backends = dict(backends)
        self.decision_log = decision_log
        self.metrics = GatewayMetrics(max(len(r.model_names) for r in self.routes.values()))
        self._background: set[asyncio.Task[Any]] = set()
        self._feedback_seen = 0
        self._sync_lock = threading.Lock()
        self.sync_monitors()
        self.audit = Auditor(self.backends, decision_log)  # hook (issue 12)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Gateway:
        """Build the gateway a configuration describes: load artifacts, open clients and log."""
        routes = {r.name: load_route(r, config.monitor.delta) for r in config.routes}
        return cls(
            config,
            routes,
            {b.name: Backend(b) for b in config.backends},
            DecisionLog.from_config(config.decision_log),
        )

    def sync_monitors(self) -> None:
        """Feed the monitors the feedback stored since the last sync, in stored order.

        Every worker process (and every restart) applies the same losses in the same
        order, so all of them hold the same monitor state.
        """
        with self._sync_lock:  # one sync at a time: each stored loss is applied once
            rows = self.decision_log.feedback_losses(after=self._feedback_seen)
            for seq, route_name, loss in rows:
                self._feedback_seen = max(self._feedback_seen, seq)
                if route_name in self.routes:
                    self.routes[route_name].monitor.update(loss)
            for route in self.routes.values():
                self.metrics.set_monitor(route.name, route.monitor.state())

    async def aclose(self) -> None:
        """Stop abandoned calls, close the backend clients and the decision log."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.audit.drain()  # hook (issue 12): finish audited requests first
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))
        self.decision_log.close()

    def route(self, name: str) -> Route:
        """The route clients call ``name``."""
        if name not in self.routes:
            raise GatewayError(
                404,
                f"The model {truncate(name)!r} does not exist; this gateway serves "
                f"{sorted(self.routes)}.",
                "invalid_request_error",
                "model_not_found",
            )
        return self.routes[name]

    async def _decide(
        self, request: ChatCompletionRequest, started: float | None, owner: str | None
    ) -> _Decision:
        started = time.perf_counter() if started is None else started
        route = self.route(request.model)
        query = request.query()
        if route.config.score_in_thread:
            scores, invoked, column_0 = await asyncio.to_thread(route.decision, query)
        else:
            scores, invoked, column_0 = route.decision(query)
        deadline = started + route.config.deadline_s
        return _Decision(
            route,
            query,
            request.upstream_body(),
            scores,
            invoked,
            started,
            deadline,
            owner,
            column_0,
        )

    async def _call_set(self, decision: _Decision) -> tuple[list[BackendCall], BackendCall | None]:
        """Call the set concurrently until its answer is final; then fallbacks if none."""
        route = decision.route
        tasks = {
            asyncio.ensure_future(self.backends[m].complete(decision.body)): m
            for m in decision.invoked
        }
        done: dict[str, BackendCall] = {}
        pending = set(tasks)
        reason = "all answered"
        grace_end = None
        while pending:
            timeout = decision.remaining()
            if grace_end is not None:
                timeout = min(timeout, grace_end - time.perf_counter())
            if timeout <= 0:
                reason = "deadline" if decision.remaining() <= 0 else "grace"
                break
            finished, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in finished:
                done[tasks[task]] = task.result()
            if (
                pending
                and route.config.completion == "decided"
                and self._decided(decision, done, [tasks[t] for t in pending])
            ):
                reason = "decided"
                break
            if grace_end is None and route.config.grace_s and any(c.ok for c in done.values()):
                grace_end = time.perf_counter() + route.config.grace_s
        cancel = route.config.cancel_abandoned
        for task in pending:  # abandoned: cancelled (not billed further), or left to finish
            if cancel:
                task.cancel()
                if reason in ("deadline", "grace"):  # missed the route's bound: a failure
                    breaker = self.backends[tasks[task]].breaker  # (a hung member opens it)
                    task.add_done_callback(lambda t, b=breaker: t.cancelled() and b.failure())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        calls = [
            done.get(m)
            or BackendCall(
                m,
                None,
                time.perf_counter() - decision.started,
                0,
                error=f"abandoned ({reason})",
                abandoned=True,
            )
            for m in decision.invoked
        ]
        decision.completion = {
            "rule": route.config.completion,
            "reason": reason,
            "answered": sum(c.ok for c in calls),
            "abandoned": [c.backend for c in calls if c.abandoned],
            "cancelled": [c.backend for c in calls if c.abandoned] if cancel else [],
        }
        chosen = self._choose(decision, calls)
        if chosen is None:
            chosen = await self._fallback(decision, calls)
        return calls, chosen

    def _decided(
        self, decision: _Decision, done: Mapping[str, BackendCall], pending: Sequence[str]
    ) -> bool:
        """Whether no answer of the pending members could change the chosen answer."""
        answered = [c for c in done.values() if c.ok]
        if not answered:
            return False
        best_pending = max(decision.score_of(m) for m in pending)
        best_done = max(decision.score_of(c.backend) for c in answered)
        best_rule = (
            decision.route.config.aggregator == "best"
            or decision.needs_whole_message
            or any(c.has_tool_calls for c in answered)
        )
        if best_rule:
            return best_done > best_pending
        kind = decision.route.config.answer_kind
        weights: dict[str, float] = {}
        top_score: dict[str, float] = {}
        for call in answered:
            answer = extract_answer(call.text, kind)
            if answer is None:
                return False
            score = decision.score_of(call.backend)
            weights[answer] = weights.get(answer, 0.0) + score
            top_score[answer] = max(top_score.get(answer, -np.inf), score)
        ranked = sorted(weights.values(), reverse=True)
        leader = max(weights, key=lambda a: (weights[a], top_score[a]))
        runner_up = ranked[1] if len(ranked) > 1 else 0.0
        pending_weight = sum(decision.score_of(m) for m in pending)
        return weights[leader] > runner_up + pending_weight and top_score[leader] > best_pending

    def _choose(self, decision: _Decision, calls: Sequence[BackendCall]) -> BackendCall | None:
        answered = [c for c in calls if c.ok]
        if not answered:
            return None
        if decision.needs_whole_message or any(c.has_tool_calls for c in answered):
            return max(answered, key=lambda c: decision.score_of(c.backend))
        route = decision.route
        index = choose_response(
            [c.text for c in answered],
            [decision.score_of(c.backend) for c in answered],
            method=route.config.aggregator,
            answer_kind=route.config.answer_kind,
        )
        return None if index is None else answered[index]

    async def _fallback(self, decision: _Decision, calls: list[BackendCall]) -> BackendCall | None:
        """Try the route's fallbacks in order, within the deadline; None when all fail."""
        for fallback in decision.route.config.fallbacks:
            remaining = decision.remaining()
            if remaining <= 0:
                break
            try:
                call = await asyncio.wait_for(
                    self.backends[fallback].complete(decision.body), remaining
                )
            except TimeoutError:
                call = BackendCall(
                    fallback, None, remaining, 1, error="abandoned (deadline)", abandoned=True
                )
            calls.append(call)
            if call.ok:
                return call
        return None

    async def _fail(
        self,
        decision: _Decision,
        calls: Sequence[BackendCall],
        extra: dict[str, Any] | None = None,
    ) -> GatewayError:
        """Log a failed decision and describe the failure (429, 504 or 502)."""
        await self._finish(decision, calls, None, "failed", extra)
        reasons = "; ".join(f"{c.backend}: {c.error}" for c in calls)
        if calls and all(c.status == 429 for c in calls):
            waits = [c.retry_after_s for c in calls if c.retry_after_s is not None]
            return GatewayError(
                429,
                f"Every backend of the routed set is rate-limited: {reasons}",
                "rate_limit_error",
                "rate_limited",
                headers={"Retry-After": str(max(1, math.ceil(min(waits) if waits else 1)))},
            )
        if decision.remaining() <= 0 and any(c.abandoned for c in calls):
            return GatewayError(
                504,
                f"No backend of the routed set answered within deadline_s = "
                f"{decision.route.config.deadline_s:g} s: {reasons}",
                "upstream_error",
                "deadline_exceeded",
            )
        return GatewayError(
            502,
            f"Every backend of the routed set failed: {reasons}",
            "upstream_error",
            "all_backends_failed",
        )

    def _racer_object(
        self, decision: _Decision, calls: Sequence[BackendCall], chosen: str | None
    ) -> dict[str, Any]:
        route = decision.route
        costs = [c.cost_usd for c in calls if c.cost_usd is not None]
        prompt_tokens = sum(c.prompt_tokens or 0 for c in calls)
        completion_tokens = sum(c.completion_tokens or 0 for c in calls)
        return {
            "id": decision.id,
            "route": route.name,
            "set": decision.invoked,
            "scores": {
                m: float(s) for m, s in zip(route.model_names, decision.scores, strict=True)
            },
            "threshold": float(route.calibration.threshold_),
            "alpha": float(route.calibration.alpha),
            "delta": float(route.calibration.delta),
            "abstention": route.mode,
            "abstained": not decision.invoked,
            "abstain_flag": decision.column_0 if route.mode == "flag" else None,
            "chosen": chosen,
            "backends": {c.backend: c.summary() for c in calls},
            "completion": decision.completion,
            "cost_usd": sum(costs) if costs else None,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def _finish(
        self,
        decision: _Decision,
        calls: Sequence[BackendCall],
        chosen: str | None,
        outcome: str,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Log (durably, before the answer leaves) and count a decision; its ``racer``.

        ``extra`` replaces or adds fields of the ``racer`` object (a certified policy's
        report and its cost, judge included) before it is logged.
        """
        racer = {**self._racer_object(decision, calls, chosen), **(extra or {})}
        latency_s = time.perf_counter() - decision.started
        racer["latency_ms"] = round(latency_s * 1000, 3)
        self.metrics.observe_request(decision.route.name, outcome, len(decision.invoked), calls)
        racer["logged"] = await self.decision_log.record(
            DecisionRecord(
                id=decision.id,
                created=time.time(),
                route=decision.route.name,
                query=decision.query,
                invoked=decision.invoked,
                scores=racer["scores"],
                threshold=racer["threshold"],
                abstained=racer["abstained"],
                chosen=chosen,
                backends=racer["backends"],
                cost_usd=racer["cost_usd"],
                latency_ms=latency_s * 1000,
                owner=decision.owner,
                mode=decision.route.mode,
                abstain_flag=decision.column_0,
            )
        )
        self.audit.observe(decision, calls)  # hook (issue 12): audit draw, call probabilities
        return racer

    async def _answer(self, decision: _Decision) -> Answer:
        """The final message and ``racer`` object of a non-pass-through answer."""
        if decision.route.policy is not None:  # a certified answer-level policy
            return await answer_with_policy(self, decision)
        if not decision.invoked:
            racer = await self._finish(decision, [], None, "abstained")
            message = {"role": "assistant", "content": decision.route.config.abstention_message}
            return Answer(message, "stop", racer)
        calls, chosen = await self._call_set(decision)
        if chosen is None:
            raise await self._fail(decision, calls)
        racer = await self._finish(decision, calls, chosen.backend, "answered")
        return Answer(_message_of(chosen), chosen.finish_reason or "stop", racer)

    async def complete(
        self,
        request: ChatCompletionRequest,
        started: float | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Answer a chat completion (``stream`` false).

        Parameters
        ----------
        request : ChatCompletionRequest
            The validated request.
        started : float, optional
            When the request arrived (``time.perf_counter``); the deadline counts from it.
        owner : str, optional
            Who asked (a key fingerprint): only they (or an admin) may post feedback.

        Raises
        ------
        GatewayError
            404 for an unknown route, 429 when every backend was rate-limited, 502 when
            every backend failed, 504 when none answered within the deadline.
        """
        decision = await self._decide(request, started, owner)
        answer = await self._answer(decision)
        return completion_body(
            decision.id,
            decision.created,
            decision.route.name,
            answer.message,
            answer.racer["usage"],
            answer.racer,
            finish_reason=answer.finish_reason,
        )

    async def stream(
        self,
        request: ChatCompletionRequest,
        started: float | None = None,
        owner: str | None = None,
    ) -> AsyncIterator[bytes]:
        """Answer a chat completion as server-sent events (``stream`` true).

        Everything that can fail with an HTTP error happens before this returns, so
        the caller can still send a 4xx / 5xx status instead of a broken stream. A
        one-model set is relayed as the upstream streams it; its first chunk is read
        here, so that an upstream that fails before it (or answers without an event
        stream) fails over like a failed call. A stream that breaks later ends with
        an OpenAI-style error event and no ``[DONE]``.
        """
        decision = await self._decide(request, started, owner)
        if decision.route.policy is None and len(decision.invoked) == 1:
            backend = self.backends[decision.invoked[0]]
            opened = time.perf_counter()
            try:
                upstream = await asyncio.wait_for(
                    backend.open_stream(decision.body), max(decision.remaining(), 0.001)
                )
                first = await self._first_chunk(upstream)
            except (UpstreamError, TimeoutError) as error:
                message = str(error) or f"no answer within deadline_s ({type(error).__name__})"
                failed = BackendCall(
                    backend.name,
                    None,
                    time.perf_counter() - opened,
                    getattr(error, "attempts", 1),
                    error=backend.redact(message),
                    status=getattr(error, "status", None),
                    retry_after_s=getattr(error, "retry_after_s", None),
                )
                calls = [failed]
                chosen = await self._fallback(decision, calls)
                if chosen is None:
                    raise await self._fail(decision, calls) from None
                racer = await self._finish(decision, calls, chosen.backend, "answered")
                answer = Answer(_message_of(chosen), chosen.finish_reason or "stop", racer)
                return self._stream_answer(decision, answer)
            return self._relay(decision, backend, upstream, first)
        answer = await self._answer(decision)
        return self._stream_answer(decision, answer)

    @staticmethod
    async def _first_chunk(upstream: UpstreamStream) -> list[dict[str, Any]]:
        """Read the upstream stream up to its first chunk with choices (or its end)."""
        read: list[dict[str, Any]] = []
        try:
            async for line in upstream.lines():
                chunk = _parse_event(line)
                if chunk is None:
                    continue
                if chunk == "[DONE]":
                    break
                read.append(chunk)
                if chunk.get("choices"):
                    return read
        except BaseException as error:
            await upstream.aclose(ok=None if isinstance(error, asyncio.CancelledError) else False)
            if isinstance(error, Exception) and not isinstance(error, UpstreamError):
                raise UpstreamError(
                    f"stream failed before its first chunk ({type(error).__name__})",
                    retryable=False,
                    attempts=upstream.attempts,
                ) from None
            raise
        await upstream.aclose(ok=False)
        raise UpstreamError(
            "upstream stream ended without any answer chunk",
            retryable=False,
            attempts=upstream.attempts,
        )

    @staticmethod
    def _stream_answer(decision: _Decision, answer: Answer) -> AsyncIterator[bytes]:
        route = decision.route.name
        final = chunk_body(decision.id, decision.created, route, None, racer=answer.racer)
        return message_events(
            decision.id, decision.created, route, answer.message, answer.finish_reason, final
        )

    async def _relay(
        self,
        decision: _Decision,
        backend: Backend,
        upstream: UpstreamStream,
        first: list[dict[str, Any]],
    ) -> AsyncIterator[bytes]:
        """Pass a single backend's stream through, re-labelled with the gateway's id."""
        prompt_tokens = completion_tokens = None
        error = None
        finished = False
        ok: bool | None = None

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            nonlocal finished
            for chunk in first:
                yield chunk
            async for line in upstream.lines():
                chunk = _parse_event(line)
                if chunk == "[DONE]":
                    finished = True
                    return
                if chunk is not None:
                    yield chunk

        try:
            async for chunk in chunks():
                if "error" in chunk:
                    detail = chunk["error"]
                    text = detail.get("message") if isinstance(detail, dict) else detail
                    raise UpstreamError(f"upstream error event: {text}"[:300], retryable=False)
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    prompt_tokens = usage.get("prompt_tokens")
                    completion_tokens = usage.get("completion_tokens")
                if not chunk.get("choices"):
                    continue
                finished = finished or any(
                    c.get("finish_reason") for c in chunk["choices"] if isinstance(c, dict)
                )
                chunk.update(id=decision.id, model=decision.route.name, created=decision.created)
                yield sse(chunk)
            if not finished:
                raise UpstreamError(
                    "upstream stream ended without [DONE] or a finish_reason", retryable=False
                )
            ok = True
        except (Exception, TimeoutError) as failure:  # noqa: B014 (TimeoutError for clarity)
            kind = "deadline passed" if isinstance(failure, TimeoutError) else str(failure)
            error = backend.redact(f"stream interrupted ({type(failure).__name__}: {kind})")
            ok = False
        except BaseException:  # the client went away: still log the decision
            error = "client disconnected"
            raise
        finally:
            await upstream.aclose(ok)
            call = BackendCall(
                backend.name,
                None if error else "",
                time.perf_counter() - upstream.started,
                upstream.attempts,
                prompt_tokens,
                completion_tokens,
                backend.cost(prompt_tokens, completion_tokens),
                error,
            )
            racer = await self._finish(
                decision, [call], backend.name, "failed" if error else "answered"
            )
        if error is not None:
            yield sse(error_event(f"The upstream stream failed: {error}", racer))
            return
        yield sse(chunk_body(decision.id, decision.created, decision.route.name, None, racer=racer))
        yield sse("[DONE]")

    async def feedback(
        self, feedback: FeedbackRequest, owner: str | None = None, admin: bool = False
    ) -> dict[str, Any]:
        """Record whether a routed answer was right and update the route's monitor.

        Only the key that made the request (``owner``) or an admin may give feedback.
        Posting the same feedback again is answered as the first time (idempotent);
        different feedback on a decision that has some is refused (409).

        Raises
        ------
        GatewayError
            404 for an unknown id (or one made with another key), 409 for conflicting
            feedback, 400 for model names the route does not have.
        """
        decision = await self.decision_log.find(feedback.id)
        if (
            decision is None
            or decision.route not in self.routes
            or not (
                admin or decision.owner is None or hmac.compare_digest(decision.owner, owner or "")
            )
        ):
            raise GatewayError(
                404,
                f"No routing decision with id {truncate(feedback.id)!r} for this key.",
                "invalid_request_error",
                "decision_not_found",
            )
        route = self.routes[decision.route]
        loss = feedback_loss(route, decision, feedback)
        record = FeedbackRecord(
            feedback.id, time.time(), feedback.correct, feedback.models_correct, loss
        )
        stored = await self.decision_log.add_feedback(record)
        if not stored:
            previous = await self.decision_log.find_feedback(feedback.id)
            if previous is None or (previous.correct, previous.models_correct) != (
                record.correct,
                record.models_correct,
            ):
                raise GatewayError(
                    409,
                    f"Decision {truncate(feedback.id)!r} already has different feedback.",
                    "invalid_request_error",
                    "duplicate_feedback",
                )
        was_alarmed = route.monitor.alarm
        await asyncio.to_thread(self.sync_monitors)
        if route.monitor.alarm and not was_alarmed:
            logger.warning(
                "route %r: feedback no longer supports misrouting risk <= alpha = %g "
                "(anytime-valid lower bound %.3f after %d answers): recalibrate. %s",
                route.name,
                route.monitor.alpha,
                route.monitor.lower_bound,
                route.monitor.n,
                recalibration_hint(self.config, route),  # hook (issue 12)
            )
        return {
            "id": feedback.id,
            "loss": loss,
            "repeated": not stored,
            "monitor": route.monitor.state(),
        }


def truncate(text: str, limit: int = 64) -> str:
    """``text`` cut to ``limit`` characters (error messages never echo long input)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _message_of(call: BackendCall) -> dict[str, Any]:
    """The assistant message to return for ``call`` (the upstream's own, when it has one)."""
    if call.message is not None:
        return {"role": "assistant", **call.message}
    return {"role": "assistant", "content": call.text or ""}


def _parse_event(line: str) -> dict[str, Any] | str | None:
    """One SSE line: a JSON chunk, "[DONE]", or None (not a data line)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return data
    chunk = json.loads(data)
    if not isinstance(chunk, dict):
        raise ValueError("an event is not a JSON object")
    return chunk


def feedback_loss(
    route: Route, decision: DecisionRecord, feedback: FeedbackRequest
) -> float:
    """The loss the route's monitor watches: the certified policy's objective on a policy
    route (:func:`racer.serve.policy_route.policy_feedback_loss`), else the served loss of
    the decision's mode (:func:`misrouting_loss`)."""
    loss = misrouting_loss(decision, feedback, route.model_names)  # validates the feedback
    if route.policy is None:
        return loss
    return policy_feedback_loss(route.policy, decision, feedback, route.model_names)


def misrouting_loss(
    decision: DecisionRecord, feedback: FeedbackRequest, model_names: Sequence[str]
) -> float:
    """The served loss of the decision's mode (:func:`racer.losses.served_losses`).

    With ``models_correct``: the loss of the stored decision (its column 0 and set)
    against those labels, a model left out counted as unknown (worst case). With
    ``correct`` alone: 0 when the answer (or the abstention / refusal) was right and 1
    otherwise, an upper bound of the loss, exact for a strict abstention ("abstaining
    was right" is "no model was good").

    Raises
    ------
    GatewayError
        400 for model names the route does not have, or ``correct`` contradicting
        ``models_correct`` on the model whose answer was returned.
    """
    if feedback.models_correct is None:
        return 0.0 if feedback.correct else 1.0
    unknown = sorted(set(feedback.models_correct) - set(model_names))
    if unknown:
        shown = [truncate(name) for name in unknown[:5]]
        raise GatewayError(
            400,
            f"models_correct names {len(unknown)} unknown model(s) {shown}; the route has "
            f"{list(model_names)}.",
            "invalid_request_error",
            "unknown_model",
        )
    chosen_ok = feedback.models_correct.get(decision.chosen or "")
    if feedback.correct is not None and chosen_ok is not None and chosen_ok != feedback.correct:
        raise GatewayError(
            400,
            f"correct = {feedback.correct} contradicts models_correct[{decision.chosen!r}] = "
            f"{chosen_ok} (the model whose answer was returned).",
            "invalid_request_error",
            "contradictory_feedback",
        )
    quality = feedback.label_row(model_names)
    row = np.zeros((1, len(model_names) + 1), dtype=bool)
    invoked = set(decision.invoked)
    row[0, 1:] = [m in invoked for m in model_names]
    mode = decision.mode or "off"
    row[0, 0] = (
        bool(decision.abstain_flag)
        if decision.abstain_flag is not None
        else (decision.abstained and mode == "strict")
    )
    return float(served_losses(mode, row, quality, binary=True)[0])
