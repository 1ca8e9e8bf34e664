"""A route's risk monitor belongs to its artifact: it survives reloads of the same artifact
and restarts, and a new artifact starts from the feedback on its own decisions."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from serve_fakes import ADMIN, AUTH, MODELS, answering, chat

from racer.artifact import save_artifact
from racer.estimator import RACER
from racer.routers import make_router
from racer.serve.app import create_app
from racer.serve.backends import Backend
from racer.serve.config import load_config
from racer.serve.decision_log import DecisionLog
from racer.serve.gateway import Gateway
from racer.serve.reload import AbortedRestartAlarm, artifact_id_on_disk, reload_from_file
from racer.serve.route import load_route


def tiny_artifact(folder: Path, alpha: float) -> Path:
    """A prior router over MODELS, calibrated at ``alpha`` on 200 synthetic queries."""
    queries = [f"question {i}" for i in range(200)]
    labels = np.random.default_rng(0).random((200, 3)) < [0.8, 0.6, 0.4]
    router = make_router("prior").fit(queries, labels, model_names=list(MODELS))
    scores = router.predict_proba(queries)
    racer = RACER(alpha=alpha, delta=0.1).fit(scores, labels, model_names=list(MODELS))
    return save_artifact(folder, router, racer)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    return tiny_artifact(folder / "first", 0.1), tiny_artifact(folder / "second", 0.2)


def write_config(folder: Path, artifact: Path) -> Path:
    config = {
        "backend_defaults": {"retries": 0},
        "backends": [{"name": m, "base_url": f"http://{m}.invalid/v1"} for m in MODELS],
        "routes": [{"name": "racer", "artifact": str(artifact)}],
        "auth": {"api_keys": ["gateway-test-key"], "admin_keys": ["gateway-admin-key"]},
        "decision_log": {"url": f"sqlite:///{folder / 'decisions.sqlite3'}"},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config_path: Path) -> tuple[Gateway, httpx.AsyncClient]:
    config = load_config(config_path)
    backends = {
        b.name: Backend(b, transport=httpx.MockTransport(answering(f"{b.name} says B")))
        for b in config.backends
    }
    routes = {r.name: load_route(r, config.monitor.delta) for r in config.routes}
    gateway = Gateway(config, routes, backends, DecisionLog(config.decision_log.url))
    app = create_app(gateway, frozenset(["gateway-test-key"]), frozenset(["gateway-admin-key"]))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=AUTH
    )
    return gateway, client


async def answer_and_judge(client: httpx.AsyncClient, n: int, correct: bool) -> list[str]:
    ids = []
    for i in range(n):
        ids.append((await client.post("/v1/chat/completions", json=chat(f"q{i}"))).json()["id"])
        response = await client.post("/v1/feedback", json={"id": ids[-1], "correct": correct})
        assert response.status_code == 200
    return ids


async def reload(client: httpx.AsyncClient, artifact: Path) -> dict:
    body = {"route": "racer", "artifact": str(artifact)}
    response = await client.post("/admin/reload", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def monitor(gateway: Gateway) -> tuple[int, bool]:
    state = gateway.routes["racer"].monitor.state()
    return state["n_feedback"], state["alarm"]


@pytest.mark.asyncio
async def test_an_alarm_survives_reloads_of_its_artifact_and_a_new_artifact_starts_afresh(
    artifacts, tmp_path
):
    first, second = artifacts
    first_id, second_id = artifact_id_on_disk(first), artifact_id_on_disk(second)
    config_path = write_config(tmp_path, first)
    gateway, client = start(config_path)
    await answer_and_judge(client, 15, correct=False)
    assert monitor(gateway) == (15, True)
    serving = gateway.routes["racer"]
    pending = (await client.post("/v1/chat/completions", json=chat("p"))).json()["id"]

    same = await reload(client, first)  # POST /admin/reload of the serving artifact
    copied = await reload(client, shutil.copytree(first, tmp_path / "copy"))  # same id
    assert (same["changed"], same["monitor"], copied["changed"]) == (False, "kept", False)
    assert reload_from_file(gateway, config_path) == {"racer": "unchanged"}  # SIGHUP
    assert gateway.routes["racer"] is serving and monitor(gateway) == (15, True)

    changed = await reload(client, second)
    assert (changed["changed"], changed["monitor"]) == (True, "new")
    assert (changed["previous_artifact_id"], changed["artifact_id"]) == (first_id, second_id)
    assert monitor(gateway) == (0, False)
    metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert f'racer_route_artifact_info{{artifact_id="{second_id}",route="racer"}} 1.0' in metrics
    assert first_id not in metrics
    health = (await client.get("/healthz", headers=ADMIN)).json()
    assert health["routes"]["racer"]["artifact_id"] == second_id

    # Feedback on the new artifact's decisions counts; on the old one's, for the old one.
    late = await client.post("/v1/feedback", json={"id": pending, "correct": False})
    assert late.status_code == 200 and monitor(gateway) == (0, False)
    await answer_and_judge(client, 1, correct=True)
    assert monitor(gateway) == (1, False)

    back = await reload(client, first)  # the first artifact's monitor, rebuilt from the log
    assert (back["monitor"], monitor(gateway)) == ("new", (16, True))
    await client.aclose()
    await gateway.aclose()

    restarted, client = start(config_path)  # a restart serves the configured first artifact
    assert monitor(restarted) == (16, True)
    await client.aclose()
    await restarted.aclose()
    restarted, client = start(write_config(tmp_path, second))
    assert monitor(restarted) == (1, False)
    await client.aclose()
    await restarted.aclose()


def test_an_aborted_worker_restart_is_logged_as_an_error(caplog):
    record = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1,
        "New child process [12] was not ready in time; keeping worker [7] and aborting the "
        "restart.", None, None,
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="racer.serve"):
        assert AbortedRestartAlarm().filter(record)
        assert AbortedRestartAlarm().filter(logging.makeLogRecord({"msg": "Started"}))
    errors = [r for r in caplog.records if r.name == "racer.serve"]
    assert len(errors) == 1 and "SIGHUP reload NOT done" in errors[0].getMessage()


class LateCommits:
    """A log whose rows become visible out of seq order (two writers committing)."""

    def __init__(self):
        self.visible: list[tuple[int, str, str | None, str | None, float]] = []

    def artifact_feedback(self, after=0, route=None, artifact_id=None):
        return [r for r in sorted(self.visible) if r[0] > after]


def test_feedback_committed_out_of_order_is_applied_once_late_not_lost():
    from racer.serve.monitor import RiskMonitor
    from racer.serve.monitor_sync import MonitorSync

    class Served:
        name, artifact_id = "racer", "a1"
        monitor = RiskMonitor(0.1)

        def observe_loss(self, loss, group):
            self.monitor.update(loss)

    log, route = LateCommits(), Served()
    sync = MonitorSync(log)
    # seq 2 not committed yet
    log.visible = [(1, "racer", "a1", None, 1.0), (3, "racer", "a1", None, 1.0)]
    assert sync.sync({"racer": route}) == 2
    log.visible.append((2, "racer", "a1", None, 0.0))  # seq 2 commits after seq 3
    assert sync.sync({"racer": route}) == 1
    assert sync.sync({"racer": route}) == 0
    assert (route.monitor.n, route.monitor.total_loss) == (3, 2.0)


def group_feedback(gateway: Gateway, group: str) -> int | None:
    found = gateway.routes["racer"].group_monitors.get(group)
    return None if found is None else found.state()["n_feedback"]


@pytest.mark.asyncio
async def test_group_monitors_belong_to_the_artifact_as_the_route_monitor(artifacts, tmp_path):
    first, second = artifacts
    config_path = write_config(tmp_path, first)
    gateway, client = start(config_path)
    for i in range(3):
        body = chat(f"g{i}", metadata={"racer_group": "hard"})
        decided = (await client.post("/v1/chat/completions", json=body)).json()["id"]
        response = await client.post("/v1/feedback", json={"id": decided, "correct": False})
        assert response.status_code == 200
    hard = gateway.routes["racer"].group_monitors["hard"]
    assert (group_feedback(gateway, "hard"), monitor(gateway)) == (3, (3, False))

    same = load_route(gateway.routes["racer"].config, gateway.config.monitor.delta)
    assert gateway.monitors.install(gateway.routes, same)  # the same artifact: kept
    assert gateway.routes["racer"].group_monitors["hard"] is hard

    await reload(client, second)  # a new certificate: no feedback on its decisions yet
    assert (group_feedback(gateway, "hard"), monitor(gateway)) == (None, (0, False))
    back = await reload(client, first)  # rebuilt from the log, per group too
    assert back["monitor"] == "new" and group_feedback(gateway, "hard") == 3
    metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert 'racer_group_monitor_feedback{group="hard",route="racer"} 3.0' in metrics
    await client.aclose()
    await gateway.aclose()

    restarted, client = start(config_path)
    assert group_feedback(restarted, "hard") == 3
    await client.aclose()
    await restarted.aclose()
