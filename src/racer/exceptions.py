"""Errors raised by RACER."""

from sklearn.exceptions import NotFittedError

__all__ = ["InfeasibleCalibrationError", "NotFittedError"]


class InfeasibleCalibrationError(ValueError):
    """The requested guarantee cannot be certified on this calibration set.

    Raised instead of silently returning an extreme threshold without a guarantee.
    """
