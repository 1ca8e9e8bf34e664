"""Decision records: the ``racer`` object of an answer, logged and counted before it leaves.

Every way of answering ends here: :meth:`DecisionRecorder.answer` logs an answered
decision and returns its :class:`~racer.serve.decision.Answer`, or logs a failed one and
raises the failure (429, 504 or 502). Logging is durable before the answer is sent; the
metrics and the audit draw (:class:`~racer.serve.audit.Auditor`) see every decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from racer.serve.audit import Auditor
from racer.serve.backends import BackendCall
from racer.serve.decision import Answer, Decision, message_of
from racer.serve.decision_log import DecisionLog, DecisionRecord
from racer.serve.errors import GatewayError
from racer.serve.metrics import GatewayMetrics


def racer_object(
    decision: Decision, calls: Sequence[BackendCall], chosen: str | None
) -> dict[str, Any]:
    """The ``racer`` object of a decision: set, scores, calibration, calls, cost, usage."""
    route = decision.route
    costs = [c.cost_usd for c in calls if c.cost_usd is not None]
    prompt_tokens = sum(c.prompt_tokens or 0 for c in calls)
    completion_tokens = sum(c.completion_tokens or 0 for c in calls)
    return {
        "id": decision.id,
        "route": route.name,
        "set": decision.invoked,
        "scores": {m: float(s) for m, s in zip(route.model_names, decision.scores, strict=True)},
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


def upstream_failure(decision: Decision, calls: Sequence[BackendCall]) -> GatewayError:
    """The error of a decision no call answered: 429 (all rate-limited), 504 or 502."""
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
    """

    def __init__(self, decision_log: DecisionLog, metrics: GatewayMetrics, audit: Auditor):
        self.decision_log = decision_log
        self.metrics = metrics
        self.audit = audit

    async def finish(
        self,
        decision: Decision,
        calls: Sequence[BackendCall],
        chosen: str | None,
        outcome: str,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Log (durably, before the answer leaves) and count a decision; its ``racer``.

        ``extra`` replaces or adds fields of the ``racer`` object (a certified policy's
        report and its cost, judge included) before it is logged.
        """
        racer = {**racer_object(decision, calls, chosen), **(extra or {})}
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
    ) -> Answer:
        """Log the decision and return ``chosen``'s message as its answer.

        Raises
        ------
        GatewayError
            When ``chosen`` is None (no call answered): logged as failed first.
        """
        if chosen is None:
            await self.finish(decision, calls, None, "failed", extra)
            raise upstream_failure(decision, calls)
        racer = await self.finish(decision, calls, chosen.backend, "answered", extra)
        return Answer(message_of(chosen), chosen.finish_reason or "stop", racer)
