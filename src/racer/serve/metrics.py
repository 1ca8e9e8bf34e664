"""Prometheus metrics of one gateway (its own registry, so several can share a process).

With several worker processes (``racer serve --workers N``) the metrics use
prometheus_client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` names a directory
shared by the workers (set before they start), every scrape, whichever worker answers
it, sums the counters and histograms of all workers, and the monitor gauges show the
most recent value (every worker derives the same monitor state from the database).
Breakers are per process: ``racer_breaker_state`` shows the worst state among the
workers, and ``racer_breaker_transitions_total`` sums their transitions.
Per-worker gauges (requests in flight, the artifact each worker serves) leave the
shared files when their worker stops, and a starting worker removes those of workers
that died without stopping (``kill -9``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from racer.serve.backends import BackendCall
from racer.serve.breaker import CircuitBreaker

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

# RiskMonitor.state() key -> (metric name after "racer_monitor_", help text)
_MONITOR_GAUGES = {
    "n_feedback": ("feedback", "Feedback received (the monitor's sample size)."),
    "misrouting_rate": ("misrouting_rate", "Realised misrouting rate from feedback."),
    "risk_lower_bound": (
        "risk_lower_bound",
        "Anytime-valid lower confidence bound on the misrouting rate.",
    ),
    "alpha": ("alpha", "The calibrated risk level."),
    "alarm": (  # help text: hook (issue 12)
        "alarm",
        "1 when feedback no longer supports misrouting risk <= alpha: recalibrate from the "
        "audited sample: racer dataset --from-log URL --route ROUTE --out audited.jsonl, "
        "racer grade, racer calibrate, then POST /admin/reload (the gateway log has the "
        "full commands).",
    ),
}
# Upper bounds 1 ms .. 120 s, at most 25 % apart, so that a quantile read from the
# histogram (linear within a bucket) stays within about 10 % of the observed one.
_STEPS = (1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9)
_LATENCY_BUCKETS = (*(round(s * 10.0**e, 6) for e in range(-3, 2) for s in _STEPS), 100, 120)


class GatewayMetrics:
    """Requests, set sizes, abstentions, backend latencies, errors, cost, breakers, the monitor.

    Parameters
    ----------
    max_set_size : int
        The largest possible set (the number of backends), for the set-size buckets.
    """

    def __init__(self, max_set_size: int):
        forget_dead_processes()
        self.registry = CollectorRegistry()

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, labels, registry=self.registry)

        def histogram(name: str, text: str, label: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, text, [label], buckets=buckets, registry=self.registry)

        self.requests = counter(
            "racer_requests",
            "Chat completion requests by route and outcome (answered, abstained, failed).",
            "route",
            "outcome",
        )
        self.set_size = histogram(
            "racer_set_size",
            "Number of models in the calibrated set.",
            "route",
            [float(k) for k in range(max_set_size + 1)],
        )
        self.abstentions = counter(
            "racer_abstentions", "Requests answered with the abstention message.", "route"
        )
        self.request_latency = histogram(
            "racer_request_latency_seconds",
            "Latency of chat completions as the client sees it: from the request's arrival "
            "at the app to the last byte of the answer sent.",
            "route",
            _LATENCY_BUCKETS,
        )
        self.backend_latency = histogram(
            "racer_backend_latency_seconds",
            "Latency of backend calls (with retries).",
            "backend",
            _LATENCY_BUCKETS,
        )
        self.backend_errors = counter(
            "racer_backend_errors", "Backend calls that failed after retries.", "backend"
        )
        self.cost = counter("racer_cost_usd", "US dollars spent on backend calls.", "backend")
        self.uncertified = counter(
            "racer_uncertified_answers",
            "Answers served outside the route's certificate, by reason (reference_failed, "
            "top_model_refused, fallback).",
            "route",
            "reason",
        )
        self.breaker_state = Gauge(
            "racer_breaker_state",
            "Circuit breaker state of each backend: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.breaker_transitions = counter(
            "racer_breaker_transitions",
            "Circuit breaker transitions of each backend, by the state entered.",
            "backend",
            "state",
        )
        self._breakers: dict[str, CircuitBreaker] = {}
        self.monitor = {
            key: Gauge(
                f"racer_monitor_{name}",
                text,
                ["route"],
                registry=self.registry,
                multiprocess_mode="mostrecent",
            )
            for key, (name, text) in _MONITOR_GAUGES.items()
        }
        self.group_requests = counter(
            "racer_group_requests",
            "Chat completion requests by route, group (racer_group, or the pooled group it "
            "was served under) and outcome.",
            "route",
            "group",
            "outcome",
        )
        self.group_monitor = {
            key: Gauge(
                f"racer_group_monitor_{name}",
                f"Per group: {text}",
                ["route", "group"],
                registry=self.registry,
                multiprocess_mode="mostrecent",
            )
            for key, (name, text) in _MONITOR_GAUGES.items()
        }
        self.in_flight = Gauge(
            "racer_requests_in_flight",
            "Chat completions being worked on (summed over worker processes).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.overloaded = counter(
            "racer_requests_overloaded",
            "Chat completions refused with 429 at server.max_in_flight (admission control).",
        )
        self.route_artifact = Gauge(
            "racer_route_artifact_info",
            "1 for the artifact that serves each route (per worker process: workers that "
            "disagree after a reload show up as several artifact ids).",
            ["route", "artifact_id"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )

    def observe_request(
        self, route: str, outcome: str, set_size: int, calls: Iterable[BackendCall]
    ) -> None:
        """Count one chat completion and its backend calls."""
        self.requests.labels(route, outcome).inc()
        self.set_size.labels(route).observe(set_size)
        if outcome == "abstained":
            self.abstentions.labels(route).inc()
        for call in calls:
            self.observe_call(call)

    def observe_group(self, route: str, group: str, outcome: str) -> None:
        """Count one chat completion of a group."""
        self.group_requests.labels(route, group, outcome).inc()

    def observe_latency(self, route: str, latency_s: float) -> None:
        """Record one chat completion's client-side latency."""
        self.request_latency.labels(route).observe(latency_s)

    def observe_call(self, call: BackendCall) -> None:
        """Count one backend call."""
        self.backend_latency.labels(call.backend).observe(call.latency_s)
        if not call.ok:
            self.backend_errors.labels(call.backend).inc()
        if call.cost_usd:
            self.cost.labels(call.backend).inc(call.cost_usd)

    def observe_uncertified(self, route: str, reason: str) -> None:
        """Count one answer served outside ``route``'s certificate."""
        self.uncertified.labels(route, reason).inc()

    def watch_breakers(self, breakers: Mapping[str, CircuitBreaker]) -> None:
        """Export these backends' breaker states and count their transitions."""
        for name, breaker in breakers.items():
            self._breakers[name] = breaker
            breaker.listeners.append(self._breaker_moved)
            self.breaker_state.labels(name).set(breaker.state_code)

    def _breaker_moved(self, backend: str, old: str, new: str) -> None:
        self.breaker_transitions.labels(backend, new).inc()
        self.breaker_state.labels(backend).set(self._breakers[backend].state_code)

    def set_monitor(self, route: str, state: dict[str, Any]) -> None:
        """Publish a route's monitor state (see :meth:`RiskMonitor.state`)."""
        for key, gauge in self.monitor.items():
            gauge.labels(route).set(float(state[key] or 0.0))

    def set_group_monitor(self, route: str, group: str, state: dict[str, Any]) -> None:
        """Publish the monitor state of one group of a route (label ``group``)."""
        for key, gauge in self.group_monitor.items():
            gauge.labels(route, group).set(float(state[key] or 0.0))

    def requests_in_flight(self, count: int) -> None:
        """Publish the number of chat completions in flight (admission control)."""
        self.in_flight.set(count)

    def refused_overloaded(self) -> None:
        """Count a chat completion refused at ``server.max_in_flight``."""
        self.overloaded.inc()

    def set_artifact(self, route: str, artifact_id: str | None) -> None:
        """Publish which artifact serves ``route``."""
        self.route_artifact.labels(route, artifact_id or "unknown").set(1)

    def replace_artifact(self, route: str, previous: str | None, current: str | None) -> None:
        """Publish that ``current`` replaced ``previous`` on ``route``."""
        if (previous or "unknown") != (current or "unknown"):
            old = self.route_artifact.labels(route, previous or "unknown")
            old.set(0)  # with several workers the 0 stays in the shared files
            self.route_artifact.remove(route, previous or "unknown")
        self.set_artifact(route, current)

    def close(self) -> None:
        """Remove this process's per-worker gauges from the shared files (at shutdown)."""
        directory = os.environ.get(MULTIPROCESS_ENV)
        if directory:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), directory)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker, if several)."""
        for name, breaker in self._breakers.items():  # an open breaker turns half-open in time
            self.breaker_state.labels(name).set(breaker.state_code)
        if os.environ.get(MULTIPROCESS_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def forget_dead_processes() -> list[int]:
    """Remove the per-worker gauges of workers no longer alive; return their pids."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        return []
    from prometheus_client import multiprocess

    dead = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # alive, another user's
            continue
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return sorted(dead)
