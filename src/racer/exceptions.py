"""Errors raised by RACER.

``NotFittedError`` is scikit-learn's, loaded on first access so that importing RACER does
not import scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["InfeasibleCalibrationError", "NotFittedError"]


class InfeasibleCalibrationError(ValueError):
    """The requested guarantee cannot be certified on this calibration set.

    Raised instead of silently returning an extreme threshold without a guarantee.
    """


def __getattr__(name: str) -> Any:
    """``NotFittedError`` on first access (PEP 562)."""
    if name == "NotFittedError":
        from sklearn.exceptions import NotFittedError

        return NotFittedError
    raise AttributeError(f"module 'racer.exceptions' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from sklearn.exceptions import NotFittedError
