"""The decision log: every routing decision and every piece of feedback, in a database.

SQLite through the standard library by default (:mod:`racer.serve.decision_log_sqlite`);
a ``postgresql://`` URL uses the optional ``psycopg`` driver
(:mod:`racer.serve.decision_log_postgres`). All database work runs on one worker
thread, in submission order, so the event loop never waits on a disk write.

Durability: :meth:`DecisionLog.record` returns only once the decision is committed,
and the gateway awaits it before the answer leaves, so a decision whose answer
reached a client survives a ``kill -9`` of the gateway. Decisions that arrive while
a commit is under way are written together in the next one (group commit), which
keeps the cost per request low under load. SQLite runs in WAL mode with
``synchronous=FULL`` (a commit is on disk, surviving a power loss too); its files
are created readable by their owner only (0600), and never opened outside SQLite.

Outages: when the PostgreSQL connection is lost (a server restart, a network cut),
the log reconnects in the background with exponential backoff (0.1 s doubling to
1 s). Meanwhile it is *unavailable*: reads raise :class:`DecisionLogUnavailable`, and a
decision is either answered with ``logged: false`` and counted (``on_failure="serve"``)
or refused (``"refuse"``: :meth:`DecisionLog.record` raises, the gateway answers 503
with ``Retry-After``). :mod:`racer.serve.log_outage` turns this into HTTP.

Retention: with ``retention_days`` and / or ``max_rows``, decisions past retention
(and without feedback) are deleted on the log's thread at most every ``prune_every_s``
seconds, in batches of ``prune_batch_rows``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from racer.serve.audit import AUDIT_SCHEMA
from racer.serve.decision_log_postgres import (
    connect_postgres,
    connection_lost,
    import_driver,
    redact_url,
)
from racer.serve.decision_log_retention import delete_before, retention_cutoff
from racer.serve.decision_log_sqlite import connect_sqlite

if TYPE_CHECKING:
    from racer.serve.config import DecisionLogConfig

logger = logging.getLogger("racer.serve")
T = TypeVar("T")

ON_FAILURE = ("serve", "refuse")
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 1.0
FRESH_S = 1.0  # a successful database call this recent answers a readiness probe

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    route TEXT NOT NULL,
    query TEXT,
    invoked TEXT NOT NULL,
    scores TEXT NOT NULL,
    threshold DOUBLE PRECISION,
    abstained INTEGER NOT NULL,
    chosen TEXT,
    backends TEXT NOT NULL,
    cost_usd DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    owner TEXT,
    mode TEXT,
    abstain_flag INTEGER,
    uncertified TEXT,
    group_name TEXT,
    artifact_id TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    seq {serial} PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE REFERENCES decisions(id),
    created DOUBLE PRECISION NOT NULL,
    correct INTEGER,
    models_correct TEXT,
    loss DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_created ON decisions (created)
"""


@dataclass(frozen=True)
class DecisionRecord:
    """One routing decision as stored (lists and mappings are stored as JSON)."""

    id: str
    created: float
    route: str
    query: str | None
    invoked: list[str]
    scores: dict[str, float]
    threshold: float | None
    abstained: bool
    chosen: str | None
    backends: dict[str, Any]
    cost_usd: float | None
    latency_ms: float
    owner: str | None = None
    mode: str | None = None
    abstain_flag: bool | None = None
    uncertified: str | None = None  # why the answer is outside the certificate (None: within)
    group_name: str | None = None  # the request's group (per-group certificates)
    artifact_id: str | None = None  # which artifact decided (its risk monitor's feedback)


# Columns added after the first release: added to older databases when opened.
_ADDED_COLUMNS = {
    "owner": "TEXT",
    "mode": "TEXT",
    "abstain_flag": "INTEGER",
    "uncertified": "TEXT",
    "group_name": "TEXT",
    "artifact_id": "TEXT",
}


@dataclass(frozen=True)
class FeedbackRecord:
    """One piece of feedback on a decision and the misrouting loss derived from it."""

    decision_id: str
    created: float
    correct: bool | None
    models_correct: dict[str, bool] | None
    loss: float


_DECISION_COLUMNS = ", ".join(DecisionRecord.__dataclass_fields__)
_INSERT_DECISION = (
    f"INSERT INTO decisions ({_DECISION_COLUMNS}) "
    f"VALUES ({', '.join('?' * len(DecisionRecord.__dataclass_fields__))})"
)


