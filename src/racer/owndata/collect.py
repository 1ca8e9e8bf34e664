"""Collect every model's response to every query, resumably, through the gateway's backends.

``racer collect`` sends each query of a file to each backend of a gateway
configuration (the same :class:`~racer.serve.backends.Backend` clients the gateway
uses: concurrency limit, retries with backoff and per-attempt timeout from the YAML
file) and writes one row per (query, model) in the generic long format::

    query_id, query, model, response, cost, latency_s, prompt_tokens, completion_tokens,
    error, logprobs[, reference]

``logprobs`` is the answer's token log-probabilities (a list of floats), asked for from
the backends whose configuration sets ``logprobs: true``; None where a backend returned
none (not asked, or it ignores the field). :func:`racer.data.load.load_dataset` reads
them into :attr:`racer.data.dataset.RoutingDataset.logprobs`.

Rows are appended to a JSONL journal and flushed as soon as each call returns, so a
run stopped at any point (Ctrl-C, ``kill -9``) resumes where it stopped: the rows
already in the journal are read back and their (query_id, model) pairs are never
requested again. A torn last line (the process died mid-write) is cut off. Parquet
output is written from the journal once every row is in.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "Budget",
    "CollectSummary",
    "Journal",
    "Query",
    "collect",
    "read_queries",
]

COLUMNS = (
    "query_id",
    "query",
    "model",
    "response",
    "cost",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "error",
    "logprobs",
)
CHARS_PER_TOKEN = 4
_FSYNC_EVERY_S = 1.0


@dataclass(frozen=True)
class Query:
    """One query to send: its id, its text, and the reference answer when known."""

    id: str
    text: str
    reference: str | None = None


def _text_id(text: str, seen: dict[str, int]) -> str:
    """A stable id from the text (repeated texts get ``-2``, ``-3``, ... in file order)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    seen[digest] = seen.get(digest, 0) + 1
    return digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"


def read_queries(path: str | Path) -> list[Query]:
    """Read queries from JSONL or CSV: a ``query`` column, optional ``id`` and ``reference``.

    Queries without an id get one derived from their text, so the ids (and so the
    resumption of an interrupted run) do not depend on the order of the file.

    Raises
    ------
    ValueError
        A missing ``query`` column, an empty query, a repeated id, or another format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No queries file at {str(path)!r}; pass an existing --queries.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
    else:
        raise ValueError(f"{path.name}: queries must be a .jsonl or .csv file, got {suffix!r}.")
    queries, seen_text, seen_ids = [], {}, set()
    for number, record in enumerate(records, start=1):
        text = record.get("query") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path.name}, record {number}: needs a non-empty 'query' field.")
        given = record.get("id", record.get("query_id"))
        query_id = str(given) if given not in (None, "") else _text_id(text, seen_text)
        if query_id in seen_ids:
            raise ValueError(f"{path.name}, record {number}: id {query_id!r} is repeated.")
        seen_ids.add(query_id)
        reference = record.get("reference")
        reference = None if reference in (None, "") else str(reference)
        queries.append(Query(query_id, text, reference))
    if not queries:
        raise ValueError(f"{path.name} holds no queries.")
    return queries


class Journal:
    """An append-only JSONL file of result rows, keyed by (query_id, model).

    Opening it reads the rows already there and cuts off a torn last line, so a run
    killed mid-write resumes cleanly. Each appended row is flushed to the operating
    system at once (it survives the process being killed) and synced to disk at
    most every second.

    Parameters
    ----------
    path : str or pathlib.Path
        The journal file (created with its folder when missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.torn_bytes = 0
        if self.path.exists():
            self._read_back()
        self._handle = self.path.open("a", encoding="utf-8")
        self._synced = time.monotonic()

    def _read_back(self) -> None:
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        lines = data[:keep].decode("utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(
                    f"{self.path}, line {number}: not a JSON row. The file is not a collect "
                    "journal; choose another --out."
                ) from None
            self.rows[(str(row["query_id"]), str(row["model"]))] = row
        if keep < len(data):
            self.torn_bytes = len(data) - keep
            with self.path.open("r+b") as handle:
                handle.truncate(keep)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.rows

    def append(self, row: Mapping[str, Any]) -> None:
        """Write ``row`` (replacing an earlier row with its key when compacted)."""
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.rows[(str(row["query_id"]), str(row["model"]))] = dict(row)
        if time.monotonic() - self._synced > _FSYNC_EVERY_S:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()

    def compact(self) -> None:
        """Rewrite the file with one row per key (the latest), atomically."""
        self._handle.close()
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for row in self.rows.values():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
        self._handle = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        """Flush, sync and close."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


@dataclass
class Budget:
    """A dollar budget that holds whatever the price source: a call starts only if it fits.

    Each call reserves a conservative estimate of its cost before it starts, and the
    reservation is replaced by the real cost when the call returns. The estimate is the
    largest of three: the token prices of the backend's configuration (prompt tokens at
    4 characters per token, plus the longest completion seen so far from that backend,
    or ``max_tokens`` before any); the highest dollars per token of any earlier call of
    that backend times those tokens; and the dearest earlier call of that backend. The
    last two cover ``cost_from_upstream: true``, where the configured prices are 0.
    Until a backend without token prices has answered once, its cost is unknown: such
    calls are made one at a time (a probe), each only while money is left. With prices
    from the upstream the budget therefore holds unless a call costs more, per token and
    in all, than every earlier call of its backend.

    Parameters
    ----------
    limit_usd : float or None
        The budget; None is unlimited.
    max_tokens : int
        The completion length assumed before a backend has answered once.
    """

    limit_usd: float | None
    max_tokens: int = 1024
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    exhausted: bool = False
    _longest: dict[str, int] = field(default_factory=dict)
    _rate: dict[str, float] = field(default_factory=dict)
    _dearest: dict[str, float] = field(default_factory=dict)
    probe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def estimate(self, backend: Any, prompt: str) -> float | None:
        """The reserved cost of sending ``prompt`` to ``backend``; None while unknown (a
        backend priced by its upstream that has not answered yet)."""
        if self.limit_usd is None:
            return 0.0
        config = backend.config
        completion = self._longest.get(backend.name, self.max_tokens)
        prompt_tokens = -(-len(prompt) // CHARS_PER_TOKEN)
        priced = (
            prompt_tokens * config.input_cost_per_token + completion * config.output_cost_per_token
        )
        rate = self._rate.get(backend.name)
        if rate is None:
            unpriced = config.input_cost_per_token == 0 and config.output_cost_per_token == 0
            return None if config.cost_from_upstream or unpriced else priced
        return max(priced, rate * (prompt_tokens + completion), self._dearest[backend.name])

    def reserve(self, amount: float, probe: bool = False) -> bool:
        """Reserve ``amount``; False (and exhausted from then on) when it does not fit.

        A ``probe`` (a call of unknown cost, reserved at 0) fits only while some money is
        neither spent nor reserved.
        """
        if self.exhausted:
            return False
        committed = self.spent_usd + self.reserved_usd
        if self.limit_usd is not None and (
            committed + amount > self.limit_usd or (probe and committed >= self.limit_usd)
        ):
            self.exhausted = True
            return False
        self.reserved_usd += amount
        return True

    def settle(
        self,
        backend: str,
        reserved: float,
        cost: float | None,
        completion: int | None,
        prompt_tokens: int | None = None,
    ) -> None:
        """Replace a reservation by the call's real cost (the estimate when unreported),
        and learn the backend's longest completion and highest dollars per token."""
        self.reserved_usd -= reserved
        self.spent_usd += reserved if cost is None else cost
        if completion is not None:
            self._longest[backend] = max(self._longest.get(backend, 0), completion)
        tokens = (prompt_tokens or 0) + (completion or 0)
        rate = 0.0 if cost is None or tokens == 0 else cost / tokens
        self._rate[backend] = max(self._rate.get(backend, 0.0), rate)
        self._dearest[backend] = max(self._dearest.get(backend, 0.0), cost or 0.0)


