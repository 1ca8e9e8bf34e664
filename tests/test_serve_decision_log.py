"""The decision log: decisions and feedback in SQLite, in order, surviving restarts."""

from __future__ import annotations

import asyncio
import builtins
import os

import pytest

from racer.serve.decision_log import DecisionLog, DecisionRecord, FeedbackRecord


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
    log = DecisionLog(url)
    log.record(decision("a"))
    log.record(decision("b", route="other"))

    async def feedback():
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
    assert reopened.feedback_losses() == [("other", 1.0), ("racer", 0.0)]
    reopened.close()


def test_prompts_can_be_left_out():
    log = DecisionLog("sqlite:///:memory:", store_prompts=False)
    log.record(decision("a", query="private"))
    assert asyncio.run(log.find("a")).query is None
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
