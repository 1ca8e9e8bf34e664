"""Audit sampling: an i.i.d. sample of live traffic with every model's answer.

Feedback on routed requests only covers the models the router invoked, which is a
biased sample for calibrating any other policy. A route with ``audit_rate: r``
audits each request with probability ``r``, by a seeded random draw that does not
look at the request (so the audited requests are an i.i.d. sample of the traffic).
An audited request is answered as usual; after the answer, every model whose
response the gateway does not already have is called in the background, and all
the responses are written to the decision log. The client's answer and latency are
not affected.

Every decision (audited or not) also records the probability that each model was
called, ``1`` for the models of the calibrated set and ``r`` for the others, and the
id of the artifact that served it, for off-policy evaluation and for knowing which
calibration a decision came from.

Two tables sit beside the gateway's ``decisions`` (created when missing, so older
logs keep working):

- ``decision_audit(decision_id, route, created, artifact_id, audited, call_probability)``
- ``audit_responses(decision_id, model, response, cost_usd, latency_s, prompt_tokens,
  completion_tokens, error, background, logprobs)``; ``logprobs`` is the answer's token
  log-probabilities as a JSON list (NULL when its backend returned none; see the
  backend setting ``logprobs``), added to older logs when missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

logger = logging.getLogger("racer.serve")

AUDIT_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS decision_audit (
    decision_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    artifact_id TEXT,
    audited INTEGER NOT NULL,
    call_probability TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS audit_responses (
    decision_id TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT,
    cost_usd DOUBLE PRECISION,
    latency_s DOUBLE PRECISION,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT,
    background INTEGER NOT NULL,
    logprobs TEXT,
    PRIMARY KEY (decision_id, model)
)""",
)
_INSERT_META = (
    "INSERT INTO decision_audit (decision_id, route, created, artifact_id, audited, "
    "call_probability) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_RESPONSE = (
    "INSERT INTO audit_responses (decision_id, model, response, cost_usd, latency_s, "
    "prompt_tokens, completion_tokens, error, background, logprobs) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _add_logprobs_column(connection: Any, mark: str) -> None:
    """Add ``audit_responses.logprobs`` to a log created before it existed."""
    if mark != "?":  # PostgreSQL
        connection.execute("ALTER TABLE audit_responses ADD COLUMN IF NOT EXISTS logprobs TEXT")
        return
    present = {row[1] for row in connection.execute("PRAGMA table_info(audit_responses)")}
    if "logprobs" not in present:
        connection.execute("ALTER TABLE audit_responses ADD COLUMN logprobs TEXT")


def _logprobs_text(values: Sequence[float] | None) -> str | None:
    return None if values is None else json.dumps([float(v) for v in values])


def call_probabilities(
    model_names: Sequence[str], invoked: Sequence[str], audit_rate: float
) -> dict[str, float]:
    """P(model is called) under the route's policy: 1 in the set, ``audit_rate`` outside.

    The set is a deterministic function of the query and the artifact; the audit draw
    is independent of both. (Fallbacks, called only when the whole set failed, are
    not part of the policy.)
    """
    chosen = set(invoked)
    return {m: 1.0 if m in chosen else float(audit_rate) for m in model_names}


class AuditDraws:
    """One seeded stream of draws per route, consumed in request order.

    The stream is seeded by ``(seed, crc32(route name))``: it never sees a request's
    content, so whether a request is audited is independent of what it asks.
    """

    def __init__(self) -> None:
        self._streams: dict[str, np.random.Generator] = {}

    def draw(self, route: str, rate: float, seed: int) -> bool:
        """Whether the next request of ``route`` is audited."""
        if rate <= 0.0:
            return False
        stream = self._streams.get(route)
        if stream is None:
            stream = np.random.default_rng([seed, zlib.crc32(route.encode("utf-8"))])
            self._streams[route] = stream
        return bool(stream.random() < rate)


def _execute_all(statements: Sequence[str]) -> Any:
    def job(connection: Any, mark: str) -> None:
        for statement in statements:
            connection.execute(statement)

    return job


def _insert_many(statement: str, rows: list[tuple[Any, ...]]) -> Any:
    def job(connection: Any, mark: str) -> None:
        connection.cursor().executemany(statement.replace("?", mark), rows)

    return job


def _log_failure(future: Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        logger.error("audit log write failed: %s", error)


class Auditor:
    """Draws audits, records call probabilities, and completes audited requests.

    Parameters
    ----------
    backends : mapping of str to Backend
        The gateway's backend clients (their limits and retries apply).
    decision_log : DecisionLog
        The gateway's log; the audit tables are created in it.
    flush_interval_s : float, default 0.05
        The longest a decision's audit record waits before it is written.
    start_delay_s : float, default 0.005
        How long the background calls wait, so that the client's answer leaves first.
    """

    def __init__(
        self,
        backends: Mapping[str, Any],
        decision_log: Any,
        flush_interval_s: float = 0.05,
        start_delay_s: float = 0.005,
    ):
        self.backends = backends
        self.start_delay_s = start_delay_s
        self.decision_log = decision_log
        self.draws = AuditDraws()
        self.flush_interval_s = flush_interval_s
        self._pending: list[tuple[Any, ...]] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        decision_log.submit_job(_execute_all(AUDIT_SCHEMA)).result()
        decision_log.submit_job(_add_logprobs_column).result()

    @property
    def in_flight(self) -> int:
        """Audited requests whose background calls have not all been logged yet."""
        return len(self._tasks)

    def observe(self, decision: Any, calls: Sequence[Any]) -> bool:
        """Record a finished decision; audit it when its draw says so.

        Parameters
        ----------
        decision : gateway decision
            With ``id``, ``route`` (``name``, ``config``, ``model_names``,
            ``artifact_id``), ``invoked`` and ``body``.
        calls : sequence of BackendCall
            The calls made for the client.

        Returns
        -------
        bool
            Whether the request is audited.
        """
        route = decision.route
        rate = float(getattr(route.config, "audit_rate", 0.0))
        audited = self.draws.draw(route.name, rate, int(getattr(route.config, "audit_seed", 0)))
        probabilities = call_probabilities(route.model_names, decision.invoked, rate)
        self._pending.append(
            (
                decision.id,
                route.name,
                float(decision.created),
                getattr(route, "artifact_id", None),
                int(audited),
                json.dumps(probabilities),
            )
        )
        self._schedule_flush()
        if audited:
            task = asyncio.get_running_loop().create_task(self._complete(decision, calls))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return audited

    def _schedule_flush(self) -> None:
        if len(self._pending) >= 256:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.flush_interval_s, self._flush)

    def _flush(self) -> Future[None] | None:
        self._flush_scheduled = False
        if not self._pending:
            return None
        rows, self._pending = self._pending, []
        future = self.decision_log.submit_job(_insert_many(_INSERT_META, rows))
        future.add_done_callback(_log_failure)
        return future

    async def _complete(self, decision: Any, calls: Sequence[Any]) -> None:
        """Call the models whose answer is missing, then log every model's response."""
        await asyncio.sleep(self.start_delay_s)
        answered = {c.backend: c for c in calls if c.ok and c.text}
        missing = [m for m in decision.route.model_names if m not in answered]
        extra = await asyncio.gather(*(self.backends[m].complete(decision.body) for m in missing))
        every = {**answered, **{c.backend: c for c in extra}}
        rows = [
            (
                decision.id,
                model,
                every[model].text,
                every[model].cost_usd,
                every[model].latency_s,
                every[model].prompt_tokens,
                every[model].completion_tokens,
                every[model].error,
                int(model in missing),
                _logprobs_text(every[model].token_logprobs),
            )
            for model in decision.route.model_names
        ]
        self._flush()  # the decision's audit record first
        future = self.decision_log.submit_job(_insert_many(_INSERT_RESPONSE, rows))
        future.add_done_callback(_log_failure)
        await asyncio.wrap_future(future)

    async def drain(self) -> None:
        """Wait for the audited requests in flight and write every waiting record."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        future = self._flush()
        if future is not None:
            await asyncio.wrap_future(future)


def artifact_id_of(metadata: Mapping[str, Any]) -> str | None:
    """A short id of an artifact: the first 16 hex digits of its metadata sha256."""
    digest = metadata.get("metadata_sha256")
    return str(digest)[:16] if digest else None


def recalibration_hint(config: Any, route: Any) -> str:
    """The commands that recalibrate ``route`` from its audited sample, for alarms."""
    url = config.decision_log.url
    rate = float(getattr(route.config, "audit_rate", 0.0))
    if rate <= 0:
        return (
            f"Route {route.name!r} has no audited sample (audit_rate: 0): set audit_rate, "
            "or collect labelled data with `racer collect` and `racer grade`."
        )
    return (
        f"Recalibrate from the audited sample: racer dataset --from-log {url} --route "
        f"{route.name} --out audited.jsonl && racer grade --data audited.jsonl --judge MODEL "
        "--config gateway.yaml --out graded.jsonl && racer calibrate --train TRAIN "
        "--calibration graded.jsonl --out NEW_ARTIFACT, then POST /admin/reload "
        f'{{"route": "{route.name}", "artifact": "NEW_ARTIFACT"}} (or SIGHUP).'
    )
