"""Opening the SQLite decision log without ever touching the file outside SQLite.

SQLite's locks on a database file are POSIX advisory locks, which belong to the
process and are all released when *any* descriptor of that file in the process is
closed. Opening and closing the file beside an open connection (to set its mode, say)
silently drops the connection's locks: the next outside reader then believes it is the
last connection, checkpoints and unlinks the ``-wal`` and ``-shm`` files, and every
later commit goes into a deleted file (lost on ``kill -9``, invisible to others). So
the file is created 0600 *before* any connection exists, with ``O_EXCL`` so that an
existing file (possibly open elsewhere in this process) is never opened; an existing
file's mode is set by path (``chmod`` opens no descriptor). SQLite creates ``-wal``
and ``-shm`` with the database file's mode.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path


def create_private(path: Path) -> None:
    """Make ``path`` an owner-only (0600) file, creating it empty when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        os.chmod(path, 0o600)
    for companion in (path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        if companion.exists():
            os.chmod(companion, 0o600)


def connect_sqlite(
    path: str, schema: Iterable[str], added_columns: Mapping[str, str]
) -> sqlite3.Connection:
    """Open (creating when missing, 0600) the log at ``path`` in WAL mode with ``schema``.

    ``added_columns`` (name -> type) are added to an older ``decisions`` table that lacks
    them. ``synchronous=FULL``: a commit is on disk when it returns (power loss included).
    """
    if path != ":memory:":
        create_private(Path(path))
    connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    for statement in schema:
        connection.execute(statement)
    present = {row[1] for row in connection.execute("PRAGMA table_info(decisions)")}
    for column, kind in added_columns.items():
        if column not in present:
            connection.execute(f"ALTER TABLE decisions ADD COLUMN {column} {kind}")
    connection.commit()
    return connection
