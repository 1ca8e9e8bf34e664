"""The decision log: every routing decision and every piece of feedback, in a database.

SQLite through the standard library by default; a ``postgresql://`` URL uses the
optional ``psycopg`` driver (``pip install "psycopg[binary]"``). All database work
runs on one worker thread, in submission order, so the event loop never waits on a
disk write. Decisions are written in batches (every ``flush_interval_s`` or
``batch_size`` decisions, and before any other database work), which keeps the
gateway's per-request cost low; a crash loses at most the last unwritten batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger("racer.serve")
T = TypeVar("T")

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
    latency_ms DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS feedback (
    seq {serial} PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE REFERENCES decisions(id),
    created DOUBLE PRECISION NOT NULL,
    correct INTEGER,
    models_correct TEXT,
    loss DOUBLE PRECISION NOT NULL
)
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


def _connect(url: str) -> tuple[Any, Any, str]:
    """Open ``url``; return the connection, its IntegrityError class and its placeholder."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA.format(serial="INTEGER"))
        return connection, sqlite3.IntegrityError, "?"
    try:
        import psycopg
    except ImportError:
        raise RuntimeError(
            "decision_log.url is a PostgreSQL URL but the driver is not installed; "
            'install it with: pip install "psycopg[binary]" (or use a sqlite:/// URL).'
        ) from None
    connection = psycopg.connect(url)
    for statement in _SCHEMA.format(serial="BIGSERIAL").split(";"):
        connection.execute(statement)
    connection.commit()
    return connection, psycopg.IntegrityError, "%s"


class DecisionLog:
    """Append-only store of decisions and feedback.

    Parameters
    ----------
    url : str
        ``sqlite:///PATH``, ``sqlite:///:memory:`` or ``postgresql://...``.
    store_prompts : bool, default True
        Whether the query text is kept.
    flush_interval_s : float, default 0.05
        The longest a decision waits before it is written.
    batch_size : int, default 256
        Write at once when this many decisions wait.

    Examples
    --------
    >>> log = DecisionLog("sqlite:///:memory:")
    >>> log.close()
    """

    def __init__(
        self,
        url: str,
        store_prompts: bool = True,
        flush_interval_s: float = 0.05,
        batch_size: int = 256,
    ):
        self.store_prompts = store_prompts
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self._pending: list[tuple[Any, ...]] = []
        self._flush_scheduled = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="racer-log")
        try:
            self._connection, self._integrity_error, self._mark = self._worker.submit(
                _connect, url
            ).result()
        except BaseException:
            self._worker.shutdown(wait=False)
            raise

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._mark)

    def _submit(self, job: Callable[[], T]) -> Future[T]:
        self._flush()
        return self._worker.submit(self._in_transaction, job)

    def _in_transaction(self, job: Callable[[], T]) -> T:
        try:
            result = job()
        except BaseException:
            self._connection.rollback()
            raise
        self._connection.commit()
        return result

    def _flush(self) -> None:
        """Queue the waiting decisions as one write."""
        self._flush_scheduled = False
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        future = self._worker.submit(
            self._in_transaction,
            lambda: self._connection.cursor().executemany(self._sql(_INSERT_DECISION), rows),
        )
        future.add_done_callback(_log_failure)

    async def _run(self, job: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._submit(job))

    def record(self, decision: DecisionRecord) -> None:
        """Queue ``decision`` for writing; a failed write is logged, never raised."""
        row = dict(vars(decision))  # shallow: asdict's deep copy costs ~0.4 ms a request
        if not self.store_prompts:
            row["query"] = None
        for key in ("invoked", "scores", "backends"):
            row[key] = json.dumps(row[key])
        row["abstained"] = int(row["abstained"])
        self._pending.append(tuple(row.values()))
        if len(self._pending) >= self.batch_size:
            self._flush()
        elif not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop: write now
                self._flush()
                return
            loop.call_later(self.flush_interval_s, self._flush)
            self._flush_scheduled = True

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

    def feedback_losses(self) -> list[tuple[str, float]]:
        """Every (route, loss) of the stored feedback, oldest first (to rebuild monitors)."""

        def read() -> list[tuple[str, float]]:
            rows = self._connection.execute(
                "SELECT d.route, f.loss FROM feedback f JOIN decisions d "
                "ON d.id = f.decision_id ORDER BY f.seq"
            ).fetchall()
            return [(str(route), float(loss)) for route, loss in rows]

        return self._submit(read).result()

    def count(self, table: str = "decisions") -> int:
        """Number of rows in ``table`` ("decisions" or "feedback"), after queued writes."""
        if table not in ("decisions", "feedback"):
            raise ValueError(f"table must be 'decisions' or 'feedback', got {table!r}.")
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
        self._flush()
        self._worker.submit(self._connection.close).result()
        self._worker.shutdown(wait=True)


def _decision_from_row(row: tuple[Any, ...]) -> DecisionRecord:
    values = dict(zip(DecisionRecord.__dataclass_fields__, row, strict=True))
    for key in ("invoked", "scores", "backends"):
        values[key] = json.loads(values[key])
    values["abstained"] = bool(values["abstained"])
    return DecisionRecord(**values)


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        logger.error("decision log write failed: %s", error)