@dataclass
class CollectSummary:
    """What a run did: rows written now, rows found from earlier runs, what was left."""

    written: int
    resumed: int
    failed: int
    skipped: int
    spent_usd: float
    stopped: str | None = None

    @property
    def complete(self) -> bool:
        """Whether every (query, model) pair has a row."""
        return self.skipped == 0


async def _ask(
    backend: Any, budget: Budget, name: str, query: Query, reserved: float, extra: dict
) -> Any:
    """One call, its reservation settled by its real cost (or released on failure)."""
    body = {**extra, "messages": [{"role": "user", "content": query.text}]}
    try:
        call = await backend.complete(body)
    except BaseException:
        budget.settle(name, reserved, None, None)
        raise
    # tokens counted as the estimate counts them, so that dollars per token compare
    prompt_tokens = -(-len(query.text) // CHARS_PER_TOKEN)
    budget.settle(name, reserved, call.cost_usd, call.completion_tokens, prompt_tokens)
    return call


def _row(query: Query, call: Any) -> dict[str, Any]:
    row = {
        "query_id": query.id,
        "query": query.text,
        "model": call.backend,
        "response": call.text,
        "cost": call.cost_usd,
        "latency_s": round(call.latency_s, 6),
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "error": call.error,
        "logprobs": getattr(call, "token_logprobs", None),
    }
    if query.reference is not None:
        row["reference"] = query.reference
    return row


async def collect(
    queries: Sequence[Query],
    backends: Mapping[str, Any],
    journal: Journal,
    *,
    budget: Budget | None = None,
    request: Mapping[str, Any] | None = None,
    retry_errors: bool = False,
    deadline_s: float | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> CollectSummary:
    """Ask every backend about every query not yet in ``journal``; append each answer.

    Each backend works through its queue with as many workers as its
    ``max_concurrency``; its own retries and timeouts apply to every call.

    Parameters
    ----------
    queries : sequence of Query
        What to ask.
    backends : mapping of str to Backend
        The models to ask, by name (each with ``complete(body)``).
    journal : Journal
        Rows already collected (skipped) and where new rows go.
    budget : Budget, optional
        Stop starting calls before the dollar budget would be exceeded.
    request : mapping, optional
        Extra fields of every chat-completion body (``temperature``, ``max_tokens``).
    retry_errors : bool, default False
        Ask again the pairs whose row holds an error (the new row replaces it).
    deadline_s : float, optional
        Start no call after this many seconds.
    on_row : callable, optional
        Called with each written row (progress display).
    """
    budget = budget or Budget(None)
    extra = dict(request or {})
    started = time.monotonic()
    resumed = len(journal.rows)
    todo: dict[str, list[Query]] = {name: [] for name in backends}
    for query in queries:
        for name in backends:
            row = journal.rows.get((query.id, name))
            if row is None or (retry_errors and row.get("error")):
                todo[name].append(query)
    counts = {"written": 0, "failed": 0}
    stopped: list[str] = []

    async def worker(name: str, queue: list[Query]) -> None:
        backend = backends[name]
        while queue:
            if deadline_s is not None and time.monotonic() - started > deadline_s:
                stopped.append("deadline")
                return
            query = queue.pop(0)
            reserved = budget.estimate(backend, query.text)
            probe = reserved is None
            if probe:  # the cost is unknown: one such call at a time, while money is left
                await budget.probe_lock.acquire()
                reserved = budget.estimate(backend, query.text)
                probe = reserved is None
                if not probe:
                    budget.probe_lock.release()
            try:
                if not budget.reserve(reserved or 0.0, probe=probe):
                    queue.insert(0, query)
                    stopped.append("budget")
                    return
                call = await _ask(backend, budget, name, query, reserved or 0.0, extra)
            except BaseException:
                queue.insert(0, query)
                raise
            finally:
                if probe:
                    budget.probe_lock.release()
            row = _row(query, call)
            journal.append(row)
            counts["written"] += 1
            counts["failed"] += call.error is not None
            if on_row is not None:
                on_row(row)

    workers = [
        worker(name, queue)
        for name, queue in todo.items()
        for _ in range(min(len(queue), backends[name].config.max_concurrency))
    ]
    await asyncio.gather(*workers)
    if retry_errors and counts["written"]:
        journal.compact()
    skipped = sum(len(queue) for queue in todo.values())
    return CollectSummary(
        written=counts["written"],
        resumed=resumed,
        failed=counts["failed"],
        skipped=skipped,
        spent_usd=budget.spent_usd,
        stopped=stopped[0] if stopped and skipped else None,
    )


def pending_pairs(queries: Iterable[Query], models: Iterable[str], journal: Journal) -> int:
    """How many (query, model) pairs have no row yet."""
    models = list(models)
    return sum((q.id, m) not in journal for q in queries for m in models)


def write_parquet(rows: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """Write rows to Parquet atomically (needs pyarrow: ``pip install racer-routing[parquet]``)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError(
            'Parquet output needs pyarrow: pip install "racer-routing[parquet]", or write .jsonl.'
        ) from None
    path = Path(path)
    rows = list(rows)
    # every key of every row (pyarrow would take the first row's keys only)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.Table.from_pylist([{key: row.get(key) for key in keys} for row in rows])
    temporary = path.with_name(path.name + ".tmp")
    pq.write_table(table, temporary)
    temporary.replace(path)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL or Parquet result file."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def journal_path(out: str | Path) -> Path:
    """Where rows are appended: ``out`` itself for JSONL, a side journal for Parquet."""
    out = Path(out)
    if out.suffix.lower() == ".jsonl":
        return out
    if out.suffix.lower() == ".parquet":
        return out.with_name(out.name + ".journal.jsonl")
    raise ValueError(f"--out must end in .jsonl or .parquet, got {out.name!r}.")


def load_backend_configs(path: str | Path) -> list[Any]:
    """The validated backends of a gateway YAML file; routes are not needed (nor checked).

    ``backend_defaults`` apply as in the gateway. A file with backends and no routes
    yet is enough: nothing is calibrated before the first collection.

    Raises
    ------
    racer.serve.config.ConfigError
        A missing or invalid file, or an invalid backend (the message says which field).
    """
    from pydantic import ValidationError

    from racer.serve.config import BackendConfig, ConfigError, read_config_file

    path = Path(path)
    data = read_config_file(path)
    backends = data.get("backends")
    if not isinstance(backends, list) or not backends:
        raise ConfigError(f"{path} has no `backends:` list; add the models to collect from.")
    defaults = data.get("backend_defaults") or {}
    configs = []
    for index, backend in enumerate(backends):
        if not isinstance(backend, dict):
            raise ConfigError(f"backends.{index}: must be a mapping (name:, base_url:, ...).")
        try:
            configs.append(BackendConfig.model_validate({**defaults, **backend}))
        except ValidationError as error:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise ConfigError(f"backends.{index}: {detail}") from None
    names = [c.name for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"backend names must be unique; repeated: {repeated}")
    return configs
