"""Opening the PostgreSQL decision log, and telling a lost connection from a failed query.

Needs the optional ``psycopg`` driver (``pip install "psycopg[binary]"``), imported
only when a ``postgresql://`` URL is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

CONNECT_TIMEOUT_S = 5


def redact_url(url: str) -> str:
    """``url`` without its password (dropped from the user part, masked in the query)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*"
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def import_driver() -> Any:
    """The ``psycopg`` module, or a RuntimeError that says how to install it."""
    try:
        import psycopg
    except ImportError:
        raise RuntimeError(
            "decision_log.url is a PostgreSQL URL but the driver is not installed; "
            'install it with: pip install "psycopg[binary]" (or use a sqlite:/// URL).'
        ) from None
    return psycopg


def connect_postgres(url: str, schema: Iterable[str], added_columns: Mapping[str, str]) -> Any:
    """Connect to ``url`` and create ``schema`` (and ``added_columns``) when missing."""
    psycopg = import_driver()
    connection = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
    try:
        for statement in schema:
            connection.execute(statement)
        for column, kind in added_columns.items():
            connection.execute(f"ALTER TABLE decisions ADD COLUMN IF NOT EXISTS {column} {kind}")
        connection.commit()
    except BaseException:
        connection.close()
        raise
    return connection


def connection_lost(connection: Any) -> bool:
    """Whether ``connection`` can no longer be used (the server went away, say)."""
    return bool(connection.closed or connection.broken)
