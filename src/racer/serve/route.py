"""A servable route: a base router, its calibration, and, when certified, its policy.

A route turns a query into the router's scores and the calibrated set to call
(:meth:`Route.decision`); :func:`load_route` reads it from an artifact folder. Which
way of answering serves it is :attr:`Route.answering` (see :mod:`racer.serve.answering`).

Slices of traffic: a request names its group with the OpenAI ``metadata`` entry
``racer_group`` or the header ``x-racer-group``; a route calibrated per group on a group
classifier's predictions predicts it when the request names none (:meth:`Route.group_of`).
A route calibrated per group serves each group with its own certificate, and an unknown
group with the pooled certificate when there is one (else 400, naming the known groups).
Every route keeps one risk monitor per group next to its route-wide one
(:meth:`Route.observe_loss`): under a marginal certificate too, a group can sit above alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from racer.groups import POOLED
from racer.losses import abstention_mode
from racer.serve.audit import artifact_id_of
from racer.serve.config import ConfigError, RouteConfig
from racer.serve.errors import GatewayError, truncate
from racer.serve.monitor import RiskMonitor
from racer.serve.served_policy import ServedPolicy, served_policy


class ScoringRouter(Protocol):
    """What the gateway needs of a base router."""

    def predict_proba(self, queries: Sequence[str]) -> np.ndarray: ...


class SetPredictor(Protocol):
    """What the gateway needs of a calibrated RACER."""

    alpha: float
    delta: float
    threshold_: float | None
    groups_: dict[str, Any] | None

    def predict(
        self,
        scores: np.ndarray,
        *,
        groups: Any = None,
        include_abstain: bool = False,
        abstain_scores: Any = None,
    ) -> np.ndarray: ...


class AbstainScorer(Protocol):
    """What the gateway needs of a learned abstention head (optional)."""

    def abstain_score(self, queries: Sequence[str]) -> np.ndarray: ...


class GroupPredictor(Protocol):
    """What the gateway needs of a group classifier (optional)."""

    def predict(self, queries: Sequence[str]) -> np.ndarray: ...


#: The most groups one route monitors (each with its own monitor and metrics series).
MAX_MONITORED_GROUPS = 100
#: The longest group name a request may send.
MAX_GROUP_LENGTH = 128


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
    shadow : Route, optional
        A candidate that decides on this route's traffic without serving
        (:mod:`racer.serve.shadow`).
    group_classifier : GroupPredictor, optional
        Predicts a query's group when the request names none (the artifact's).
    group_monitors : dict of str to RiskMonitor
        One monitor per group seen in feedback (at most :data:`MAX_MONITORED_GROUPS`).
    """

    config: RouteConfig
    router: ScoringRouter
    calibration: SetPredictor
    model_names: tuple[str, ...]
    monitor: RiskMonitor
    abstention: AbstainScorer | None = None
    artifact_id: str | None = None  # hook (issue 12): the decision log records it
    policy: ServedPolicy | None = None  # hook (issue 9): a certified policy answers
    shadow: Route | None = None
    group_classifier: GroupPredictor | None = None
    group_monitors: dict[str, RiskMonitor] = field(default_factory=dict)

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

    @property
    def certified_groups(self) -> dict[str, Any] | None:
        """The per-group certificates (None when calibrated marginally)."""
        return getattr(self.calibration, "groups_", None)

    def group_of(self, query: str, requested: str | None) -> str | None:
        """The group a request is served and monitored under.

        ``requested`` (the request's ``racer_group``) wins; else the group classifier
        predicts it; else None (no group).

        Raises
        ------
        GatewayError
            400 for a group this per-group route cannot serve (unknown and no pooled
            certificate), or for none at all when it has no classifier.
        """
        certified = self.certified_groups
        if requested is not None:
            if not requested or len(requested) > MAX_GROUP_LENGTH:
                raise GatewayError(
                    400,
                    f"racer_group must be a non-empty name of at most {MAX_GROUP_LENGTH} "
                    f"characters; got {truncate(requested)!r}.",
                    "invalid_request_error",
                    "invalid_group",
                )
            if certified is not None and requested not in certified and POOLED not in certified:
                raise GatewayError(
                    400,
                    f"Route {self.name!r} certifies the groups {sorted(certified)} and has no "
                    f"pooled certificate for others; {truncate(requested)!r} is not one of them. "
                    "Send one of these as metadata.racer_group (or the x-racer-group header).",
                    "invalid_request_error",
                    "unknown_group",
                )
            return requested
        if self.group_classifier is not None:
            return str(self.group_classifier.predict([query])[0])
        if certified is not None:
            raise GatewayError(
                400,
                f"Route {self.name!r} is certified per group {sorted(certified)}: name the "
                "request's group with metadata.racer_group (or the x-racer-group header).",
                "invalid_request_error",
                "missing_group",
            )
        return None

    def certificate_group(self, group: str | None) -> str | None:
        """The certificate that serves ``group``: its own, the pooled one, or None (marginal)."""
        certified = self.certified_groups
        if certified is None or group is None:
            return None
        return group if group in certified else POOLED

    def threshold_of(self, group: str | None) -> float:
        """The lambda that serves ``group`` (the route's own when calibrated marginally)."""
        certificate = self.certificate_group(group)
        if certificate is None:
            return float(self.calibration.threshold_)  # type: ignore[arg-type]
        assert self.certified_groups is not None
        return float(self.certified_groups[certificate].threshold)

    def monitored_group(self, group: str | None) -> str | None:
        """The group ``group``'s traffic is monitored and counted under (None: route-wide only).

        A group served by the pooled certificate is monitored as the pooled group (the
        certificate it was promised). Beyond :data:`MAX_MONITORED_GROUPS` groups a new
        group is only watched route-wide.
        """
        key = self.certificate_group(group) or group
        if key is None:
            return None
        if key not in self.group_monitors:
            if len(self.group_monitors) >= MAX_MONITORED_GROUPS:
                return None
            self.group_monitors[key] = RiskMonitor(self.monitor.alpha, self.monitor.delta)
        return key

    def observe_loss(self, loss: float, group: str | None) -> None:
        """Feed one feedback loss to the route's monitor and to its group's monitor."""
        self.monitor.update(loss)
        key = self.monitored_group(group)
        if key is not None:
            self.group_monitors[key].update(loss)

    def decide(self, query: str, group: str | None = None) -> tuple[np.ndarray, list[str]]:
        """The router's scores for ``query`` and the set to call, best-scored first."""
        scores, invoked, _ = self.decision(query, group)
        return scores, invoked

    def decision(self, query: str, group: str | None = None) -> tuple[np.ndarray, list[str], bool]:
        """Scores, the set to call (best-scored first) and column 0 of the decision.

        Column 0 is the abstain flag (mode "flag"), the abstain decision (mode
        "strict": then no model is called) or False (mode "off"). ``group``: the
        request's group (:meth:`group_of`); it picks the certificate of a per-group route.
        """
        scores, sets, column_0 = self.decisions([query], [group])
        return scores[0], sets[0], bool(column_0[0])

    def decisions(
        self, queries: Sequence[str], groups: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
        """:meth:`decision` of several queries at once, row by row (one router call).

        ``groups``: each query's group (default: None for every query).

        Returns
        -------
        scores : ndarray of shape (n, M)
        sets : list of n lists of model names, best-scored first
        column_0 : ndarray of bool, shape (n,)
        """
        queries = list(queries)
        groups = [None] * len(queries) if groups is None else list(groups)
        if len(groups) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(groups)} groups.")
        scores = np.asarray(self.router.predict_proba(queries), dtype=float)
        scores = scores.reshape(len(queries), -1)
        abstain = None if self.abstention is None else self.abstention.abstain_score(queries)
        by_group = {} if self.certified_groups is None else {"groups": groups}
        decision = np.asarray(
            self.calibration.predict(
                scores, include_abstain=True, abstain_scores=abstain, **by_group
            ),
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
        """The route's calibration and monitors (route-wide and per group), for /healthz."""
        threshold = self.calibration.threshold_
        return {
            "models": list(self.model_names),
            "alpha": float(self.calibration.alpha),
            "delta": float(self.calibration.delta),
            "threshold": None if threshold is None else float(threshold),
            "abstention": self.mode,
            "aggregator": self.config.aggregator,
            "monitor": self.monitor.state(),
            "groups": self.describe_groups(),
            "artifact_id": self.artifact_id,  # which artifact this process serves
            "artifact": str(self.config.artifact),
            "audit_rate": self.config.audit_rate,  # hook (issue 12)
            "policy": None if self.policy is None else self.policy.certificate,  # issue 9
        }

    def describe_groups(self) -> dict[str, Any]:
        """Each group's certificate (None under a marginal one) and monitor state.

        ``above_alpha`` says plainly when a group's realised misrouting rate exceeds
        alpha, also when the route-wide rate does not.
        """
        certified = self.certified_groups or {}
        described: dict[str, Any] = {}
        for name in sorted({*certified, *self.group_monitors}):
            certificate = certified.get(name)
            monitor = self.group_monitors.get(name)
            state = None if monitor is None else monitor.state()
            rate = None if state is None else state["misrouting_rate"]
            described[name] = {
                "certificate": None
                if certificate is None
                else {
                    "n": int(certificate.n),
                    "threshold": float(certificate.threshold),
                    "risk_bound": float(certificate.risk_bound),
                    "delta": float(certificate.delta),
                    "members": list(certificate.members),
                },
                "monitor": state,
                "above_alpha": rate is not None and rate > self.monitor.alpha,
                "note": None
                if rate is None or rate <= self.monitor.alpha
                else f"{name}: misrouting rate {rate:.2f} from feedback under a certificate "
                f"of {self.monitor.alpha:g}",
            }
        return described


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
        None if config.shadow_route is None else load_route(config.shadow_route, monitor_delta),
        artifact.group_classifier,
    )
