"""Export a gateway's audited decisions as a routing dataset (``racer dataset --from-log``).

Audited decisions (see :mod:`racer.serve.audit`) are an i.i.d. sample of the live
traffic with every model's response, which is what calibration needs. Each becomes
one row per model in the generic long format (``query_id`` is the decision id)::

    query_id, query, model, response, cost, latency_s, prompt_tokens,
    completion_tokens, error, logprobs, route, artifact_id, created, label, label_source

``logprobs`` is each answer's token log-probabilities (a list of floats; None where the
backend returned none: its configuration did not set ``logprobs: true``, it ignores the
field, or the log predates the column), as :func:`racer.data.load.load_dataset` reads
them back into :attr:`racer.data.dataset.RoutingDataset.logprobs`.

``label`` comes from a ``racer grade`` output (``--grades``, joined on
(query_id, model)) or else from the feedback's ``models_correct``; otherwise it is
left unknown (grade the export with ``racer grade`` before calibrating). Only
audited decisions are exported: feedback on the others covers the invoked models
only and is usable for monitoring, not for calibration.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["export_audited", "parse_since"]


def parse_since(text: str | None) -> float | None:
    """A Unix time from ISO 8601 (UTC when no zone is given) or a number of seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither ISO 8601 (2026-12-01T12:00) nor Unix seconds."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _connect(url: str) -> tuple[Any, str]:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise FileNotFoundError(f"--from-log {url}: no SQLite decision log at {path}.")
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True), "?"
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg
        except ImportError:
            raise RuntimeError(
                'Reading a PostgreSQL log needs the driver: pip install "psycopg[binary]".'
            ) from None
        return psycopg.connect(url), "%s"
    raise ValueError(f"--from-log must be sqlite:///PATH or postgresql://..., got {url!r}.")


def _has_audit_tables(connection: Any) -> bool:
    try:
        connection.execute("SELECT 1 FROM decision_audit WHERE 1 = 0").fetchall()
    except Exception:  # noqa: BLE001 - sqlite3 and psycopg raise different classes
        connection.rollback()
        return False
    return True


def _has_logprobs_column(connection: Any) -> bool:
    """Whether the log's ``audit_responses`` has ``logprobs`` (older logs do not)."""
    try:
        connection.execute("SELECT logprobs FROM audit_responses WHERE 1 = 0").fetchall()
    except Exception:  # noqa: BLE001 - sqlite3 and psycopg raise different classes
        connection.rollback()
        return False
    return True


def _logprobs(text: str | None) -> list[float] | None:
    return None if text is None else [float(value) for value in json.loads(text)]


def _grades(path: Path | None) -> dict[tuple[str, str], Any]:
    if path is None:
        return {}
    from racer.owndata.collect import read_rows

    if not Path(path).is_file():
        raise FileNotFoundError(f"--grades {path}: no such file.")
    return {
        (str(r["query_id"]), str(r["model"])): r.get("label")
        for r in read_rows(path)
        if r.get("label") is not None
    }


def export_audited(
    url: str,
    *,
    since: float | None = None,
    route: str | None = None,
    grades: str | Path | None = None,
) -> list[dict[str, Any]]:
    """The audited decisions of the log at ``url``, one row per (decision, model).

    Parameters
    ----------
    url : str
        ``sqlite:///PATH`` or ``postgresql://...``.
    since : float, optional
        Only decisions created at or after this Unix time.
    route : str, optional
        Only this route's decisions.
    grades : str or pathlib.Path, optional
        A ``racer grade`` output whose labels take precedence over feedback.

    Returns
    -------
    list of dict
        Rows ordered by decision time then model; decisions logged without their
        query text (``store_prompts: false`` or ``hash``, the default) cannot be used
        and are left out.
    """
    graded = _grades(Path(grades) if grades is not None else None)
    connection, mark = _connect(url)
    try:
        if not _has_audit_tables(connection):
            return []
        conditions = ["a.audited = 1", "d.query IS NOT NULL", f"d.query NOT LIKE {mark}"]
        params: list[Any] = ["sha256:%"]  # store_prompts: hash
        if since is not None:
            conditions.append(f"d.created >= {mark}")
            params.append(since)
        if route is not None:
            conditions.append(f"d.route = {mark}")
            params.append(route)
        where = " AND ".join(conditions)
        logprobs = "r.logprobs" if _has_logprobs_column(connection) else "NULL"
        records = connection.execute(
            "SELECT d.id, d.query, d.route, d.created, a.artifact_id, r.model, r.response, "
            f"r.cost_usd, r.latency_s, r.prompt_tokens, r.completion_tokens, r.error, {logprobs}, "
            "f.models_correct FROM decisions d "
            "JOIN decision_audit a ON a.decision_id = d.id "
            "JOIN audit_responses r ON r.decision_id = d.id "
            f"LEFT JOIN feedback f ON f.decision_id = d.id WHERE {where} "
            "ORDER BY d.created, d.id, r.model",
            params,
        ).fetchall()
    finally:
        connection.close()
    rows = []
    for (
        decision_id, query, route_name, created, artifact_id, model, response, cost,
        latency_s, prompt_tokens, completion_tokens, error, token_logprobs, models_correct,
    ) in records:  # fmt: skip
        label, source = graded.get((str(decision_id), str(model))), "grades"
        if label is None and models_correct:
            verdicts = json.loads(models_correct)
            label = None if model not in verdicts else int(bool(verdicts[model]))
            source = "feedback"
        rows.append(
            {
                "query_id": str(decision_id),
                "query": query,
                "model": model,
                "response": response,
                "cost": cost,
                "latency_s": latency_s,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "error": error,
                "logprobs": _logprobs(token_logprobs),
                "route": route_name,
                "artifact_id": artifact_id,
                "created": created,
                "label": label,
                "label_source": source if label is not None else None,
            }
        )
    return rows
