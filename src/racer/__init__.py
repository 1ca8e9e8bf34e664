"""RACER: risk-aware calibrated set-valued routing for large language models."""

from racer.data import RoutingDataset
from racer.estimator import RACER, minimum_calibration_size
from racer.exceptions import InfeasibleCalibrationError, NotFittedError

__version__ = "0.1.0"

__all__ = [
    "RACER",
    "InfeasibleCalibrationError",
    "NotFittedError",
    "RoutingDataset",
    "__version__",
    "minimum_calibration_size",
]
