"""The gateway's latency histogram: quantiles read from it match the observed ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from prometheus_client import generate_latest

from racer.serve.metrics import GatewayMetrics

SRC = Path(__file__).resolve().parents[1] / "src"


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


WORKER = """
import json, os, sys
from racer.serve.metrics import GatewayMetrics
metrics = GatewayMetrics(3)
metrics.set_artifact("r", sys.argv[1])
metrics.requests_in_flight(int(sys.argv[2]))
text = metrics.render().decode()
if sys.argv[3] == "close":
    metrics.close()
print(json.dumps({"pid": os.getpid(), "text": text}))
"""


def test_per_worker_gauges_leave_with_their_worker_dead_or_stopped(tmp_path):
    """Under --workers, a worker killed with requests in flight (it never closes) leaves
    no stale artifact id or in-flight count once another worker starts."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(SRC)}

    def worker(artifact: str, in_flight: int, close: str) -> dict:
        run = subprocess.run(
            [sys.executable, "-c", WORKER, artifact, str(in_flight), close],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(run.stdout)

    killed = worker("old-artifact", 3, "no")  # as if killed: its files stay
    assert list(tmp_path.glob(f"gauge_live*_{killed['pid']}.db"))
    fresh = worker("new-artifact", 0, "close")
    info = f'racer_route_artifact_info{{artifact_id="new-artifact",pid="{fresh["pid"]}",route="r"}}'
    assert f"{info} 1.0" in fresh["text"]
    assert "old-artifact" not in fresh["text"]
    assert "racer_requests_in_flight 0.0" in fresh["text"]
    assert not list(tmp_path.glob("gauge_live*"))  # the stopped worker removed its own
