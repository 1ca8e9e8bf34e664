"""The gateway's latency histogram: quantiles read from it match the observed ones."""

from __future__ import annotations

import numpy as np
from prometheus_client import generate_latest

from racer.serve.metrics import GatewayMetrics


def _quantile_from_histogram(q: float, text: str) -> float:
    """Prometheus' histogram_quantile (linear within the bucket), in seconds."""
    bounds, counts = [], []
    for line in text.splitlines():
        if line.startswith("racer_request_latency_seconds_bucket") and "+Inf" not in line:
            bounds.append(float(line.split('le="')[1].split('"')[0]))
            counts.append(float(line.split()[-1]))
    rank = q * counts[-1]
    k = int(np.searchsorted(counts, rank))
    lower, below = (bounds[k - 1], counts[k - 1]) if k else (0.0, 0.0)
    return lower + (bounds[k] - lower) * (rank - below) / (counts[k] - below)


def test_the_p99_read_from_the_latency_metric_is_within_ten_percent_of_the_observed():
    rng = np.random.default_rng(0)
    for centre in (0.004, 0.03, 0.31, 0.9, 2.7, 14.0):  # latencies around each scale
        metrics = GatewayMetrics(3)
        latencies = centre * (1 + rng.gamma(2.0, 0.15, size=2000))
        for latency in latencies:
            metrics.observe_latency("r", float(latency))
        text = generate_latest(metrics.registry).decode()
        for q in (0.5, 0.99):
            observed = float(np.quantile(latencies, q))
            estimate = _quantile_from_histogram(q, text)
            assert abs(estimate / observed - 1) <= 0.10, (centre, q, estimate, observed)
