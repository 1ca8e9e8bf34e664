"""One chat completion, start to finish: pick the route, decide, answer, send.

The HTTP layer (:mod:`racer.serve.app`) only parses and answers; the gateway
orchestrates each request in one order:

    route -> router scores -> calibrated set (the :class:`~racer.serve.decision.Decision`)
          -> the route's way of answering (:mod:`racer.serve.answering`)
          -> JSON body, or server-sent events (:mod:`racer.serve.streaming`)

Before routing, the caller's key must be within its limits (:mod:`racer.serve.limits`);
once answered, the route's shadow, if any, decides on the same query
(:mod:`racer.serve.shadow`).

Calling backends (:mod:`racer.serve.fanout`) and logging, counting and auditing each
decision (:mod:`racer.serve.records`) are shared services the ways of answering call.
The gateway also takes feedback and keeps the routes' risk monitors in step with it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

from racer.serve.answering import AnsweringStrategy, Services, strategies
from racer.serve.audit import Auditor, recalibration_hint
from racer.serve.backends import Backend
from racer.serve.config import ConfigError, GatewayConfig
from racer.serve.decision import Answer, Decision
from racer.serve.decision_log import DecisionLog, FeedbackRecord
from racer.serve.errors import GatewayError, truncate
from racer.serve.feedback import feedback_loss
from racer.serve.limits import KeyLimits
from racer.serve.metrics import GatewayMetrics
from racer.serve.monitor_sync import MonitorSync
from racer.serve.records import DecisionRecorder
from racer.serve.route import Route, load_route
from racer.serve.schemas import ChatCompletionRequest, FeedbackRequest, completion_body
from racer.serve.scoring_batcher import ScoringBatcher
from racer.serve.shadow import ShadowDecisions
from racer.serve.streaming import AnswerStream, answer_events

logger = logging.getLogger("racer.serve")


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
    Each route is answered by the way of answering :attr:`Route.answering` names
    (:mod:`racer.serve.answering`); how a calibrated set's answers become one is
    documented in :mod:`racer.serve.answering.calibrated_set`.
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
        self.metrics.watch_breakers({name: b.breaker for name, b in self.backends.items()})
        self._background: set[asyncio.Task[Any]] = set()
        self.monitors = MonitorSync(decision_log)
        self.sync_monitors()
        for route in self.routes.values():
            self.metrics.set_artifact(route.name, route.artifact_id)
        self.audit = Auditor(self.backends, decision_log)  # hook (issue 12)
        self.limits = KeyLimits(config.limits)
        self.shadows = ShadowDecisions(decision_log)
        self.records = DecisionRecorder(decision_log, self.metrics, self.audit, self.limits.charge)
        self.strategies = strategies(Services(self.backends, self.records, self.keep_running))
        self.scoring = ScoringBatcher()

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

    def keep_running(self, task: asyncio.Task[Any]) -> None:
        """Hold ``task`` (it outlives its request) until it ends; cancelled at shutdown."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def sync_monitors(self) -> None:
        """Feed the monitors the feedback stored since the last sync, in stored order.

        Every worker process and instance sharing the log (and every restart) applies
        the same losses in the same order, so all of them hold the same monitor state
        (:mod:`racer.serve.monitor_sync`).
        """
        self.monitors.sync(self.routes)
        for route in self.routes.values():
            self.publish_monitors(route)

    def publish_monitors(self, route: Route) -> None:
        """Publish the state of ``route``'s monitors (route-wide and per group)."""
        self.metrics.set_monitor(route.name, route.monitor.state())
        for group, monitor in route.group_monitors.items():
            self.metrics.set_group_monitor(route.name, group, monitor.state())

    async def aclose(self) -> None:
        """Stop abandoned calls, close the backend clients and the decision log."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.audit.drain()  # hook (issue 12): finish audited requests first
        await self.shadows.drain()
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))
        self.decision_log.close()
        self.metrics.close()

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

    def strategy(self, route: Route) -> AnsweringStrategy:
        """The way of answering that serves ``route``."""
        return self.strategies[route.answering]

    async def decide(
        self,
        request: ChatCompletionRequest,
        started: float | None = None,
        owner: str | None = None,
        stream: bool = False,
        group: str | None = None,
    ) -> Decision:
        """Score the request on its route and form the calibrated set (no backend called).

        ``group`` is the ``x-racer-group`` header; the request's ``metadata.racer_group``
        wins over it (:meth:`racer.serve.route.Route.group_of`).

        Raises
        ------
        GatewayError
            404 for an unknown route; 400 for a group the route cannot serve.
        """
        started = time.perf_counter() if started is None else started
        route = self.route(request.model)
        query = request.query()
        requested = request.racer_group()
        group = route.group_of(query, group if requested is None else requested)
        if route.config.score_in_thread:  # with the queries of concurrent requests
            scores, invoked, column_0 = await self.scoring.decision(route, query, group)
        else:
            scores, invoked, column_0 = route.decision(query, group)
        return Decision(
            route=route,
            query=query,
            body=request.upstream_body(),
            group=group,
            scores=scores,
            invoked=invoked,
            started=started,
            deadline=started + route.config.deadline_s,
            owner=owner,
            column_0=column_0,
            stream=stream,
        )

    async def complete(
        self,
        request: ChatCompletionRequest,
        started: float | None = None,
        owner: str | None = None,
        group: str | None = None,
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
        group : str, optional
            The ``x-racer-group`` header (see :meth:`decide`).

        Raises
        ------
        GatewayError
            404 for an unknown route; the upstream's 400 / 404 / 413 / 422 when it
            rejected the request and no member answered; 429 when the key is over its
            limits (:mod:`racer.serve.limits`) or every backend was rate-limited, 502 when
            every backend failed (or a certified route's reference did, see
            ``on_reference_failure``), 504 when none answered within the deadline.
        """
        self.limits.admit(owner)
        decision = await self.decide(request, started, owner, group=group)
        try:
            answer = await self.strategy(decision.route).answer(decision)
        finally:
            self.shadows.observe(decision)
        assert isinstance(answer, Answer), "only a streamed request is relayed"
        return completion_body(
            decision.id,
            decision.created,
            decision.route.name,
            answer.message,
            answer.racer["usage"],
            answer.racer,
            answer.finish_reason,
            answer.all_choices(),
            answer.system_fingerprint,
        )

    async def stream(
        self,
        request: ChatCompletionRequest,
        started: float | None = None,
        owner: str | None = None,
        group: str | None = None,
    ) -> AnswerStream:
        """Answer a chat completion as server-sent events (``stream`` true).

        The answer is made as for :meth:`complete`; only its sending differs. Everything
        that can fail with an HTTP error happens before this returns, so the caller can
        still send a 4xx / 5xx status instead of a broken stream. A one-model set is
        relayed as the upstream streams it; its first chunk is read here, so that an
        upstream that fails before it (or answers without an event stream) fails over
        like a failed call. A stream that breaks later ends with an OpenAI-style error
        event and no ``[DONE]``. The stream's ``headers`` (:mod:`racer.serve.headers`) are
        sent before its first event.
        """
        self.limits.admit(owner)
        decision = await self.decide(request, started, owner, stream=True, group=group)
        try:
            answer = await self.strategy(decision.route).answer(decision)
        finally:
            self.shadows.observe(decision)
        return answer_events(decision, answer)

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
