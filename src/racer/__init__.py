"""RACER: risk-aware calibrated set-valued routing for large language models."""

from racer.data import RoutingDataset

__version__ = "0.1.0"

__all__ = ["RoutingDataset", "__version__"]
