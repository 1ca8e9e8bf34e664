"""Batch routing and replay of logged traffic, in this process or on Ray.

``racer route`` and ``racer replay`` (:mod:`racer.cli.batch`) are thin layers over
:func:`route_files` and :func:`replay`; :mod:`racer.batch.routing` documents the output
columns, the same for every engine.
"""

from racer.batch.engines import ENGINES, RouteSettings, RouteStats, replay, route_files
from racer.batch.replay import ReplayData, replay_data
from racer.batch.routing import BatchRouter, certificate, output_columns

__all__ = [
    "ENGINES",
    "BatchRouter",
    "ReplayData",
    "RouteSettings",
    "RouteStats",
    "certificate",
    "output_columns",
    "replay",
    "replay_data",
    "route_files",
]
