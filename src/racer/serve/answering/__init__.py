"""The ways of answering a routed request, one small module each, behind one protocol.

- :mod:`~racer.serve.answering.base`: :class:`AnsweringStrategy` (the protocol) and the
  :class:`Services` a strategy calls;
- :mod:`~racer.serve.answering.calibrated_set`: the calibrated set, called at once and
  aggregated (abstention, relay of a streamed one-model set, fallbacks);
- :mod:`~racer.serve.answering.certified_policy`: a certified answer-level policy
  (single, cascade, parallel set, judge).

A new way of answering is a module here with a class whose ``answer(decision)`` meets
:class:`AnsweringStrategy`, added to :func:`strategies`, and named by
:attr:`racer.serve.route.Route.answering` for the routes it serves.
"""

from __future__ import annotations

from racer.serve.answering.base import AnsweringStrategy, Services
from racer.serve.answering.calibrated_set import CalibratedSet
from racer.serve.answering.certified_policy import CertifiedPolicy

__all__ = ["AnsweringStrategy", "CalibratedSet", "CertifiedPolicy", "Services", "strategies"]


def strategies(services: Services) -> dict[str, AnsweringStrategy]:
    """Every way of answering, by the name :attr:`Route.answering` gives, over ``services``."""
    return {
        "calibrated_set": CalibratedSet(services),
        "certified_policy": CertifiedPolicy(services),
    }
