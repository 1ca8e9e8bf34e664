"""One chat completion, start to finish: score, form the calibrated set, fan out, aggregate.

The HTTP layer (:mod:`racer.serve.app`) only parses and answers; everything a request
does happens here, in one order:

    query -> router scores -> calibrated set -> (empty: abstain)
          -> concurrent backend calls -> aggregation -> response + decision log + metrics
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from racer.aggregate import choose_response
from racer.serve.audit import Auditor, artifact_id_of, recalibration_hint
from racer.serve.backends import Backend, BackendCall, UpstreamError, UpstreamStream
from racer.serve.config import ConfigError, GatewayConfig, RouteConfig
from racer.serve.decision_log import DecisionLog, DecisionRecord, FeedbackRecord
from racer.serve.metrics import GatewayMetrics
from racer.serve.monitor import RiskMonitor
from racer.serve.schemas import (
    ChatCompletionRequest,
    FeedbackRequest,
    chunk_body,
    completion_body,
    sse,
    text_events,
)

logger = logging.getLogger("racer.serve")


class GatewayError(Exception):
    """A request that cannot be answered; ``status`` is the HTTP status to return."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code


class ScoringRouter(Protocol):
    """What the gateway needs of a base router."""

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray: ...


class SetPredictor(Protocol):
    """What the gateway needs of a calibrated RACER."""

    alpha: float
    delta: float
    threshold_: float

    def predict(self, scores: np.ndarray, *, abstain_scores: Any = None) -> np.ndarray: ...


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

    @property
    def name(self) -> str:
        """The ``model`` value clients send."""
        return self.config.name

    def decide(self, query: str) -> tuple[np.ndarray, list[str]]:
        """The router's scores for ``query`` and the calibrated set, best-scored first."""
        scores = np.asarray(self.router.predict_proba([query]), dtype=float).reshape(1, -1)
        abstain = None if self.abstention is None else self.abstention.abstain_score([query])
        predicted = self.calibration.predict(scores, abstain_scores=abstain)
        invoked = np.asarray(predicted, dtype=bool)[0]
        order = np.argsort(-scores[0], kind="stable")
        return scores[0], [self.model_names[k] for k in order if invoked[k]]

    def describe(self) -> dict[str, Any]:
        """The route's calibration and monitor, for /healthz."""
        return {
            "models": list(self.model_names),
            "alpha": float(self.calibration.alpha),
            "delta": float(self.calibration.delta),
            "threshold": float(self.calibration.threshold_),
            "aggregator": self.config.aggregator,
            "monitor": self.monitor.state(),
            "artifact_id": self.artifact_id,  # hook (issue 12)
            "audit_rate": self.config.audit_rate,  # hook (issue 12)
        }


