"""Reload a route's artifact without downtime: ``POST /admin/reload`` or ``SIGHUP``.

(The HTTP route is :mod:`racer.serve.admin`; this module is what it and SIGHUP do.)

Only what changed is reloaded: an artifact whose id (the sha256 of its metadata, which
covers its router, calibration and certificate) is the one serving is left alone,
and the answer says ``changed: false``. A changed artifact is loaded and checked
before anything changes: it must load (format, version, checksums), route between
models that all have backends, hold a sane calibration (alpha and delta in (0, 1), a
finite threshold) and give a valid set for a probe query. A refused artifact leaves
the old one serving. An accepted one replaces the route in one assignment: requests
already decided keep the route object they started with and finish on the old
artifact; the next requests use the new one. The decision log records which
artifact made each decision (``decisions.artifact_id``).

Risk monitors (:mod:`racer.serve.monitor_sync`): a route's monitors (route-wide
and per group) hold the feedback on its artifact's decisions. They survive reloads of
the same artifact and restarts (an alarm stays raised); a new artifact, a new
certificate, starts from the feedback on its own decisions (none, the first time it
serves).

Shared reloads: with ``racer serve --workers N``, and between instances that share
one PostgreSQL decision log (``decision_log.share_reloads``), a reload applied by one
process is published in the log's database (table ``route_reloads``); every other
process polls that table (about once a second, :class:`ReloadFeed`), applies the
reload itself, checking it the same way, and brings its monitors up to the shared
feedback. ``SIGHUP`` to a single-process ``racer serve`` reloads the routes whose
artifact changed and publishes them. ``SIGHUP`` to a ``racer serve --workers N``
process makes uvicorn replace the workers one at a time, each new one ready before
the old one stops: the new workers re-read the configuration file and its artifacts.
When a new worker is not ready within ``server.worker_ready_timeout_s``, uvicorn keeps
the old workers and aborts the restart: the gateway logs an error saying so, and
``racer_route_artifact_info`` and the admin ``/healthz`` show which artifact each
worker serves. A process started later (after a crash or a SIGHUP) serves the
configured artifacts, not earlier ``POST /admin/reload`` ones: write the new artifact
into the configuration file to make a reload permanent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI

from racer.artifact import METADATA_FILE
from racer.serve.audit import artifact_id_of
from racer.serve.config import ConfigError, load_config
from racer.serve.decision_log import DecisionLogUnavailable
from racer.serve.errors import GatewayError
from racer.serve.gateway import Gateway
from racer.serve.route import Route, load_route

logger = logging.getLogger("racer.serve")
SHARED_RELOAD_ENV = "RACER_SHARED_RELOAD"  # "1": workers share reloads (set by --workers)
_RELOAD_TABLE = (
    "CREATE TABLE IF NOT EXISTS route_reloads (seq {serial} PRIMARY KEY, "
    "created DOUBLE PRECISION NOT NULL, route TEXT NOT NULL, artifact TEXT NOT NULL, "
    "origin TEXT NOT NULL)"
)
_PROBE = "Reload probe: which of A, B, C or D is correct?"


def validate_route(route: Route, gateway: Gateway) -> None:
    """Refuse a loaded route whose models, calibration or sets are not servable.

    Raises
    ------
    ConfigError
        Naming what is wrong.
    """
    unserved = sorted(set(route.model_names) - set(gateway.backends))
    if unserved:
        raise ConfigError(
            f"route {route.name!r}: the new artifact routes to {unserved}, which have no "
            f"backend (configured: {sorted(gateway.backends)})."
        )
    calibration = route.calibration
    for name in ("alpha", "delta"):
        value = float(getattr(calibration, name, math.nan))
        if not 0.0 < value < 1.0:
            raise ConfigError(f"route {route.name!r}: the new artifact has {name} = {value}.")
    groups = route.certified_groups or {}
    thresholds = [g.threshold for g in groups.values()] or [calibration.threshold_]
    if not all(math.isfinite(float(t)) for t in thresholds):
        raise ConfigError(f"route {route.name!r}: the new artifact's threshold is not finite.")
    scores, invoked = route.decide(_PROBE, next(iter(groups), None))
    if scores.shape != (len(route.model_names),) or not np.all(np.isfinite(scores)):
        raise ConfigError(
            f"route {route.name!r}: the new artifact's router gave scores of shape "
            f"{scores.shape} (finite: {bool(np.all(np.isfinite(scores)))}) for "
            f"{len(route.model_names)} models."
        )
    if not set(invoked) <= set(route.model_names):
        raise ConfigError(f"route {route.name!r}: the new artifact gave an invalid set.")


def artifact_id_on_disk(folder: str | Path) -> str | None:
    """The id of the artifact in ``folder`` from its metadata alone; None when unreadable."""
    try:
        metadata = json.loads((Path(folder) / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return artifact_id_of(metadata) if isinstance(metadata, dict) else None


def unchanged_reload(
    gateway: Gateway, name: str, artifact: str | Path | None = None
) -> dict[str, Any] | None:
    """The answer to a reload of the artifact that already serves route ``name``, else None.

    Raises
    ------
    GatewayError
        404 for an unknown route.
    """
    route = gateway.route(name)
    folder = route.config.artifact if artifact is None else Path(artifact)
    if route.artifact_id is None or artifact_id_on_disk(folder) != route.artifact_id:
        return None
    return {
        "route": name,
        "artifact": str(folder),
        "artifact_id": route.artifact_id,
        "previous_artifact_id": route.artifact_id,
        "changed": False,
        "monitor": "kept",
    }


def prepare_route(
    gateway: Gateway, name: str, artifact: str | Path | None = None
) -> tuple[Route, Route]:
    """Load and check the new artifact of route ``name`` (safe off the event loop).

    Returns
    -------
    (old, new) : tuple of Route
        The serving route and its checked replacement.

    Raises
    ------
    GatewayError
        404 for an unknown route, 422 when the artifact is refused.
    """
    old = gateway.route(name)
    config = old.config
    if artifact is not None:
        config = config.model_copy(update={"artifact": Path(artifact)})
    try:
        new = load_route(config, gateway.config.monitor.delta)
        validate_route(new, gateway)
    except (ConfigError, ValueError, OSError) as error:
        logger.warning("reload of route %r refused, old artifact kept: %s", name, error)
        raise GatewayError(
            422,
            f"Artifact refused, route {name!r} keeps its artifact {old.artifact_id}: {error}",
            "invalid_request_error",
            "artifact_refused",
        ) from None
    return old, new


def swap_route(gateway: Gateway, old: Route, new: Route) -> dict[str, Any]:
    """Serve ``new`` from the next request on; decided requests keep ``old``.

    Blocking (the new monitor is rebuilt from the log): call it off the event loop.
    """
    kept = gateway.monitors.install(gateway.routes, new)
    gateway.publish_monitors(new)
    gateway.metrics.replace_artifact(new.name, old.artifact_id, new.artifact_id)
    logger.warning(
        "route %r reloaded: artifact %s -> %s (%s); risk monitor %s (%d feedback, alarm %s)",
        new.name,
        old.artifact_id,
        new.artifact_id,
        new.config.artifact,
        "kept" if kept else "of the new artifact",
        new.monitor.n,
        new.monitor.alarm,
    )
    return {
        "route": new.name,
        "artifact": str(new.config.artifact),
        "artifact_id": new.artifact_id,
        "previous_artifact_id": old.artifact_id,
        "changed": new.artifact_id != old.artifact_id,
        "monitor": "kept" if kept else "new",
    }


def reload_route(gateway: Gateway, name: str, artifact: str | Path | None = None) -> dict[str, Any]:
    """Load, check and swap in the artifact of route ``name``, unless it already serves.

    Parameters
    ----------
    gateway : Gateway
        The running gateway.
    name : str
        The route.
    artifact : str or pathlib.Path, optional
        The new artifact folder; default: the route's configured one (re-read).

    Returns
    -------
    dict
        ``route``, ``artifact``, ``artifact_id``, ``previous_artifact_id``, ``changed``
        and ``monitor`` ("kept" or "new").

    Raises
    ------
    GatewayError
        404 for an unknown route, 422 when the artifact is refused (the old one stays).
    """
    unchanged = unchanged_reload(gateway, name, artifact)
    if unchanged is not None:
        return unchanged
    return swap_route(gateway, *prepare_route(gateway, name, artifact))


def reload_from_file(
    gateway: Gateway, config_path: str | Path, feed: ReloadFeed | None = None
) -> dict[str, Any]:
    """Re-read the configuration file and reload the routes whose artifact changed (SIGHUP).

    Routes are reloaded one by one; a refused artifact keeps its old one and the
    others still reload. New routes and backends need a restart. With ``feed``, the
    reloads are published to the processes that share it.
    """
    results: dict[str, Any] = {}
    try:
        fresh = load_config(config_path)
    except ConfigError as error:
        logger.warning("SIGHUP: %s; nothing reloaded.", error)
        return {"error": str(error)}
    for route_config in fresh.routes:
        if route_config.name not in gateway.routes:
            results[route_config.name] = "new route: restart the gateway to serve it"
            continue
        try:
            result = reload_route(gateway, route_config.name, route_config.artifact)
        except GatewayError as error:
            results[route_config.name] = str(error)
            continue
        results[route_config.name] = "unchanged" if not result["changed"] else result
        if feed is not None and result["changed"]:
            feed.publish(route_config.name, result["artifact"])
    return results


class ReloadFeed:
    """Reloads shared by every worker process through the decision log's database.

    Parameters
    ----------
    gateway : Gateway
        This worker's gateway; its decision log holds the ``route_reloads`` table.
    poll_s : float, default 1.0
        How often the table is read once the worker serves requests.

    Notes
    -----
    A feed starts at the newest reload already stored: a new worker serves the
    configured artifacts. Reloads this worker published itself are skipped.
    """

    def __init__(self, gateway: Gateway, poll_s: float = 1.0):
        self.gateway = gateway
        self.poll_s = poll_s
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{id(gateway)}"
        self.started = False

        def setup(connection: Any, mark: str) -> int:
            connection.execute(
                _RELOAD_TABLE.format(serial="INTEGER" if mark == "?" else "BIGSERIAL")
            )
            return int(connection.execute("SELECT MAX(seq) FROM route_reloads").fetchone()[0] or 0)

        self.seen = gateway.decision_log.submit_job(setup).result()

    def publish(self, route: str, artifact: str) -> None:
        """Store a reload this worker applied, for the others (blocking: call in a thread)."""

        def insert(connection: Any, mark: str) -> None:
            connection.execute(
                "INSERT INTO route_reloads (created, route, artifact, origin) VALUES "
                + "(?, ?, ?, ?)".replace("?", mark),
                (time.time(), route, artifact, self.origin),
            )

        self.gateway.decision_log.submit_job(insert).result()

    def _unseen(self) -> list[tuple[int, str, str, str]]:
        def read(connection: Any, mark: str) -> list[tuple[int, str, str, str]]:
            rows = connection.execute(
                "SELECT seq, route, artifact, origin FROM route_reloads WHERE seq > "
                f"{mark} ORDER BY seq",
                (self.seen,),
            ).fetchall()
            return [(int(q), str(r), str(a), str(o)) for q, r, a, o in rows]

        return self.gateway.decision_log.submit_job(read).result()

    async def catch_up(self) -> int:
        """Apply the reloads other workers published since the last call; return how many."""
        applied = 0
        for seq, route, artifact, origin in await asyncio.to_thread(self._unseen):
            self.seen = max(self.seen, seq)
            if origin == self.origin or route not in self.gateway.routes:
                continue
            try:
                if await asyncio.to_thread(unchanged_reload, self.gateway, route, artifact):
                    continue
                old, new = await asyncio.to_thread(prepare_route, self.gateway, route, artifact)
            except GatewayError as error:  # logged by prepare_route; the old one serves
                logger.warning("shared reload %d not applied here: %s", seq, error)
                continue
            await asyncio.to_thread(swap_route, self.gateway, old, new)
            applied += 1
        await asyncio.to_thread(self.gateway.sync_monitors)  # the peers' feedback too
        return applied

    async def start(self) -> None:
        """Catch up, then poll in the background (stopped by ``gateway.aclose``)."""
        if self.started:
            return
        self.started = True
        try:
            await self.catch_up()
        except DecisionLogUnavailable:  # the first request must not fail: the poll catches up
            pass
        self.gateway.keep_running(asyncio.get_running_loop().create_task(self._poll()))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.catch_up()
            except DecisionLogUnavailable:  # logged once by the log; caught up when it is back
                continue
            except Exception:  # a database hiccup must not end the polling
                logger.exception("reading shared reloads failed; retrying")


def install_sighup(app: FastAPI, config_path: str | Path) -> None:
    """Reload the routes whose artifact changed in ``config_path`` on SIGHUP."""
    if not hasattr(signal, "SIGHUP"):
        return

    def on_hangup(*_: Any) -> None:
        gateway = getattr(app.state, "gateway", None)
        if gateway is not None:
            feed = getattr(app.state, "reload_feed", None)
            logger.warning(
                "SIGHUP: reloading routes: %s", reload_from_file(gateway, config_path, feed)
            )

    signal.signal(signal.SIGHUP, on_hangup)


class AbortedRestartAlarm(logging.Filter):
    """Turns uvicorn's "not ready in time ... aborting the restart" into an explained error.

    Attached to the ``uvicorn.error`` logger of the ``racer serve --workers`` parent:
    after a SIGHUP, when a new worker is not ready in time, uvicorn keeps the old
    workers (some may already be replaced) and goes on. This says what that means.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "not ready in time" in message and "aborting the restart" in message:
            logger.error(
                "SIGHUP reload NOT done: a new worker was not ready within "
                "server.worker_ready_timeout_s, so uvicorn kept old workers, which still "
                "serve the artifacts they had loaded (workers replaced before it may serve "
                "the new ones). Check racer_route_artifact_info or the admin /healthz, then "
                "send SIGHUP again (or raise worker_ready_timeout_s)."
            )
        return True
