"""racer dataset --from-log: only decisions whose prompt text was kept are exported."""

from __future__ import annotations

import asyncio
import sqlite3

from racer.owndata.dataset_export import export_audited
from racer.serve.audit import AUDIT_SCHEMA
from racer.serve.decision_log import DecisionLog, DecisionRecord


def audited_decision(log: DecisionLog, decision_id: str) -> None:
    record = DecisionRecord(decision_id, 1.0, "r", "what is 2+2?", ["m"], {}, None, False,
                            "m", {}, None, 1.0)  # fmt: skip
    asyncio.run(log.record(record))

    def audit(connection, mark: str) -> None:
        for statement in AUDIT_SCHEMA:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO decision_audit VALUES (?, 'r', 1.0, 'a1', 1, '{}')".replace("?", mark),
            (decision_id,),
        )
        connection.execute(
            "INSERT INTO audit_responses (decision_id, model, response, background) "
            "VALUES (?, 'm', '4', 0)".replace("?", mark),
            (decision_id,),
        )

    log.submit_job(audit).result()


def test_hashed_prompts_are_not_exported_as_queries(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    hashed = DecisionLog(url)  # the default: store_prompts "hash"
    audited_decision(hashed, "hashed")
    hashed.close()
    text = DecisionLog(url, store_prompts=True)
    audited_decision(text, "kept")
    text.close()
    rows = export_audited(url)
    assert [(row["query_id"], row["query"]) for row in rows] == [("kept", "what is 2+2?")]


OLD_AUDIT_RESPONSES = """CREATE TABLE audit_responses (
    decision_id TEXT NOT NULL, model TEXT NOT NULL, response TEXT, cost_usd DOUBLE PRECISION,
    latency_s DOUBLE PRECISION, prompt_tokens INTEGER, completion_tokens INTEGER, error TEXT,
    background INTEGER NOT NULL, PRIMARY KEY (decision_id, model))"""


def test_logprobs_are_exported_and_an_older_log_gains_their_column(tmp_path):
    """A log from before the ``logprobs`` column exports None; the gateway's auditor adds
    the column, and the token logprobs stored there come back as lists."""
    from racer.serve.audit import Auditor

    path = tmp_path / "log.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute(OLD_AUDIT_RESPONSES)
    connection.close()
    url = f"sqlite:///{path}"
    log = DecisionLog(url, store_prompts=True)
    audited_decision(log, "old")
    log.close()
    assert [row["logprobs"] for row in export_audited(url)] == [None]

    log = DecisionLog(url, store_prompts=True)
    Auditor({}, log)  # adds audit_responses.logprobs
    audited_decision(log, "new")
    log.submit_job(
        lambda connection, mark: connection.execute(
            "UPDATE audit_responses SET logprobs = '[-0.25, -1.5]' WHERE decision_id = 'new'"
        )
    ).result()
    log.close()
    rows = {row["query_id"]: row["logprobs"] for row in export_audited(url)}
    assert rows == {"old": None, "new": [-0.25, -1.5]}
