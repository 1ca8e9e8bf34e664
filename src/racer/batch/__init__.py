"""Batch routing and replay of logged traffic, in this process or on Ray.

``racer route`` and ``racer replay`` (:mod:`racer.cli.batch`) are thin layers over
:func:`route_files` and :func:`racer.batch.engines.replay`; :mod:`racer.batch.routing`
documents the output columns, the same for every engine.

The names below are imported on first use, so that the command line can import
:mod:`racer.batch.io` without loading the estimator and scikit-learn.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ENGINES": "racer.batch.engines",
    "RouteSettings": "racer.batch.engines",
    "RouteStats": "racer.batch.engines",
    "route_files": "racer.batch.engines",
    "ReplayData": "racer.batch.replay",
    "replay_data": "racer.batch.replay",
    "BatchRouter": "racer.batch.routing",
    "certificate": "racer.batch.routing",
    "output_columns": "racer.batch.routing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'racer.batch' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
