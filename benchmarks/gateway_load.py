"""Bounded loopback load test of the routing gateway.

Starts, as separate processes on 127.0.0.1, one replay server per RouterBench model
(real recorded responses, a fixed injected latency) and the gateway in front of
them, then sends real RouterBench prompts from 1, 10 and 50 concurrent clients for
a fixed time each. Reports requests per second, failures, and the gateway overhead:
the client-observed latency minus the slowest backend call of the request's set
(as the gateway measured it), p50 and p99. The target is a p50 overhead under 5 ms
at 50 clients, excluding the embedding: by default the base router is a table
lookup of noisy scores (no embedding), calibrated with the real RACER estimator;
``--artifact DIR`` serves a saved artifact instead (embedding included).

Usage (from the project root)::

    python benchmarks/gateway_load.py                   # about 80 s
    python benchmarks/gateway_load.py --latency-ms 200 --duration-s 5 --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "routerbench" / "arc_challenge_test.csv"
KEY = "load-test-key"


def load(path: Path):
    from racer.data.load import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(path)


class LookupRouter:
    """Noisy recorded labels looked up by query text: a base router with no embedding cost."""

    def __init__(self, queries: np.ndarray, labels: np.ndarray, seed: int = 0):
        rng = np.random.default_rng(seed)
        noisy = 0.6 * np.nan_to_num(labels) + 0.4 * rng.uniform(size=labels.shape)
        self._rows = {str(q): i for i, q in enumerate(queries)}
        self._scores = np.clip(noisy, 0, 1)
        self._unknown = np.full(labels.shape[1], 0.5)

    def predict_proba(self, queries: list[str]) -> np.ndarray:
        return np.vstack(
            [self._scores[self._rows[q]] if q in self._rows else self._unknown for q in queries]
        )


def serve_replays(data_path: Path, latency_s: float, jitter_s: float) -> None:
    """Child process: one replay server per model; print their URLs; serve until stdin closes."""
    from racer.serve.replay import ReplayBook, create_replay_app
    from racer.serve.runner import ServerThread

    book = ReplayBook(load(data_path))
    apps = [
        create_replay_app(book, m, latency_s=latency_s, jitter_s=jitter_s, seed=k)
        for k, m in enumerate(book.model_names)
    ]
    with ServerThread(apps) as servers:
        print(json.dumps(dict(zip(book.model_names, servers.urls, strict=True))), flush=True)
        sys.stdin.read()


def serve_gateway(data_path: Path, backend_urls: dict[str, str], artifact: str | None) -> None:
    """Child process: the gateway over the replays; print its URL; serve until stdin closes."""
    from racer.estimator import RACER
    from racer.serve.app import create_app
    from racer.serve.backends import Backend
    from racer.serve.config import parse_config
    from racer.serve.decision_log import DecisionLog
    from racer.serve.gateway import Gateway, Route, load_route
    from racer.serve.monitor import RiskMonitor
    from racer.serve.runner import ServerThread

    log_dir = tempfile.mkdtemp(prefix="racer-load-")
    config = parse_config(
        {
            "backend_defaults": {"timeout_s": 30, "retries": 0, "max_concurrency": 256},
            "backends": [{"name": m, "base_url": f"{u}/v1"} for m, u in backend_urls.items()],
            "routes": [{"name": "racer", "artifact": artifact or "unused", "aggregator": "vote"}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": f"sqlite:///{log_dir}/decisions.sqlite3"},
        }
    )
    if artifact:
        route = load_route(config.routes[0], config.monitor.delta)
    else:
        data = load(data_path)
        router = LookupRouter(data.queries, data.labels)
        scores = router.predict_proba(list(data.queries))
        calibration = RACER(alpha=0.1, delta=0.1).fit(scores, np.nan_to_num(data.labels))
        route = Route(config.routes[0], router, calibration, data.model_names, RiskMonitor(0.1))
    gateway = Gateway(
        config,
        {"racer": route},
        {b.name: Backend(b) for b in config.backends},
        DecisionLog(config.decision_log.url),
    )
    with ServerThread([create_app(gateway, frozenset([KEY]))]) as servers:
        print(json.dumps({"url": servers.urls[0]}), flush=True)
        sys.stdin.read()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(*arguments: str) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start this script in a child role; return the process and the JSON line it prints."""
    process = subprocess.Popen(
        [sys.executable, __file__, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError(f"child {arguments[:2]} failed to start")
    return process, json.loads(line)


class Connection:
    """One keep-alive HTTP/1.1 connection: a load generator far lighter than a full client,
    so that its own cost does not inflate the measured gateway overhead."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load_level(
    url: str, prompts: list[str], clients: int, duration_s: float
) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``duration_s``: latencies, overheads, failures."""
    latencies, overheads, server_overheads, set_sizes = [], [], [], []
    failures: list[str] = []
    bodies = [
        json.dumps({"model": "racer", "messages": [{"role": "user", "content": p}]}).encode()
        for p in prompts
    ]
    connections = [await Connection.open(url) for _ in range(clients)]
    deadline = time.perf_counter() + duration_s

    async def client(index: int) -> None:
        sent = index
        while time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += clients
            started = time.perf_counter()
            try:
                status, payload = await connections[index].post("/v1/chat/completions", body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                failures.append(repr(error))
                connections[index] = await Connection.open(url)
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            if status != 200:
                failures.append(f"HTTP {status}: {payload[:200]!r}")
                continue
            racer = json.loads(payload)["racer"]
            slowest = max((b["latency_ms"] for b in racer["backends"].values()), default=0.0)
            set_sizes.append(len(racer["set"]))
            latencies.append(elapsed_ms)
            overheads.append(elapsed_ms - slowest)
            server_overheads.append(racer["latency_ms"] - slowest)

    wall = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - wall
    for connection in connections:
        connection.close()

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 2) if values else float("nan")

    return {
        "clients": clients,
        "requests": len(latencies),
        "failed": len(failures),
        "rps": round(len(latencies) / wall, 1),
        "mean_set_size": round(float(np.mean(set_sizes)), 2) if set_sizes else float("nan"),
        "latency_p50_ms": pct(latencies, 50),
        "overhead_p50_ms": pct(overheads, 50),
        "overhead_p99_ms": pct(overheads, 99),
        "server_overhead_p50_ms": pct(server_overheads, 50),
        "server_overhead_p99_ms": pct(server_overheads, 99),
        "first_failures": failures[:3],
    }


HEADER = (
    "clients",
    "requests",
    "failed",
    "rps",
    "mean_set_size",
    "latency_p50_ms",
    "overhead_p50_ms",
    "overhead_p99_ms",
    "server_overhead_p50_ms",
    "server_overhead_p99_ms",
    "gateway_cpu_ms_per_request",
    "replay_cpu_ms_per_request",
    "client_cpu_ms_per_request",
)


def run_regime(args: argparse.Namespace, jitter_ms: float, prompts: list[str]) -> list[dict]:
    """Fresh replay servers (``jitter_ms``) and gateway; one row per concurrency level."""
    children = []
    try:
        replays, backend_urls = spawn(
            "--role",
            "replay",
            "--data",
            str(args.data),
            "--latency-ms",
            str(args.latency_ms),
            "--jitter-ms",
            str(jitter_ms),
        )
        children.append(replays)
        gateway_arguments = [
            "--role",
            "gateway",
            "--data",
            str(args.data),
            "--backends",
            json.dumps(backend_urls),
        ]
        if args.artifact:
            gateway_arguments += ["--artifact", args.artifact]
        gateway, started = spawn(*gateway_arguments)
        children.append(gateway)
        asyncio.run(load_level(started["url"], prompts, 4, 1.0))  # warm-up: connections, caches
        results = []
        for clients in args.concurrency.split(","):
            cpu_before = [cpu_seconds(child.pid) for child in children]
            client_before = time.process_time()
            row = asyncio.run(load_level(started["url"], prompts, int(clients), args.duration_s))
            cpu_used = [cpu_seconds(c.pid) - b for c, b in zip(children, cpu_before, strict=True)]
            requests = max(row["requests"], 1)
            row["replay_cpu_ms_per_request"] = round(1000 * cpu_used[0] / requests, 2)
            row["gateway_cpu_ms_per_request"] = round(1000 * cpu_used[1] / requests, 2)
            row["client_cpu_ms_per_request"] = round(
                1000 * (time.process_time() - client_before) / requests, 2
            )
            results.append(row)
        return results
    finally:
        for child in children:
            child.stdin.close()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RouterBench CSV.")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="Injected backend latency.")
    parser.add_argument(
        "--jitter-ms",
        type=float,
        default=300.0,
        help="Uniform extra backend latency, at most, of the jittered regime (a regime "
        "without jitter, where requests arrive in bursts, is always run too).",
    )
    parser.add_argument(
        "--duration-s", type=float, default=10.0, help="Time per concurrency level."
    )
    parser.add_argument("--concurrency", default="1,10,50", help="Comma-separated client counts.")
    parser.add_argument(
        "--target-ms", type=float, default=5.0, help="p50 overhead target at the most clients."
    )
    parser.add_argument("--artifact", help="Serve this artifact (embedding included).")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    parser.add_argument("--role", choices=["replay", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--backends", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "replay":
        serve_replays(args.data, args.latency_ms / 1000, args.jitter_ms / 1000)
        return
    if args.role == "gateway":
        serve_gateway(args.data, json.loads(args.backends), args.artifact)
        return

    prompts = [str(q) for q in load(args.data).queries]
    regimes = {
        jitter: run_regime(args, jitter, prompts) for jitter in dict.fromkeys([args.jitter_ms, 0.0])
    }
    router = f"artifact {args.artifact}" if args.artifact else "table lookup (no embedding)"
    print(
        f"{os.cpu_count()} CPUs shared by the load generator, the replay servers and the "
        f"gateway; {args.duration_s:g} s per level; router: {router}"
    )
    verdicts = []
    for jitter, results in regimes.items():
        print(f"\nbackend latency {args.latency_ms:g} ms + U(0, {jitter:g}) ms")
        print(" | ".join(HEADER))
        for row in results:
            print(" | ".join(str(row[h]) for h in HEADER))
            for failure in row["first_failures"]:
                print("   failure:", failure)
        top = max(results, key=lambda row: row["clients"])
        passed = top["overhead_p50_ms"] < args.target_ms and not any(r["failed"] for r in results)
        verdicts.append(passed)
        print(
            f"{'PASS' if passed else 'FAIL'}: p50 overhead {top['overhead_p50_ms']} ms at "
            f"{top['clients']} clients (target < {args.target_ms:g} ms, no failed requests)"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "latency_ms": args.latency_ms,
                    "regimes": [
                        {"jitter_ms": jitter, "levels": results}
                        for jitter, results in regimes.items()
                    ],
                },
                indent=2,
            )
        )
    if not all(verdicts):
        sys.exit(1)


if __name__ == "__main__":
    main()
