"""The decision log: decisions and feedback in SQLite, in order, surviving restarts."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from racer.serve.config import DecisionLogConfig
from racer.serve.decision_log import DecisionLog, DecisionRecord, FeedbackRecord

SRC = Path(__file__).resolve().parents[1] / "src"


def decision(decision_id: str, route: str = "racer", query: str = "q") -> DecisionRecord:
    return DecisionRecord(
        id=decision_id,
        created=1.0,
        route=route,
        query=query,
        invoked=["m1", "m2"],
        scores={"m1": 0.9, "m2": 0.6},
        threshold=0.4,
        abstained=False,
        chosen="m1",
        backends={"m1": {"ok": True}},
        cost_usd=0.01,
        latency_ms=12.5,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request, tmp_path) -> str:
    """A fresh database: SQLite always; PostgreSQL when RACER_TEST_POSTGRES_URL names one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'log.sqlite3'}"
    url = os.environ.get("RACER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set RACER_TEST_POSTGRES_URL (and install psycopg) to test PostgreSQL")
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS feedback, decisions")
    return url


def test_decisions_and_feedback_are_stored_and_survive_a_restart(log_url):
    url = log_url
    log = DecisionLog(url, store_prompts=True)

    async def feedback():
        assert await log.record(decision("a")) and await log.record(decision("b", route="other"))
        first = await log.add_feedback(FeedbackRecord("b", 2.0, False, None, 1.0))
        second = await log.add_feedback(FeedbackRecord("a", 3.0, None, {"m1": True}, 0.0))
        duplicate = await log.add_feedback(FeedbackRecord("a", 4.0, True, None, 0.0))
        return first, second, duplicate, await log.find("a"), await log.find("zz")

    first, second, duplicate, found, missing = asyncio.run(feedback())
    assert (first, second, duplicate) == (True, True, False)
    assert found == decision("a") and missing is None
    log.close()
    reopened = DecisionLog(url)
    assert reopened.count() == 2 and reopened.count("feedback") == 2
    losses = reopened.feedback_losses()
    assert [(route, loss) for _, route, loss in losses] == [("other", 1.0), ("racer", 0.0)]
    assert reopened.feedback_losses(after=losses[0][0]) == losses[1:]
    reopened.close()


@pytest.mark.parametrize(
    ("store", "stored"),
    [(False, None), ("hash", "sha256:" + hashlib.sha256(b"private").hexdigest())],
)
def test_prompts_can_be_left_out_or_hashed(store, stored):
    log = DecisionLog("sqlite:///:memory:", store_prompts=store)
    log.record_nowait(decision("a", query="private"))
    assert asyncio.run(log.find("a")).query == stored
    log.close()


def test_sqlite_files_are_private_to_their_owner(tmp_path):
    path = tmp_path / "log.sqlite3"
    log = DecisionLog(f"sqlite:///{path}")
    asyncio.run(log.record(decision("a")))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    log.close()
    assert modes and all(mode == 0o600 for mode in modes.values()), modes