def prompt_digest(text: str) -> str:
    """What is stored of a prompt with ``store_prompts: hash``."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


class DecisionLogUnavailable(RuntimeError):
    """The decision log cannot be reached; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LogObserver(Protocol):
    """What is told of the log's outages (the gateway's metrics)."""

    def availability(self, up: bool) -> None:
        """The log became reachable (True) or unreachable (False)."""

    def not_logged(self, refused: bool) -> None:
        """A decision could not be logged: it was refused, or answered unlogged."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _schema(serial: str) -> list[str]:
    # the audit tables too: the monitors read which artifact made older decisions there
    return [s for s in _SCHEMA.format(serial=serial).split(";") if s.strip()] + list(AUDIT_SCHEMA)


class DecisionLog:
    """Append-only store of decisions and feedback.

    Parameters
    ----------
    url : str
        ``sqlite:///PATH``, ``sqlite:///:memory:`` or ``postgresql://...``.
    store_prompts : bool or "hash", default "hash"
        What is kept of the query text: its SHA-256 (``"hash"``), the text (True) or
        nothing (False).
    on_failure : {"serve", "refuse"}, default "serve"
        What :meth:`record` does with a decision it cannot write: return False (the
        answer says ``logged: false``) or raise :class:`DecisionLogUnavailable`.
    retention_days : float, optional
        Delete decisions older than this (those with feedback are kept).
    max_rows : int, optional
        Keep at most this many decisions, the newest (those with feedback are kept).
    prune_every_s : float, default 60
        How often retention is applied, after a write.
    prune_batch_rows : int, default 10000
        At most this many decisions deleted per pass (a longer backlog takes more).

    Raises
    ------
    DecisionLogUnavailable
        When the database cannot be opened; the message names the URL (no password).

    Examples
    --------
    >>> log = DecisionLog("sqlite:///:memory:")
    >>> log.close()
    """

    def __init__(
        self,
        url: str,
        store_prompts: bool | str = "hash",
        on_failure: Literal["serve", "refuse"] = "serve",
        retention_days: float | None = None,
        max_rows: int | None = None,
        prune_every_s: float = 60.0,
        prune_batch_rows: int = 10_000,
    ):
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}.")
        self.url = url
        self.store_prompts = store_prompts
        self.on_failure = on_failure
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.prune_every_s = prune_every_s
        self.prune_batch_rows = prune_batch_rows
        self.observer: LogObserver | None = None
        self._postgres = not url.startswith("sqlite://")
        self._lock = threading.Lock()
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[bool] | None]] = []
        self._write_queued = False
        self._closing = threading.Event()
        self._down_since: float | None = None
        self._next_attempt = 0.0
        self._last_success = 0.0
        self._next_prune = time.monotonic() + prune_every_s
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="racer-log")
        try:
            self._connection, self._integrity_error, self._mark = self._worker.submit(
                self._open
            ).result()
        except BaseException:
            self._worker.shutdown(wait=False)
            raise

    @classmethod
    def from_config(cls, config: DecisionLogConfig) -> DecisionLog:
        """The log a ``decision_log`` configuration section describes."""
        return cls(
            config.url,
            config.store_prompts,
            config.on_log_failure,
            config.retention_days,
            config.max_rows,
        )

    # -- connections and outages --------------------------------------------------------
    def _open(self) -> tuple[Any, Any, str]:
        """Open the database; return the connection, its IntegrityError and placeholder."""
        if not self._postgres:
            path = self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///") else ""
            try:
                connection = connect_sqlite(path or ":memory:", _schema("INTEGER"), _ADDED_COLUMNS)
            except (sqlite3.Error, OSError) as error:
                raise DecisionLogUnavailable(
                    f"cannot open the decision log {self.url}: {_one_line(error)}"
                ) from None
            return connection, sqlite3.IntegrityError, "?"
        psycopg = import_driver()
        try:
            connection = connect_postgres(self.url, _schema("BIGSERIAL"), _ADDED_COLUMNS)
        except psycopg.Error as error:
            raise DecisionLogUnavailable(
                f"cannot connect to the decision log at {redact_url(self.url)}: "
                f"{_one_line(error)} (check that the database is running and reachable "
                "and decision_log.url in the configuration)"
            ) from None
        return connection, psycopg.IntegrityError, "%s"

    @property
    def available(self) -> bool:
        """Whether the database is connected (False during an outage)."""
        return self._connection is not None

    def retry_after_s(self) -> int:
        """Whole seconds until the next reconnection attempt (at least 1)."""
        return max(1, math.ceil(self._next_attempt - time.monotonic()))

    def outage(self) -> DecisionLogUnavailable:
        """The error to raise (or answer with) while the log is down."""
        if self._down_since is None:  # connected, but this write failed (disk full, say)
            return DecisionLogUnavailable(
                "The decision log could not store this decision; retry later."
            )
        return DecisionLogUnavailable(
            f"The decision log is unavailable (down for "
            f"{time.monotonic() - self._down_since:.1f} s, reconnecting); retry later.",
            self.retry_after_s(),
        )

    def _go_down(self, error: BaseException) -> None:
        """On the worker: drop the lost connection and reconnect in the background."""
        connection, self._connection = self._connection, None
        try:
            connection.close()
        except Exception:  # already broken: nothing to release
            pass
        self._down_since = time.monotonic()
        self._next_attempt = self._down_since + RECONNECT_FIRST_S
        meanwhile = (
            "chat completions are refused (503)"
            if self.on_failure == "refuse"
            else "answers are served with logged: false"
        )
        logger.error(
            "decision log lost its connection to %s (%s); reconnecting with backoff, "
            "meanwhile %s (on_log_failure: %s)",
            redact_url(self.url),
            _one_line(error),
            meanwhile,
            self.on_failure,
        )
        if self.observer is not None:
            self.observer.availability(False)
        threading.Thread(target=self._reconnect, name="racer-log-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        """Try to reopen the database, waiting longer after each failure."""
        delay = RECONNECT_FIRST_S
        while not self._closing.wait(max(self._next_attempt - time.monotonic(), 0.0)):
            try:
                opened = self._open()
            except (DecisionLogUnavailable, RuntimeError):
                delay = min(delay * 2, RECONNECT_MAX_S)
                self._next_attempt = time.monotonic() + delay
                continue
            try:
                self._worker.submit(self._reconnected, opened)
            except RuntimeError:  # closed meanwhile
                opened[0].close()
            return

    def _reconnected(self, opened: tuple[Any, Any, str]) -> None:
        if self._closing.is_set():
            opened[0].close()
            return
        self._connection = opened[0]
        down_for = time.monotonic() - (self._down_since or time.monotonic())
        self._down_since = None
        self._last_success = time.monotonic()
        logger.warning("decision log reconnected after %.1f s", down_for)
        if self.observer is not None:
            self.observer.availability(True)

    # -- transactions on the worker thread ----------------------------------------------
    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._mark)

    def _submit(self, job: Callable[[], T]) -> Future[T]:
        return self._worker.submit(self._in_transaction, job)

    def _in_transaction(self, job: Callable[[], T]) -> T:
        if self._connection is None:
            raise self.outage()
        try:
            result = job()
            self._connection.commit()
        except Exception as error:
            if self._postgres and connection_lost(self._connection):
                self._go_down(error)
                raise self.outage() from None
            self._connection.rollback()
            raise
        self._last_success = time.monotonic()
        return result

    def _write_pending(self) -> None:
        """On the worker: commit every waiting decision at once, then tell their waiters."""
        with self._lock:
            waiting, self._pending = self._pending, []
            self._write_queued = False
        if not waiting:
            return
        try:
            self._in_transaction(
                lambda: self._connection.cursor().executemany(
                    self._sql(_INSERT_DECISION), [row for row, _ in waiting]
                )
            )
            written = True
        except DecisionLogUnavailable:  # the outage was logged once, when it began
            written = False
        except Exception as error:  # reported to every waiter: their answers say "not logged"
            logger.error("decision log write failed: %s", error)
            written = False
        for _, future in waiting:
            if future is not None:
                future.get_loop().call_soon_threadsafe(_resolve, future, written)
        if written and time.monotonic() >= self._next_prune:
            self._prune_quietly()

    def _prune_batch(self) -> int:
        cutoff = retention_cutoff(
            self._connection, self._mark, time.time(), self.retention_days, self.max_rows
        )
        if cutoff is None:
            return 0
        return delete_before(self._connection, self._mark, cutoff, self.prune_batch_rows)

    def _prune_quietly(self) -> None:
        """On the worker: one retention pass; the next one sooner if a backlog remains."""
        if self.retention_days is None and self.max_rows is None:
            self._next_prune = math.inf
            return
        try:
            deleted = self._in_transaction(self._prune_batch)
        except Exception as error:  # retention is housekeeping: never fail a request
            logger.error("decision log retention failed: %s", error)
            deleted = 0
        backlog = deleted >= self.prune_batch_rows
        self._next_prune = time.monotonic() + (0.0 if backlog else self.prune_every_s)

    def prune(self) -> int:
        """Apply retention now (one batch, after queued writes); return decisions deleted."""
        self._worker.submit(self._write_pending)
        return self._submit(self._prune_batch).result()

    def _row(self, decision: DecisionRecord) -> tuple[Any, ...]:
        row = dict(vars(decision))  # shallow: asdict's deep copy costs ~0.4 ms a request
        if self.store_prompts == "hash" and row["query"] is not None:
            row["query"] = prompt_digest(row["query"])
        elif not self.store_prompts:
            row["query"] = None
        for key in ("invoked", "scores", "backends"):
            row[key] = json.dumps(row[key])
        row["abstained"] = int(row["abstained"])
        if row["abstain_flag"] is not None:
            row["abstain_flag"] = int(row["abstain_flag"])
        return tuple(row.values())

    def _enqueue(self, row: tuple[Any, ...], future: asyncio.Future[bool] | None) -> None:
        with self._lock:
            self._pending.append((row, future))
            queue = not self._write_queued
            self._write_queued = True
        if queue:
            self._worker.submit(self._write_pending)

    # -- the public calls ---------------------------------------------------------------
    async def record(self, decision: DecisionRecord) -> bool:
        """Write ``decision``; return once it is committed (True) or the write failed.

        A failed write is logged, never raised with ``on_failure="serve"`` (False: the
        answer then says it was not logged); with ``"refuse"`` it raises.

        Raises
        ------
        DecisionLogUnavailable
            With ``on_failure="refuse"``, when the decision could not be written.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue(self._row(decision), future)
        written = await asyncio.shield(future)
        if not written:
            refused = self.on_failure == "refuse"
            if self.observer is not None:
                self.observer.not_logged(refused)
            if refused:
                raise self.outage()
        return written

    def record_nowait(self, decision: DecisionRecord) -> None:
        """Queue ``decision`` for writing without waiting (scripts, tests)."""
        self._enqueue(self._row(decision), None)

    async def _run(self, job: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._submit(job))

    def probe(self) -> Future[bool]:
        """Whether the database answers (a recent success counts; else ``SELECT 1``)."""
        answered: Future[bool] = Future()
        if self._connection is None or time.monotonic() - self._last_success < FRESH_S:
            answered.set_result(self._connection is not None)
            return answered

        def select_one() -> bool:
            try:
                self._in_transaction(lambda: self._connection.execute("SELECT 1").fetchone())
            except Exception:
                return False
            return True

        return self._worker.submit(select_one)

    async def find(self, decision_id: str) -> DecisionRecord | None:
        """The stored decision ``decision_id``, or None."""

        def read() -> DecisionRecord | None:
            row = self._connection.execute(
                self._sql(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE id = ?"),
                (decision_id,),
            ).fetchone()
            return None if row is None else _decision_from_row(row)

        return await self._run(read)

    async def add_feedback(self, feedback: FeedbackRecord) -> bool:
        """Store ``feedback``; False when that decision already has feedback."""
        models = None if feedback.models_correct is None else json.dumps(feedback.models_correct)
        correct = None if feedback.correct is None else int(feedback.correct)
        values = (feedback.decision_id, feedback.created, correct, models, feedback.loss)
        statement = self._sql(
            "INSERT INTO feedback (decision_id, created, correct, models_correct, loss) "
            "VALUES (?, ?, ?, ?, ?)"
        )

        def write() -> bool:
            try:
                self._connection.execute(statement, values)
            except self._integrity_error:
                self._connection.rollback()
                return False
            return True

        return await self._run(write)

    async def find_feedback(self, decision_id: str) -> FeedbackRecord | None:
        """The stored feedback on ``decision_id``, or None."""

        def read() -> FeedbackRecord | None:
            row = self._connection.execute(
                self._sql(
                    "SELECT decision_id, created, correct, models_correct, loss FROM feedback "
                    "WHERE decision_id = ?"
                ),
                (decision_id,),
            ).fetchone()
            if row is None:
                return None
            correct = None if row[2] is None else bool(row[2])
            models = None if row[3] is None else json.loads(row[3])
            return FeedbackRecord(str(row[0]), float(row[1]), correct, models, float(row[4]))

        return await self._run(read)

    def feedback_losses(self, after: int = 0) -> list[tuple[int, str, float]]:
        """Every (seq, route, loss) of the feedback stored after ``seq``, oldest first.

        While the log is unavailable: an empty list (the monitors keep their state and
        catch up from ``after`` once it is back; ``/readyz`` reports the outage).
        """

        def read() -> list[tuple[int, str, float]]:
            rows = self._connection.execute(
                self._sql(
                    "SELECT f.seq, d.route, f.loss FROM feedback f JOIN decisions d "
                    "ON d.id = f.decision_id WHERE f.seq > ? ORDER BY f.seq"
                ),
                (after,),
            ).fetchall()
            return [(int(seq), str(route), float(loss)) for seq, route, loss in rows]

        try:
            return self._submit(read).result()
        except DecisionLogUnavailable:
            return []

    def artifact_feedback(
        self, after: int = 0, route: str | None = None, artifact_id: str | None = None
    ) -> list[tuple[int, str, str | None, str | None, float]]:
        """Every (seq, route, artifact id, group, loss) of the feedback stored after ``seq``.

        The artifact is the one that made the decision (decisions logged before this
        column existed take it from ``decision_audit``; None when neither knows); the
        group is the decision's (None when it had none). With ``route`` (and
        ``artifact_id``), only that route's (and that artifact's) rows. While the log is
        unavailable: an empty list, as :meth:`feedback_losses`.
        """
        where, values = ["f.seq > ?"], [after]
        if route is not None:
            where.append("d.route = ?")
            values.append(route)
            if artifact_id is not None:
                where.append("COALESCE(d.artifact_id, a.artifact_id) = ?")
                values.append(artifact_id)
        statement = self._sql(
            "SELECT f.seq, d.route, COALESCE(d.artifact_id, a.artifact_id), d.group_name, "
            "f.loss FROM feedback f JOIN decisions d ON d.id = f.decision_id "
            "LEFT JOIN decision_audit a ON a.decision_id = f.decision_id "
            f"WHERE {' AND '.join(where)} ORDER BY f.seq"
        )

        def read() -> list[tuple[int, str, str | None, str | None, float]]:
            rows = self._connection.execute(statement, tuple(values)).fetchall()
            return [
                (
                    int(seq),
                    str(name),
                    None if made_by is None else str(made_by),
                    None if group is None else str(group),
                    float(loss),
                )
                for seq, name, made_by, group, loss in rows
            ]

        try:
            return self._submit(read).result()
        except DecisionLogUnavailable:
            return []

    def count(self, table: str = "decisions") -> int:
        """Number of rows in ``table`` ("decisions" or "feedback"), after queued writes."""
        if table not in ("decisions", "feedback"):
            raise ValueError(f"table must be 'decisions' or 'feedback', got {table!r}.")
        self._worker.submit(self._write_pending)
        return self._submit(
            lambda: int(self._connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        ).result()

    # -- hook for racer.serve.audit (issue 12): its own tables, on this log's thread --
    def submit_job(self, job: Callable[[Any, str], T]) -> Future[T]:
        """Run ``job(connection, placeholder)`` on the log's thread, in a transaction,
        after the decisions queued so far (used by :mod:`racer.serve.audit`)."""
        return self._submit(lambda: job(self._connection, self._mark))

    def close(self) -> None:
        """Finish the queued writes and close the database."""
        self._worker.submit(self._write_pending)
        self._closing.set()
        self._worker.submit(self._close_connection).result()
        self._worker.shutdown(wait=True)

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _resolve(future: asyncio.Future[bool], written: bool) -> None:
    if not future.done():
        future.set_result(written)


def _decision_from_row(row: tuple[Any, ...]) -> DecisionRecord:
    values = dict(zip(DecisionRecord.__dataclass_fields__, row, strict=True))
    for key in ("invoked", "scores", "backends"):
        values[key] = json.loads(values[key])
    values["abstained"] = bool(values["abstained"])
    if values["abstain_flag"] is not None:
        values["abstain_flag"] = bool(values["abstain_flag"])
    return DecisionRecord(**values)
