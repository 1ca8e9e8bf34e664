"""What users receive, beyond the certified risk: refusals, wrong answers, flags.

The certified risk is one number; these rates say how it is reached. A mode that keeps its
promise by refusing or by flagging most answers shows it here. Every mode reports the same
four rates from its served decision (:func:`racer.losses.served_losses` conventions):

- refusal rate: share of queries on which no model is called;
- without a right answer: share of queries whose served models hold no good answer
  (refusals included; unknown labels at their worst completion, graded quality as
  ``1 - best quality served``);
- flag rate: share of queries answered with the abstain flag raised (flag mode);
- flag precision: among flagged answers, the share without a right answer (how often the
  flag warns rightly; NaN when nothing is flagged).

Examples
--------
>>> import numpy as np
>>> from racer.diagnostics import served_rates
>>> decision = np.array([[True, True, False], [False, False, True], [True, False, False]])
>>> labels = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
>>> rates = served_rates("flag", decision, labels)
>>> rates.refusal_rate, rates.without_right_answer, rates.flag_rate, rates.flag_precision
(0.3333333333333333, 0.6666666666666666, 0.3333333333333333, 1.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from racer.losses import abstention_mode


@dataclass(frozen=True)
class ServedRates:
    """The four rates of the module docstring, over ``n`` queries."""

    n: int
    refusal_rate: float
    without_right_answer: float
    flag_rate: float
    flag_precision: float

    def as_dict(self) -> dict[str, float | int]:
        """The rates as a plain dict (for JSON reports)."""
        return asdict(self)


def served_rates(mode: str, decision: np.ndarray, quality: np.ndarray) -> ServedRates:
    """Refusal rate, share without a right answer, flag rate and flag precision.

    Parameters
    ----------
    mode : {"flag", "strict", "off"}
        The abstention mode (column 0 is a flag only in ``"flag"`` mode).
    decision : numpy.ndarray of bool, shape (n, M + 1)
        The served decisions (column 0: flag or abstention; columns 1..M: models called).
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality; NaN = unknown (worst case: an unknown is not good).

    Returns
    -------
    ServedRates
    """
    decision = np.asarray(decision, dtype=bool)
    mode = abstention_mode(mode)
    invoked = decision[:, 1:]
    if mode == "strict":
        invoked = invoked & ~decision[:, [0]]
    model_quality = np.asarray(quality, dtype=float)
    if np.isnan(np.sum(model_quality)):  # copy only when some label is unknown
        model_quality = np.nan_to_num(model_quality, nan=0.0)
    best_served = np.max(model_quality, axis=1, where=invoked, initial=0.0)
    answered = invoked.any(axis=1)
    flagged = decision[:, 0] & answered if mode == "flag" else np.zeros(len(decision), bool)
    return rates_of_outcomes(answered, flagged, 1.0 - best_served)


def rates_of_outcomes(answered: np.ndarray, flagged: np.ndarray, missed: np.ndarray) -> ServedRates:
    """The four rates from each query's outcome.

    Parameters
    ----------
    answered : numpy.ndarray of bool, shape (n,)
        Whether some model is called.
    flagged : numpy.ndarray of bool, shape (n,)
        Whether an answer carries the abstain flag.
    missed : numpy.ndarray, shape (n,)
        Whether the served models hold no right answer (bool), or ``1 - best quality
        served`` (graded).

    Returns
    -------
    ServedRates
    """
    n_flagged = int(np.count_nonzero(flagged))
    return ServedRates(
        n=len(answered),
        refusal_rate=float(np.mean(~answered)),
        without_right_answer=float(np.mean(missed)),
        flag_rate=n_flagged / len(answered),
        flag_precision=float(missed[flagged].mean()) if n_flagged else float("nan"),
    )
