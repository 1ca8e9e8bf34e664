"""RACER: risk-aware calibrated set-valued routing for large language models."""

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

__version__ = "0.1.0"

__all__ = [
    "RACER",
    "ROUTER_NAMES",
    "AbstentionHead",
    "ArtifactError",
    "ExternalScoresRouter",
    "InfeasibleCalibrationError",
    "NotFittedError",
    "RoutingDataset",
    "TfidfEmbedder",
    "__version__",
    "calibration_test_split",
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
