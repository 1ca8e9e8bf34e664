"""The RACER estimator: a scikit-learn style shell over the pure calibration functions.

One module per step of a fit, each a few hundred lines:

- :mod:`~racer.estimator.racer`: the :class:`RACER` class, its parameters, and fit /
  predict / risk as thin calls to the modules below;
- :mod:`~racer.estimator.params`: the hyper-parameters, checked once at fit;
- :mod:`~racer.estimator.inputs`: the calibration data, checked once on the raw arrays;
- :mod:`~racer.estimator.levels`: the calibration points' entry levels and loss
  breakpoints, built once;
- :mod:`~racer.estimator.certificates`: one certificate, marginal or per group;
- :mod:`~racer.estimator.fit_rates`: what the calibration queries receive (diagnostics);
- :mod:`~racer.estimator.state`: the fitted estimator as JSON values and arrays.

Importing it loads neither scikit-learn nor scipy; scipy loads at the first fit.
"""

from racer.estimator.certificates import GroupCalibration
from racer.estimator.params import BOUND_CHOICES, MISSING_CHOICES
from racer.estimator.racer import FLAG_RATE_WARNING, RACER, minimum_calibration_size
from racer.estimator.state import STATE_VERSION

__all__ = [
    "BOUND_CHOICES",
    "FLAG_RATE_WARNING",
    "MISSING_CHOICES",
    "RACER",
    "STATE_VERSION",
    "GroupCalibration",
    "minimum_calibration_size",
]
