"""Reload a route's artifact without downtime: ``POST /admin/reload`` or ``SIGHUP``.

The new artifact is loaded and checked before anything changes: it must load
(format, version, checksums), route between models that all have backends, hold a
sane calibration (alpha and delta in (0, 1), a finite threshold) and give a valid set
for a probe query. A refused artifact leaves the old one serving. An accepted one
replaces the route in one assignment: requests already decided keep the route
object they started with and finish on the old artifact; the next requests use the
new one. The decision log records which artifact served each decision
(``decision_audit.artifact_id``). The route's risk monitor starts afresh: its
feedback judged the old calibration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict

from racer.serve.config import ConfigError, load_config
from racer.serve.gateway import Gateway, GatewayError, Route, load_route

logger = logging.getLogger("racer.serve")
_PROBE = "Reload probe: which of A, B, C or D is correct?"


class ReloadRequest(BaseModel):
    """``POST /admin/reload``: the route, and the new artifact (default: the configured one)."""

    model_config = ConfigDict(extra="forbid")
    route: str
    artifact: str | None = None


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
    if not math.isfinite(float(calibration.threshold_)):
        raise ConfigError(f"route {route.name!r}: the new artifact's threshold is not finite.")
    scores, invoked = route.decide(_PROBE)
    if scores.shape != (len(route.model_names),) or not np.all(np.isfinite(scores)):
        raise ConfigError(
            f"route {route.name!r}: the new artifact's router gave scores of shape "
            f"{scores.shape} (finite: {bool(np.all(np.isfinite(scores)))}) for "
            f"{len(route.model_names)} models."
        )
    if not set(invoked) <= set(route.model_names):
        raise ConfigError(f"route {route.name!r}: the new artifact gave an invalid set.")


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
    """Serve ``new`` from the next request on; decided requests keep ``old``."""
    gateway.routes[new.name] = new  # one assignment, on the event loop's thread
    gateway.metrics.set_monitor(new.name, new.monitor.state())
    logger.warning(
        "route %r reloaded: artifact %s -> %s (%s)",
        new.name,
        old.artifact_id,
        new.artifact_id,
        new.config.artifact,
    )
    return {
        "route": new.name,
        "artifact": str(new.config.artifact),
        "artifact_id": new.artifact_id,
        "previous_artifact_id": old.artifact_id,
    }


def reload_route(gateway: Gateway, name: str, artifact: str | Path | None = None) -> dict[str, Any]:
    """Load, check and swap in the artifact of route ``name``.

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
        ``route``, ``artifact``, ``artifact_id`` and ``previous_artifact_id``.

    Raises
    ------
    GatewayError
        404 for an unknown route, 422 when the artifact is refused (the old one stays).
    """
    return swap_route(gateway, *prepare_route(gateway, name, artifact))


def reload_from_file(gateway: Gateway, config_path: str | Path) -> dict[str, Any]:
    """Re-read the configuration file and reload every route it still names (SIGHUP).

    Routes are reloaded one by one; a refused artifact keeps its old one and the
    others still reload. New routes and backends need a restart.
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
            results[route_config.name] = reload_route(
                gateway, route_config.name, route_config.artifact
            )
        except GatewayError as error:
            results[route_config.name] = str(error)
    return results


def install_admin(app: FastAPI, gateway: Gateway) -> None:
    """Add ``POST /admin/reload`` (admin bearer token) to the gateway's app."""
    from racer.serve.app import BearerKeys

    admin_keys = gateway.config.auth.resolve_admin_keys()
    check = BearerKeys(admin_keys)
    app.state.gateway = gateway

    @app.post("/admin/reload", dependencies=[Depends(check)])
    async def admin_reload(request: ReloadRequest) -> dict[str, Any]:
        if not admin_keys:
            raise GatewayError(
                403,
                "Admin endpoints are disabled: set auth.admin_keys or RACER_ADMIN_KEYS.",
                "permission_error",
                "admin_disabled",
            )
        old, new = await asyncio.to_thread(
            prepare_route, gateway, request.route, request.artifact
        )  # loading and checking off the event loop: requests keep flowing
        return swap_route(gateway, old, new)


def install_sighup(app: FastAPI, config_path: str | Path) -> None:
    """Reload every route from ``config_path`` when the process receives SIGHUP."""
    if not hasattr(signal, "SIGHUP"):
        return

    def on_hangup(*_: Any) -> None:
        gateway = getattr(app.state, "gateway", None)
        if gateway is not None:
            logger.warning("SIGHUP: reloading routes: %s", reload_from_file(gateway, config_path))

    signal.signal(signal.SIGHUP, on_hangup)