def test_concurrent_records_are_committed_before_they_return(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    log = DecisionLog(url)

    async def many() -> list[bool]:
        return await asyncio.gather(*(log.record(decision(f"d{i}")) for i in range(200)))

    assert all(asyncio.run(many()))
    other = sqlite3.connect(tmp_path / "log.sqlite3")  # another connection sees them all
    assert other.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 200
    other.close()
    log.close()


def test_a_postgres_url_without_the_driver_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_psycopg(name, *args, **kwargs):
        if name == "psycopg":
            raise ImportError("No module named 'psycopg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(RuntimeError, match='pip install "psycopg\\[binary\\]"'):
        DecisionLog("postgresql://user@localhost/racer")


def outside_count(path) -> int:
    """``select count(*)`` from another process, which then closes its connection."""
    script = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('SELECT COUNT(*) FROM decisions').fetchone()[0]); c.close()"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True)
    return int(done.stdout)


def open_files(path) -> list[str]:
    """This process's open files of the log (a deleted one reads "... (deleted)")."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, already closed
            continue
    return sorted(link for link in links if link.startswith(str(path)))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_an_outside_reader_closing_the_log_does_not_detach_its_wal(tmp_path):
    path = tmp_path / "log.sqlite3"
    log = DecisionLog(f"sqlite:///{path}")

    async def write(first: int, last: int) -> list[bool]:
        return await asyncio.gather(*(log.record(decision(f"d{i}")) for i in range(first, last)))

    assert all(asyncio.run(write(0, 10)))
    assert outside_count(path) == 10  # an operator's sqlite3: connect, count, close
    assert all(asyncio.run(write(10, 20)))
    assert outside_count(path) == 20  # the new commits are in the live WAL
    assert open_files(path) == [str(path), f"{path}-shm", f"{path}-wal"]
    log.close()


def test_a_kill_after_an_outside_read_keeps_every_committed_decision(tmp_path):
    path = tmp_path / "log.sqlite3"
    writer = (
        "import asyncio, os, subprocess, sys\n"
        "from racer.serve.decision_log import DecisionLog, DecisionRecord\n"
        "log = DecisionLog('sqlite:///' + sys.argv[1])\n"
        "def rows(a, b):\n"
        "    return [DecisionRecord(f'd{i}', 1.0, 'r', 'q', [], {}, None, False, None, {},"
        " None, 1.0) for i in range(a, b)]\n"
        "async def write(a, b):\n"
        "    assert all(await asyncio.gather(*(log.record(r) for r in rows(a, b))))\n"
        "asyncio.run(write(0, 10))\n"
        "subprocess.run([sys.executable, '-c', sys.argv[2], sys.argv[1]], check=True)\n"
        "asyncio.run(write(10, 30))\n"
        "os._exit(0)  # as kill -9: no close, no checkpoint\n"
    )
    script = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('SELECT COUNT(*) FROM decisions').fetchone(); c.close()"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", writer, str(path), script], check=True, env=env)
    assert outside_count(path) == 30


def at(decision_id: str, created: float) -> DecisionRecord:
    return dataclasses.replace(decision(decision_id), created=created)


def stored_ids(log: DecisionLog) -> list[str]:
    rows = log.submit_job(
        lambda connection, _: connection.execute(
            "SELECT id FROM decisions ORDER BY created"
        ).fetchall()
    ).result()
    return [row[0] for row in rows]


def test_retention_keeps_the_newest_rows_and_every_decision_with_feedback(log_url):
    log = DecisionLog(log_url, max_rows=3, prune_batch_rows=4)
    for i in range(10):
        log.record_nowait(at(f"d{i}", 1000.0 + i))
    asyncio.run(log.add_feedback(FeedbackRecord("d1", 2000.0, True, None, 0.0)))
    # six past retention (d0, d2 .. d6), four a batch; d1 has feedback: kept
    assert [log.prune(), log.prune(), log.prune()] == [4, 2, 0]
    assert stored_ids(log) == ["d1", "d7", "d8", "d9"]
    assert [loss for *_, loss in log.feedback_losses()] == [0.0]
    log.close()


def test_retention_days_deletes_older_decisions_after_writes(tmp_path):
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.sqlite3'}", retention_days=2, prune_every_s=0)
    now = time.time()
    for i, age_days in enumerate([5, 3, 1, 0]):
        log.record_nowait(at(f"d{i}", now - age_days * 86_400))

    async def one_more() -> bool:
        return await log.record(at("new", now))

    assert asyncio.run(one_more())  # the pass after this write applies retention
    assert stored_ids(log) == ["d2", "d3", "new"]
    log.close()


def test_retention_settings_are_validated():
    with pytest.raises(ValidationError, match="greater than 0"):
        DecisionLogConfig(retention_days=0)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        DecisionLogConfig(max_rows=0)
    assert DecisionLogConfig().store_prompts == "hash"  # prompts are not kept by default
