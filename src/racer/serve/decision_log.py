"""The decision log: every routing decision and every piece of feedback, in a database.

SQLite through the standard library by default; a ``postgresql://`` URL uses the
optional ``psycopg`` driver (``pip install "psycopg[binary]"``). All database work
runs on one worker thread, in submission order, so the event loop never waits on a
disk write.

Durability: :meth:`DecisionLog.record` returns only once the decision is committed,
and the gateway awaits it before the answer leaves, so a decision whose answer
reached a client survives a ``kill -9`` of the gateway. Decisions that arrive while
a commit is under way are written together in the next one (group commit), which
keeps the cost per request low under load. SQLite runs in WAL mode with
``synchronous=FULL`` (a commit is on disk, surviving a power loss too); its files
are created readable by their owner only (0600).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import threading
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
    latency_ms DOUBLE PRECISION,
    owner TEXT,
    mode TEXT,
    abstain_flag INTEGER,
    uncertified TEXT
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
    owner: str | None = None
    mode: str | None = None
    abstain_flag: bool | None = None
    uncertified: str | None = None  # why the answer is outside the certificate (None: within)


# Columns added after the first release: added to older databases when opened.
_ADDED_COLUMNS = {"owner": "TEXT", "mode": "TEXT", "abstain_flag": "INTEGER", "uncertified": "TEXT"}


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


def _private_files(path: str) -> None:
    """Create the database file (and chmod its WAL companions) readable by the owner only."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


def prompt_digest(text: str) -> str:
    """What is stored of a prompt with ``store_prompts: hash``."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def _connect(url: str) -> tuple[Any, Any, str]:
    """Open ``url``; return the connection, its IntegrityError class and its placeholder."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _private_files(path)
        connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA.format(serial="INTEGER"))
        present = {row[1] for row in connection.execute("PRAGMA table_info(decisions)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                connection.execute(f"ALTER TABLE decisions ADD COLUMN {column} {kind}")
        connection.commit()
        if path != ":memory:":
            _private_files(path)
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
    for column, kind in _ADDED_COLUMNS.items():
        connection.execute(f"ALTER TABLE decisions ADD COLUMN IF NOT EXISTS {column} {kind}")
    connection.commit()
    return connection, psycopg.IntegrityError, "%s"


class DecisionLog:
    """Append-only store of decisions and feedback.

    Parameters
    ----------
    url : str
        ``sqlite:///PATH``, ``sqlite:///:memory:`` or ``postgresql://...``.
    store_prompts : bool or "hash", default True
        Whether the query text is kept (``"hash"``: its SHA-256 only).

    Examples
    --------
    >>> log = DecisionLog("sqlite:///:memory:")
    >>> log.close()
    """

    def __init__(self, url: str, store_prompts: bool | str = True):
        self.store_prompts = store_prompts
        self._lock = threading.Lock()
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[bool] | None]] = []
        self._write_queued = False
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
        return self._worker.submit(self._in_transaction, job)

    def _in_transaction(self, job: Callable[[], T]) -> T:
        try:
            result = job()
        except BaseException:
            self._connection.rollback()
            raise
        self._connection.commit()
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
        except Exception as error:  # reported to every waiter: their answers say "not logged"
            logger.error("decision log write failed: %s", error)
            written = False
        for _, future in waiting:
            if future is not None:
                future.get_loop().call_soon_threadsafe(_resolve, future, written)

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

    async def record(self, decision: DecisionRecord) -> bool:
        """Write ``decision``; return once it is committed (True) or the write failed (False).

        A failed write is logged, never raised: the answer then says it was not logged.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue(self._row(decision), future)
        return await asyncio.shield(future)

    def record_nowait(self, decision: DecisionRecord) -> None:
        """Queue ``decision`` for writing without waiting (scripts, tests)."""
        self._enqueue(self._row(decision), None)

    async def _run(self, job: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._submit(job))

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
        """Every (seq, route, loss) of the feedback stored after ``seq``, oldest first."""

        def read() -> list[tuple[int, str, float]]:
            rows = self._connection.execute(
                self._sql(
                    "SELECT f.seq, d.route, f.loss FROM feedback f JOIN decisions d "
                    "ON d.id = f.decision_id WHERE f.seq > ? ORDER BY f.seq"
                ),
                (after,),
            ).fetchall()
            return [(int(seq), str(route), float(loss)) for seq, route, loss in rows]

        return self._submit(read).result()

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
        self._worker.submit(self._connection.close).result()
        self._worker.shutdown(wait=True)


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
