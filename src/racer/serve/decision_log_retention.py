"""Retention of the decision log: which decisions are past it, deleted in small batches.

A decision with feedback is always kept: the risk monitors are rebuilt from the stored
feedback (on restart, in every worker), so deleting it would silently reset them.
"""

from __future__ import annotations

from typing import Any

SECONDS_PER_DAY = 86_400.0


def retention_cutoff(
    connection: Any,
    mark: str,
    now: float,
    retention_days: float | None,
    max_rows: int | None,
) -> float | None:
    """The creation time before which decisions are past retention (None: none are).

    ``max_rows`` keeps the ``max_rows`` newest decisions (more when creation times tie).
    """
    cutoffs = []
    if retention_days is not None:
        cutoffs.append(now - retention_days * SECONDS_PER_DAY)
    if max_rows is not None:
        row = connection.execute(
            f"SELECT created FROM decisions ORDER BY created DESC LIMIT 1 OFFSET {mark}",
            (max_rows - 1,),
        ).fetchone()
        if row is not None:
            cutoffs.append(float(row[0]))
    return max(cutoffs) if cutoffs else None


def delete_before(connection: Any, mark: str, cutoff: float, batch_rows: int) -> int:
    """Delete up to ``batch_rows`` of the oldest decisions created before ``cutoff`` that
    have no feedback; return how many were deleted."""
    cursor = connection.execute(
        "DELETE FROM decisions WHERE id IN (SELECT d.id FROM decisions d "
        f"WHERE d.created < {mark} AND NOT EXISTS "
        "(SELECT 1 FROM feedback f WHERE f.decision_id = d.id) "
        f"ORDER BY d.created LIMIT {mark})",
        (cutoff, batch_rows),
    )
    return int(cursor.rowcount)
