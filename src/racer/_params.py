"""scikit-learn's estimator conventions without importing scikit-learn.

``get_params``/``set_params`` from the ``__init__`` signature, a readable ``repr`` and the
hooks scikit-learn's tools call (tags, fitted check), so that ``clone``, grid search and
``check_estimator`` work, while importing the estimator costs no scikit-learn import.
"""

from __future__ import annotations

import inspect
from typing import Any


class ParamsMixin:
    """Hyper-parameters read from ``__init__``: scikit-learn's ``BaseEstimator`` contract."""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(name for name in signature.parameters if name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The estimator's hyper-parameters, by name (``deep`` is accepted for scikit-learn)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Any:
        """Set hyper-parameters by name; unknown names are refused."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; valid parameters "
                    f"are {sorted(valid)}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            same = value is default or (
                isinstance(value, int | float | str | bool | None) and value == default
            )
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        """Default scikit-learn tags (scikit-learn imported only when asked)."""
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
        )


def not_fitted_error(estimator: object) -> Exception:
    """scikit-learn's ``NotFittedError`` for ``estimator`` (imported on this error path)."""
    from sklearn.exceptions import NotFittedError

    return NotFittedError(
        f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
        "appropriate arguments before using this estimator."
    )
