"""A servable route: a base router, its calibration, and, when certified, its policy.

A route turns a query into the router's scores and the calibrated set to call
(:meth:`Route.decision`); :func:`load_route` reads it from an artifact folder. Which
way of answering serves it is :attr:`Route.answering` (see :mod:`racer.serve.answering`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from racer.losses import abstention_mode
from racer.serve.audit import artifact_id_of
from racer.serve.config import ConfigError, RouteConfig
from racer.serve.monitor import RiskMonitor
from racer.serve.served_policy import ServedPolicy, served_policy


class ScoringRouter(Protocol):
    """What the gateway needs of a base router."""

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray: ...


class SetPredictor(Protocol):
    """What the gateway needs of a calibrated RACER."""

    alpha: float
    delta: float
    threshold_: float

    def predict(
        self, scores: np.ndarray, *, include_abstain: bool = False, abstain_scores: Any = None
    ) -> np.ndarray: ...


class AbstainScorer(Protocol):
    """What the gateway needs of a learned abstention head (optional)."""

    def abstain_score(self, queries: Sequence[str]) -> np.ndarray: ...


@dataclass
class Route:
    """A servable route: a base router, its calibration, and how to answer.

    Parameters
    ----------
    config : RouteConfig
        The route's configuration (name, aggregator, abstention message, fallbacks).
    router : ScoringRouter
        Any object with ``predict_proba(queries) -> (n, M)``.
    calibration : SetPredictor
        The fitted RACER estimator of that router.
    model_names : tuple of str
        The M candidate models, in the router's column order (= backend names).
    monitor : RiskMonitor
        The anytime-valid check of this route's realised misrouting rate.
    abstention : AbstainScorer, optional
        The learned abstain score, when the calibration uses one.
    artifact_id : str, optional
        Which artifact serves the route (logged with each decision).
    policy : ServedPolicy, optional
        The certified answer-level policy that answers instead of the calibrated set.
    """

    config: RouteConfig
    router: ScoringRouter
    calibration: SetPredictor
    model_names: tuple[str, ...]
    monitor: RiskMonitor
    abstention: AbstainScorer | None = None
    artifact_id: str | None = None  # hook (issue 12): the decision log records it
    policy: ServedPolicy | None = None  # hook (issue 9): a certified policy answers

    @property
    def name(self) -> str:
        """The ``model`` value clients send."""
        return self.config.name

    @property
    def mode(self) -> str:
        """The abstention mode served: the calibration's ("flag", "strict" or "off")."""
        return abstention_mode(getattr(self.calibration, "abstention_mode_", False))

    @property
    def answering(self) -> str:
        """The way of answering that serves the route (a key of :mod:`racer.serve.answering`)."""
        return "calibrated_set" if self.policy is None else "certified_policy"

    def decide(self, query: str) -> tuple[np.ndarray, list[str]]:
        """The router's scores for ``query`` and the set to call, best-scored first."""
        scores, invoked, _ = self.decision(query)
        return scores, invoked

    def decision(self, query: str) -> tuple[np.ndarray, list[str], bool]:
        """Scores, the set to call (best-scored first) and column 0 of the decision.

        Column 0 is the abstain flag (mode "flag"), the abstain decision (mode
        "strict": then no model is called) or False (mode "off").
        """
        scores, sets, column_0 = self.decisions([query])
        return scores[0], sets[0], bool(column_0[0])

    def decisions(self, queries: Sequence[str]) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
        """:meth:`decision` of several queries at once, row by row (one router call).

        Returns
        -------
        scores : ndarray of shape (n, M)
        sets : list of n lists of model names, best-scored first
        column_0 : ndarray of bool, shape (n,)
        """
        queries = list(queries)
        scores = np.asarray(self.router.predict_proba(queries), dtype=float)
        scores = scores.reshape(len(queries), -1)
        abstain = None if self.abstention is None else self.abstention.abstain_score(queries)
        decision = np.asarray(
            self.calibration.predict(scores, include_abstain=True, abstain_scores=abstain),
            dtype=bool,
        ).reshape(len(queries), -1)
        column_0, invoked = decision[:, 0], decision[:, 1:]
        if self.mode == "strict":
            invoked = invoked & ~column_0[:, None]
        order = np.argsort(-scores, axis=1, kind="stable")
        ranked = np.take_along_axis(invoked, order, axis=1)
        sets = [
            [self.model_names[k] for k in row[keep]]
            for row, keep in zip(order, ranked, strict=True)
        ]
        return scores, sets, column_0

    def describe(self) -> dict[str, Any]:
        """The route's calibration and monitor, for /healthz."""
        return {
            "models": list(self.model_names),
            "alpha": float(self.calibration.alpha),
            "delta": float(self.calibration.delta),
            "threshold": float(self.calibration.threshold_),
            "abstention": self.mode,
            "aggregator": self.config.aggregator,
            "monitor": self.monitor.state(),
            "artifact_id": self.artifact_id,  # which artifact this process serves
            "artifact": str(self.config.artifact),
            "audit_rate": self.config.audit_rate,  # hook (issue 12)
            "policy": None if self.policy is None else self.policy.certificate,  # issue 9
        }


def load_route(config: RouteConfig, monitor_delta: float) -> Route:
    """Load a route's artifact (base router + calibrated RACER) from disk."""
    from racer.artifact import load_artifact

    try:
        artifact = load_artifact(config.artifact)
    except (OSError, ValueError) as error:
        raise ConfigError(f"route {config.name!r}: cannot load artifact: {error}") from error
    served = abstention_mode(getattr(artifact.racer, "abstention_mode_", False))
    if config.abstention is not None and config.abstention != served:
        raise ConfigError(
            f"route {config.name!r}: the artifact {config.artifact} was calibrated for "
            f"abstention {served!r}, but the route asks for abstention {config.abstention!r}; "
            f"its guarantee holds only for the mode it was calibrated for. Recalibrate with "
            f"RACER(abstention={config.abstention!r}) or set abstention: {served} in the route."
        )
    policy = None
    if artifact.policy is not None:  # hook (issue 9): the certified policy answers
        try:
            policy = served_policy(artifact.policy, tuple(artifact.model_names))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"route {config.name!r}: the artifact's certified policy cannot be served: {error}"
            ) from error
    return Route(
        config,
        artifact.router,
        artifact.racer,
        tuple(artifact.model_names),
        # a policy route promises its certificate's alpha on its own objective
        RiskMonitor(artifact.racer.alpha if policy is None else policy.alpha, monitor_delta),
        artifact.abstention,
        artifact_id_of(artifact.metadata),  # hook (issue 12)
        policy,
    )
