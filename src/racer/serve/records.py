"""Decision records: the ``racer`` object of an answer, logged and counted before it leaves.

Every way of answering ends here: :meth:`DecisionRecorder.answer` logs an answered
decision and returns its :class:`~racer.serve.decision.Answer`, or logs a failed one and
raises the failure (the upstream's client error, 429, 504 or 502). Logging is durable
before the answer is sent; the metrics and the audit draw
(:class:`~racer.serve.audit.Auditor`) see every decision.

An answer outside the route's certificate (a cascade whose reference failed, a set
whose top member's refusal was passed over, a fallback's answer) says why everywhere:
``racer.certified: false`` and ``racer.uncertified`` (the reason), the header
``x-racer-certified: false`` (:mod:`racer.serve.headers`), the decision log's
``uncertified`` column and ``racer_uncertified_answers_total{route,reason}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from racer.refusal import refusal_reasons
from racer.serve.audit import Auditor
from racer.serve.backends import BackendCall
from racer.serve.decision import Answer, Decision, answer_of
from racer.serve.decision_log import DecisionLog, DecisionRecord
from racer.serve.errors import GatewayError
from racer.serve.headers import answer_headers
from racer.serve.metrics import GatewayMetrics
from racer.serve.usage import answer_usage


def racer_object(
    decision: Decision, calls: Sequence[BackendCall], chosen: str | None
) -> dict[str, Any]:
    """The ``racer`` object of a decision: set, scores, calibration, calls, cost, usage.

    ``usage`` is what the answer reports (see :mod:`racer.serve.usage`).
    """
    route = decision.route
    costs = [c.cost_usd for c in calls if c.cost_usd is not None]
    usage, usage_fields = answer_usage(calls)
    refused = not decision.invoked
    return {
        "id": decision.id,
        "route": route.name,
        "set": decision.invoked,
        "scores": {m: float(s) for m, s in zip(route.model_names, decision.scores, strict=True)},
        "threshold": route.threshold_of(decision.group),
        "group": decision.group,
        "certificate_group": route.certificate_group(decision.group),
        "alpha": float(route.calibration.alpha),
        "delta": float(route.calibration.delta),
        "abstention": route.mode,
        "refused": refused,
        "refusal_reason": refusal_of(decision) if refused else None,
        "flagged": route.mode == "flag" and bool(decision.column_0) and not refused,
        # the names before the one vocabulary (docs/method.md), kept for old clients
        "abstained": refused,
        "abstain_flag": decision.column_0 if route.mode == "flag" else None,
        "chosen": chosen,
        "backends": {c.backend: c.summary() for c in calls},
        "completion": decision.completion,
        "cost_usd": sum(costs) if costs else None,
        "usage": usage,
        **usage_fields,
    }


def refusal_of(decision: Decision) -> str:
    """Why no model is called for ``decision``: the calibrated level and the best score."""
    route = decision.route
    scores = np.asarray(decision.scores, dtype=float).reshape(1, -1)
    groups = None if decision.group is None else [decision.group]
    reasons = refusal_reasons(
        route.calibration, scores, route.model_names, np.array([True]), groups=groups
    )
    return str(reasons[0])


# Why an answer is outside its route's certificate (the ``reason`` label of the metric).
REFERENCE_FAILED = "reference_failed"
TOP_MODEL_REFUSED = "top_model_refused"
FALLBACK = "fallback"


def upstream_failure(
    decision: Decision, calls: Sequence[BackendCall], why: str | None = None
) -> GatewayError:
    """The error of a decision with no answer to serve.

    The upstream's own status and message when every member it answered rejected the
    request (a client error: 400, 404, 413, 422; the others' breakers were open);
    else 429 (every failure rate-limited), 504 (the deadline) or 502. ``why`` starts the
    message (a route that served no answer although some calls answered).
    """
    failed = [c for c in calls if not c.ok]
    reasons = "; ".join(f"{c.backend}: {c.error}" for c in failed)
    rejected = [c for c in failed if c.rejected]
    if rejected and all(c.rejected or c.attempts == 0 for c in failed):
        return GatewayError(
            rejected[0].status or 400,
            f"The upstream rejected the request: {rejected[0].backend}: {rejected[0].error}",
            "invalid_request_error",
            "upstream_rejected",
        )
    prefix = f"{why}: " if why else ""
    if failed and all(c.status == 429 for c in failed):
        waits = [c.retry_after_s for c in failed if c.retry_after_s is not None]
        return GatewayError(
            429,
            f"{prefix}Every backend of the routed set is rate-limited: {reasons}",
            "rate_limit_error",
            "rate_limited",
            headers={"Retry-After": str(max(1, math.ceil(min(waits) if waits else 1)))},
        )
    if decision.remaining() <= 0 and any(c.abandoned for c in failed):
        return GatewayError(
            504,
            f"{prefix}No backend of the routed set answered within deadline_s = "
            f"{decision.route.config.deadline_s:g} s: {reasons}",
            "upstream_error",
            "deadline_exceeded",
        )
    return GatewayError(
        502,
        f"{why}: {reasons}" if why else f"Every backend of the routed set failed: {reasons}",
        "upstream_error",
        "all_backends_failed",
    )


class DecisionRecorder:
    """Logs, counts and audits each decision once, as it ends.

    Parameters
    ----------
    decision_log : DecisionLog
        Where decisions are written.
    metrics : GatewayMetrics
        The gateway's counters.
    audit : Auditor
        The audit draw, called with every finished decision.
    charge : callable, optional
        Takes the key fingerprint and the dollars of every finished decision (the
        spend caps of :mod:`racer.serve.limits`).
    """

    def __init__(
        self,
        decision_log: DecisionLog,
        metrics: GatewayMetrics,
        audit: Auditor,
        charge: Callable[[str | None, float | None], None] | None = None,
    ):
        self.decision_log = decision_log
        self.metrics = metrics
        self.audit = audit
        self.charge = charge

    async def finish(
        self,
        decision: Decision,
        calls: Sequence[BackendCall],
        chosen: str | None,
        outcome: str,
        extra: dict[str, Any] | None = None,
        uncertified: str | None = None,
    ) -> dict[str, Any]:
        """Log (durably, before the answer leaves) and count a decision; its ``racer``.

        ``extra`` replaces or adds fields of the ``racer`` object (a certified policy's
        report and its cost, judge included) before it is logged. ``uncertified``: why
        the answer served is outside the route's certificate (None: it is within).
        """
        racer = {**racer_object(decision, calls, chosen), **(extra or {})}
        if outcome != "failed":
            racer["certified"] = uncertified is None
            racer["uncertified"] = uncertified
            if uncertified is not None:
                self.metrics.observe_uncertified(decision.route.name, uncertified)
        latency_s = time.perf_counter() - decision.started
        racer["latency_ms"] = round(latency_s * 1000, 3)
        self.metrics.observe_request(decision.route.name, outcome, len(decision.invoked), calls)
        monitored = decision.route.monitored_group(decision.group)
        if monitored is not None:
            self.metrics.observe_group(decision.route.name, monitored, outcome)
        if self.charge is not None:
            self.charge(decision.owner, racer["cost_usd"])
        racer["logged"] = await self.decision_log.record(
            DecisionRecord(
                id=decision.id,
                created=time.time(),
                route=decision.route.name,
                query=decision.query,
                invoked=decision.invoked,
                scores=racer["scores"],
                threshold=racer["threshold"],
                abstained=racer["refused"],
                chosen=chosen,
                backends=racer["backends"],
                cost_usd=racer["cost_usd"],
                latency_ms=latency_s * 1000,
                owner=decision.owner,
                mode=decision.route.mode,
                abstain_flag=decision.column_0,
                uncertified=uncertified if outcome != "failed" else None,
                group_name=decision.group,
                artifact_id=decision.route.artifact_id,
            )
        )
        self.audit.observe(decision, calls)  # hook (issue 12): audit draw, call probabilities
        return racer

    async def answer(
        self,
        decision: Decision,
        calls: Sequence[BackendCall],
        chosen: BackendCall | None,
        extra: dict[str, Any] | None = None,
        uncertified: str | None = None,
        why: str | None = None,
    ) -> Answer:
        """Log the decision and return ``chosen``'s message as its answer.

        ``uncertified``: why ``chosen`` is outside the route's certificate, if it is.
        ``why``: the failure's reason when ``chosen`` is None although calls answered.

        Raises
        ------
        GatewayError
            When ``chosen`` is None (no answer to serve): logged as failed first; it
            carries the decision's ``x-racer-*`` headers.
        """
        if chosen is None:
            racer = await self.finish(decision, calls, None, "failed", extra)
            failure = upstream_failure(decision, calls, why)
            failure.headers = {**(failure.headers or {}), **answer_headers(racer)}
            raise failure
        racer = await self.finish(decision, calls, chosen.backend, "answered", extra, uncertified)
        return answer_of(chosen, racer)
