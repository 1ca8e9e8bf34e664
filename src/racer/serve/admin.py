"""The admin HTTP routes: ``POST /admin/reload`` (an admin bearer token).

What a reload does is :mod:`racer.serve.reload`; this module is its HTTP route, and
the wiring that shares reloads between worker processes and between instances on one
PostgreSQL decision log.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, ConfigDict

from racer.serve.auth import BearerKeys
from racer.serve.errors import GatewayError
from racer.serve.gateway import Gateway
from racer.serve.middleware import FollowReloads
from racer.serve.reload import (
    SHARED_RELOAD_ENV,
    ReloadFeed,
    prepare_route,
    swap_route,
    unchanged_reload,
)


class ReloadRequest(BaseModel):
    """``POST /admin/reload``: the route, and the new artifact (default: the configured one)."""

    model_config = ConfigDict(extra="forbid")
    route: str
    artifact: str | None = None


def admin_router(gateway: Gateway, feed: ReloadFeed | None) -> APIRouter:
    """The router of ``POST /admin/reload``; with ``feed``, reloads are published to it."""
    admin_keys = gateway.config.auth.resolve_admin_keys()
    router = APIRouter(dependencies=[Depends(BearerKeys(admin_keys))])

    @router.post("/admin/reload")
    async def admin_reload(request: ReloadRequest) -> dict[str, Any]:
        if not admin_keys:
            raise GatewayError(
                403,
                "Admin endpoints are disabled: set auth.admin_keys or RACER_ADMIN_KEYS.",
                "permission_error",
                "admin_disabled",
            )
        unchanged = await asyncio.to_thread(
            unchanged_reload, gateway, request.route, request.artifact
        )
        if unchanged is not None:
            return {**unchanged, "shared_with_workers": feed is not None}
        old, new = await asyncio.to_thread(
            prepare_route, gateway, request.route, request.artifact
        )  # loading and checking off the event loop: requests keep flowing
        result = await asyncio.to_thread(swap_route, gateway, old, new)
        if feed is not None:  # the other workers and instances apply it within about poll_s
            await asyncio.to_thread(feed.publish, new.name, str(new.config.artifact))
        result["shared_with_workers"] = feed is not None
        return result

    return router


def install_admin(app: FastAPI, gateway: Gateway, shared: bool | None = None) -> None:
    """Add ``POST /admin/reload`` (admin bearer token) to the gateway's app.

    With ``shared`` (default: ``decision_log.share_reloads`` of the configuration, or
    the ``RACER_SHARED_RELOAD`` environment variable is "1", as ``racer serve
    --workers`` sets it) reloads are published to and followed from the other workers
    and instances through the decision log (:class:`~racer.serve.reload.ReloadFeed`).
    """
    app.state.gateway = gateway
    if shared is None:
        shared = (
            gateway.config.decision_log.shares_reloads() or os.environ.get(SHARED_RELOAD_ENV) == "1"
        )
    feed = ReloadFeed(gateway) if shared else None
    app.state.reload_feed = feed
    if feed is not None:
        app.add_middleware(FollowReloads, feed=feed)
    app.include_router(admin_router(gateway, feed))
