"""RACER: risk-aware calibrated set-valued routing for large language models.

The public names below are loaded on first use (module ``__getattr__``), so that
``import racer`` stays fast: scikit-learn and scipy load only when a name that needs them
is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from racer.version import __version__

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "ArtifactError": "racer.artifact",
    "load_artifact": "racer.artifact",
    "save_artifact": "racer.artifact",
    "RoutingDataset": "racer.data",
    "calibration_test_split": "racer.data",
    "load_dataset": "racer.data",
    "load_routerbench": "racer.data",
    "load_routerdc": "racer.data",
    "load_table": "racer.data",
    "train_test_split": "racer.data",
    "RACER": "racer.estimator",
    "minimum_calibration_size": "racer.estimator",
    "InfeasibleCalibrationError": "racer.exceptions",
    "NotFittedError": "racer.exceptions",
    "ROUTER_NAMES": "racer.routers",
    "AbstentionHead": "racer.routers",
    "ExternalScoresRouter": "racer.routers",
    "TfidfEmbedder": "racer.routers",
    "make_router": "racer.routers",
    "choose_in_sets": "racer.aggregate",
    "choose_response": "racer.aggregate",
    "chosen_correct": "racer.aggregate",
    "any_correct": "racer.aggregate",
}

__all__ = [
    "AbstentionHead",
    "ArtifactError",
    "ExternalScoresRouter",
    "InfeasibleCalibrationError",
    "NotFittedError",
    "RACER",
    "ROUTER_NAMES",
    "RoutingDataset",
    "TfidfEmbedder",
    "__version__",
    "any_correct",
    "calibration_test_split",
    "choose_in_sets",
    "choose_response",
    "chosen_correct",
    "load_artifact",
    "load_dataset",
    "load_routerbench",
    "load_routerdc",
    "load_table",
    "make_router",
    "minimum_calibration_size",
    "save_artifact",
    "train_test_split",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'racer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from racer.aggregate import any_correct, choose_in_sets, choose_response, chosen_correct
    from racer.artifact import ArtifactError, load_artifact, save_artifact
    from racer.data import (
        RoutingDataset,
        calibration_test_split,
        load_dataset,
        load_routerbench,
        load_routerdc,
        load_table,
        train_test_split,
    )
    from racer.estimator import RACER, minimum_calibration_size
    from racer.exceptions import InfeasibleCalibrationError, NotFittedError
    from racer.routers import (
        ROUTER_NAMES,
        AbstentionHead,
        ExternalScoresRouter,
        TfidfEmbedder,
        make_router,
    )
