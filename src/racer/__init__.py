"""RACER: risk-aware calibrated set-valued routing for large language models."""

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

__version__ = "0.1.0"

__all__ = [
    "RACER",
    "InfeasibleCalibrationError",
    "NotFittedError",
    "RoutingDataset",
    "__version__",
    "calibration_test_split",
    "load_dataset",
    "load_routerbench",
    "load_routerdc",
    "load_table",
    "minimum_calibration_size",
    "train_test_split",
]
