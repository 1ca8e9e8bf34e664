"""The routing gateway: serve a RACER artifact behind an OpenAI-compatible API.

Needs the ``serve`` extra (``pip install "racer-routing[serve]"``). The pieces, one
job each:

- :mod:`racer.serve.config`: the YAML configuration, validated at start-up;
- :mod:`racer.serve.backends`: calling one upstream (timeouts, retries, limits, cost);
- :mod:`racer.serve.route`: a servable route (router, calibration, certified policy);
- :mod:`racer.serve.gateway`: one request, route -> decision -> way of answering -> send;
- :mod:`racer.serve.answering`: the ways of answering (calibrated set, certified policy);
- :mod:`racer.serve.fanout`, :mod:`racer.serve.records`, :mod:`racer.serve.streaming`:
  the services they share (calling backends, logging decisions, sending events);
- :mod:`racer.serve.app`, :mod:`racer.serve.admin`: the HTTP endpoints;
- :mod:`racer.serve.decision_log`, :mod:`racer.serve.monitor`, :mod:`racer.serve.metrics`;
- :mod:`racer.serve.reload`: swapping a route's artifact while serving;
- :mod:`racer.serve.replay`: recorded responses served as OpenAI-compatible models;
- :mod:`racer.serve.runner`: servers on loopback ports in a background thread;
- :mod:`racer.serve.protocol`: uvicorn's HTTP protocol with read limits.

``racer serve`` and ``racer replay-server`` live in :mod:`racer.cli.serve`.

The names below are imported on first use, so that importing the command line
does not need the server libraries.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "create_app": "racer.serve.app",
    "app_from_config": "racer.serve.app",
    "Gateway": "racer.serve.gateway",
    "Route": "racer.serve.route",
    "GatewayConfig": "racer.serve.config",
    "load_config": "racer.serve.config",
    "ReplayBook": "racer.serve.replay",
    "create_replay_app": "racer.serve.replay",
    "RiskMonitor": "racer.serve.monitor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'racer.serve' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