def load_route(config: RouteConfig, monitor_delta: float) -> Route:
    """Load a route's artifact (base router + calibrated RACER) from disk."""
    from racer.artifact import load_artifact

    try:
        artifact = load_artifact(config.artifact)
    except (OSError, ValueError) as error:
        raise ConfigError(f"route {config.name!r}: cannot load artifact: {error}") from error
    return Route(
        config,
        artifact.router,
        artifact.racer,
        tuple(artifact.model_names),
        RiskMonitor(artifact.racer.alpha, monitor_delta),
        artifact.abstention,
        artifact_id_of(artifact.metadata),  # hook (issue 12)
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
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def score_of(self, model: str) -> float:
        return float(self.scores[self.route.model_names.index(model)])


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
    """

    def __init__(
        self,
        config: GatewayConfig,
        routes: Mapping[str, Route],
        backends: Mapping[str, Backend],
        decision_log: DecisionLog,
    ):
        unserved = {name: set(route.model_names) - set(backends) for name, route in routes.items()}
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
        for route_name, loss in decision_log.feedback_losses():
            if route_name in self.routes:
                self.routes[route_name].monitor.update(loss)
        for route in self.routes.values():
            self.metrics.set_monitor(route.name, route.monitor.state())
        self.audit = Auditor(self.backends, decision_log)  # hook (issue 12)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Gateway:
        """Build the gateway a configuration describes: load artifacts, open clients and log."""
        routes = {r.name: load_route(r, config.monitor.delta) for r in config.routes}
        return cls(
            config,
            routes,
            {b.name: Backend(b) for b in config.backends},
            DecisionLog(config.decision_log.url, config.decision_log.store_prompts),
        )

    async def aclose(self) -> None:
        """Close the backend clients and the decision log."""
        await self.audit.drain()  # hook (issue 12): finish audited requests first
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))
        self.decision_log.close()

    def route(self, name: str) -> Route:
        """The route clients call ``name``."""
        if name not in self.routes:
            raise GatewayError(
                404,
                f"The model {name!r} does not exist; this gateway serves {sorted(self.routes)}.",
                "invalid_request_error",
                "model_not_found",
            )
        return self.routes[name]

    async def _decide(self, request: ChatCompletionRequest) -> _Decision:
        started = time.perf_counter()
        route = self.route(request.model)
        query = request.query()
        if route.config.score_in_thread:
            scores, invoked = await asyncio.to_thread(route.decide, query)
        else:
            scores, invoked = route.decide(query)
        return _Decision(route, query, request.upstream_body(), scores, invoked, started)

    async def _call_set(self, decision: _Decision) -> tuple[list[BackendCall], str | None, str]:
        """Call the set concurrently (then the fallbacks, one by one, if all failed)."""
        calls = list(
            await asyncio.gather(
                *(self.backends[m].complete(decision.body) for m in decision.invoked)
            )
        )
        return await self._aggregate_or_fallback(decision, calls)

    async def _aggregate_or_fallback(
        self, decision: _Decision, calls: list[BackendCall]
    ) -> tuple[list[BackendCall], str | None, str]:
        route = decision.route
        chosen = choose_response(
            [c.text for c in calls],
            [decision.score_of(c.backend) for c in calls],
            method=route.config.aggregator,
            answer_kind=route.config.answer_kind,
        )
        if chosen is not None:
            return calls, calls[chosen].backend, calls[chosen].text or ""
        for fallback in route.config.fallbacks:
            call = await self.backends[fallback].complete(decision.body)
            calls.append(call)
            if call.ok:
                return calls, call.backend, call.text or ""
        self._finish(decision, calls, None, "failed")
        reasons = "; ".join(f"{c.backend}: {c.error}" for c in calls)
        raise GatewayError(
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
            "abstained": not decision.invoked,
            "chosen": chosen,
            "backends": {c.backend: c.summary() for c in calls},
            "cost_usd": sum(costs) if costs else None,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _finish(
        self, decision: _Decision, calls: Sequence[BackendCall], chosen: str | None, outcome: str
    ) -> dict[str, Any]:
        """Log and count a finished decision; return its ``racer`` object."""
        racer = self._racer_object(decision, calls, chosen)
        latency_s = time.perf_counter() - decision.started
        racer["latency_ms"] = round(latency_s * 1000, 3)
        self.metrics.observe_request(
            decision.route.name, outcome, len(decision.invoked), latency_s, calls
        )
        self.decision_log.record(
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
            )
        )
        self.audit.observe(decision, calls)  # hook (issue 12): audit draw, call probabilities
        return racer

    async def _answer(self, decision: _Decision) -> tuple[str, dict[str, Any]]:
        """The final text and ``racer`` object of a non-pass-through answer."""
        if not decision.invoked:
            racer = self._finish(decision, [], None, "abstained")
            return decision.route.config.abstention_message, racer
        calls, chosen, text = await self._call_set(decision)
        return text, self._finish(decision, calls, chosen, "answered")

    async def complete(self, request: ChatCompletionRequest) -> dict[str, Any]:
        """Answer a chat completion (``stream`` false).

        Raises
        ------
        GatewayError
            404 for an unknown route, 502 when every backend of the set failed.
        """
        decision = await self._decide(request)
        text, racer = await self._answer(decision)
        return completion_body(
            decision.id, decision.created, decision.route.name, text, racer["usage"], racer
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[bytes]:
        """Answer a chat completion as server-sent events (``stream`` true).

        Everything that can fail with an HTTP error happens before this returns, so
        the caller can still send a 4xx / 502 status instead of a broken stream.
        """
        decision = await self._decide(request)
        if len(decision.invoked) == 1:
            backend = self.backends[decision.invoked[0]]
            opened = time.perf_counter()
            try:
                upstream = await backend.open_stream(decision.body)
            except UpstreamError as error:
                latency_s = time.perf_counter() - opened
                failed = BackendCall(
                    backend.name, None, latency_s, error.attempts, error=str(error)
                )
                calls, chosen, text = await self._aggregate_or_fallback(decision, [failed])
                racer = self._finish(decision, calls, chosen, "answered")
                return self._stream_text(decision, text, racer)
            return self._relay(decision, backend, upstream)
        text, racer = await self._answer(decision)
        return self._stream_text(decision, text, racer)

    @staticmethod
    def _stream_text(decision: _Decision, text: str, racer: dict[str, Any]) -> AsyncIterator[bytes]:
        route = decision.route.name
        final = chunk_body(decision.id, decision.created, route, None, racer=racer)
        return text_events(decision.id, decision.created, route, text, final)

    async def _relay(
        self, decision: _Decision, backend: Backend, upstream: UpstreamStream
    ) -> AsyncIterator[bytes]:
        """Pass a single backend's stream through, re-labelled with the gateway's id."""
        prompt_tokens = completion_tokens = None
        error = None
        try:
            async for line in upstream.lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    prompt_tokens = usage.get("prompt_tokens")
                    completion_tokens = usage.get("completion_tokens")
                if not chunk.get("choices"):
                    continue
                chunk.update(id=decision.id, model=decision.route.name, created=decision.created)
                yield sse(chunk)
        except Exception as failure:  # a broken upstream ends the stream, reported in `racer`
            error = backend.redact(f"stream interrupted ({type(failure).__name__}: {failure})")
        except BaseException:  # the client went away: still log the decision
            error = "client disconnected"
            raise
        finally:
            await upstream.aclose()
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
            racer = self._finish(decision, [call], backend.name, "failed" if error else "answered")
        yield sse(chunk_body(decision.id, decision.created, decision.route.name, None, racer=racer))
        yield sse("[DONE]")

    async def feedback(self, feedback: FeedbackRequest) -> dict[str, Any]:
        """Record whether a routed answer was right and update the route's monitor.

        Raises
        ------
        GatewayError
            404 for an unknown id, 409 when it already has feedback, 400 for model
            names the route does not have.
        """
        decision = await self.decision_log.find(feedback.id)
        if decision is None or decision.route not in self.routes:
            raise GatewayError(
                404,
                f"No routing decision with id {feedback.id!r}.",
                "invalid_request_error",
                "decision_not_found",
            )
        route = self.routes[decision.route]
        loss = misrouting_loss(decision, feedback, route.model_names)
        stored = await self.decision_log.add_feedback(
            FeedbackRecord(
                feedback.id, time.time(), feedback.correct, feedback.models_correct, loss
            )
        )
        if not stored:
            raise GatewayError(
                409,
                f"Decision {feedback.id!r} already has feedback.",
                "invalid_request_error",
                "duplicate_feedback",
            )
        if route.monitor.update(loss):
            logger.warning(
                "route %r: feedback no longer supports misrouting risk <= alpha = %g "
                "(anytime-valid lower bound %.3f after %d answers): recalibrate. %s",
                route.name,
                route.monitor.alpha,
                route.monitor.lower_bound,
                route.monitor.n,
                recalibration_hint(self.config, route),  # hook (issue 12)
            )
        state = route.monitor.state()
        self.metrics.set_monitor(route.name, state)
        return {"id": feedback.id, "loss": loss, "monitor": state}


def misrouting_loss(
    decision: DecisionRecord, feedback: FeedbackRequest, model_names: Sequence[str]
) -> float:
    """The misrouting loss (METHOD.md section 3) that ``feedback`` implies for ``decision``.

    With ``models_correct``: 1 when the set missed every acceptable model, or when it
    abstained although one existed (exact). With ``correct`` alone: 1 when the answer
    (or the abstention) was wrong, an upper bound of the exact loss.
    """
    if feedback.models_correct is None:
        return 0.0 if feedback.correct else 1.0
    unknown = sorted(set(feedback.models_correct) - set(model_names))
    if unknown:
        raise GatewayError(
            400,
            f"models_correct names unknown models {unknown}; the route has {list(model_names)}.",
            "invalid_request_error",
            "unknown_model",
        )
    good = {m for m, ok in feedback.models_correct.items() if ok}
    if decision.abstained:
        return 1.0 if good else 0.0
    return 0.0 if good & set(decision.invoked) else 1.0
