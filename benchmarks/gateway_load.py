"""Bounded loopback load test of the routing gateway, side by side with LiteLLM's proxy.

Starts, as separate processes on 127.0.0.1, one replay server per RouterBench model
(real recorded responses, a fixed injected latency: each of ``--latency-ms``, 200 and
300 ms by default), then in turn the RACER gateway and LiteLLM's proxy in front of
them, each with 1 and with 2 worker processes, and sends real RouterBench prompts from
1, 10, 50 and 200 concurrent keep-alive clients for a fixed time per level. With
``--repeats N`` every cell is measured N times, the order of RACER and LiteLLM
alternating between repeats. Both serve one-model sets by default (``--sets one``: RACER's
route calls only its router's best-scored model; LiteLLM has one deployment), so both
make exactly one upstream call per request. Overhead is the client-observed latency
minus the injected backend latency (the same subtraction for both systems). Next to
RACER's client-side p99 it reports the p99 of RACER's own latency metric
(``racer_request_latency_seconds``, scraped from ``/metrics`` before and after each
level), and it prints RACER/LiteLLM ratios. Requests RACER refuses with 429 at its
``server.max_in_flight`` (``--max-in-flight``) are counted apart (``refused``), not as
failures; the last lines check that RACER's p99 overhead is at most LiteLLM's at 50
clients and that throughput does not fall as clients are added.

LiteLLM lives in its own virtualenv, ``benchmarks/.venv-litellm`` (gitignored), made by::

    python3 -m venv benchmarks/.venv-litellm
    benchmarks/.venv-litellm/bin/pip install "litellm[proxy]==1.108.7"

Without it (or with ``--no-litellm``) only RACER is measured. The default router is a
table lookup of noisy scores (no embedding); ``--artifact DIR`` serves a saved artifact.

Usage (from the project root, on a quiet machine: the numbers of a loaded one say little)::

    python benchmarks/gateway_load.py                  # about 10 minutes with LiteLLM
    python benchmarks/gateway_load.py --latency-ms 200 --concurrency 50 --repeats 3
    python benchmarks/gateway_load.py --duration-s 5 --workers 1 --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "routerbench" / "arc_challenge_test.csv"
LITELLM = Path(__file__).resolve().parent / ".venv-litellm" / "bin" / "litellm"
KEY = "sk-load-test-key"  # LiteLLM wants its master key to start with "sk-"
ADMIN_KEY = "sk-load-admin-key"
ENV = "RACER_LOAD_SETUP"  # JSON: what each gateway worker serves


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


class TopOne:
    """A set predictor of one-model sets: the router's best-scored model, never abstaining."""

    alpha = 0.1
    delta = 0.1
    threshold_ = 0.0
    abstention_mode_ = "off"

    def predict(
        self, scores: np.ndarray, *, include_abstain: bool = False, abstain_scores: Any = None
    ) -> np.ndarray:
        scores = np.atleast_2d(np.asarray(scores, dtype=float))
        decision = np.zeros((scores.shape[0], scores.shape[1] + 1), dtype=bool)
        decision[np.arange(scores.shape[0]), 1 + np.argmax(scores, axis=1)] = True
        return decision if include_abstain else decision[:, 1:]


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


def gateway_app():
    """uvicorn factory, run in every gateway worker: the gateway over the replays."""
    from racer.estimator import RACER
    from racer.serve.app import create_app
    from racer.serve.backends import Backend
    from racer.serve.config import parse_config
    from racer.serve.decision_log import DecisionLog
    from racer.serve.gateway import Gateway
    from racer.serve.monitor import RiskMonitor
    from racer.serve.route import Route, load_route

    setup = json.loads(os.environ[ENV])
    config = parse_config(
        {
            "backend_defaults": {"timeout_s": 30, "retries": 0, "max_concurrency": 256},
            "backends": [{"name": m, "base_url": f"{u}/v1"} for m, u in setup["backends"].items()],
            "routes": [
                {"name": "racer", "artifact": setup["artifact"] or "unused", "aggregator": "vote"}
            ],
            "auth": {"api_keys": [KEY], "admin_keys": [ADMIN_KEY]},
            "decision_log": {"url": f"sqlite:///{setup['log_dir']}/decisions.sqlite3"},
            "server": {"max_in_flight": setup["max_in_flight"]},
        }
    )
    if setup["artifact"]:
        route = load_route(config.routes[0], config.monitor.delta)
    else:
        data = load(Path(setup["data"]))
        router = LookupRouter(data.queries, data.labels)
        if setup["sets"] == "one":
            calibration = TopOne()
        else:
            scores = router.predict_proba(list(data.queries))
            calibration = RACER(alpha=0.1, delta=0.1).fit(scores, np.nan_to_num(data.labels))
        route = Route(config.routes[0], router, calibration, data.model_names, RiskMonitor(0.1))
    gateway = Gateway(
        config,
        {"racer": route},
        {b.name: Backend(b) for b in config.backends},
        DecisionLog(config.decision_log.url),
    )
    return create_app(gateway, frozenset([KEY]), frozenset([ADMIN_KEY]))


def serve_gateway(port: int, workers: int) -> None:
    """Child process: ``workers`` gateway processes on ``port``, as ``racer serve`` runs them."""
    import uvicorn

    from racer.cli.serve import http_protocol
    from racer.serve.config import ServerConfig
    from racer.serve.metrics import MULTIPROCESS_ENV

    if workers > 1:
        os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="racer-load-metrics-")
    server = ServerConfig()
    uvicorn.run(
        "gateway_load:gateway_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        timeout_keep_alive=server.read_timeout_s,
        h11_max_incomplete_event_size=server.max_header_bytes,
        http=http_protocol(),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds so far of ``pid`` and its live descendants (Linux /proc)."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def spawn(*arguments: str) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start this script in the replay role; return the process and the JSON line it prints."""
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


def http_get(url: str, key: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except OSError as error:
        return getattr(error, "code", 0) or 0, ""


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 180.0) -> None:
    """Return once ``url`` answers 200; else stop the server and raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} before it was ready")
        if http_get(url, timeout=2)[0] == 200:
            return
        time.sleep(0.5)
    stop(process)
    raise TimeoutError(f"{url} not ready within {timeout_s:g} s")


def start_racer(args: argparse.Namespace, backends: dict[str, str], workers: int) -> dict:
    port = free_port()
    setup = {
        "backends": backends,
        "artifact": args.artifact,
        "data": str(args.data),
        "sets": args.sets,
        "log_dir": tempfile.mkdtemp(prefix="racer-load-"),
        "max_in_flight": args.max_in_flight,
    }
    process = subprocess.Popen(
        [sys.executable, __file__, "--role", "gateway", "--port", str(port)]
        + ["--workers", str(workers)],
        stdin=subprocess.DEVNULL,
        env={**os.environ, ENV: json.dumps(setup), "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/healthz", process)
    return {"process": process, "url": url, "metrics": f"{url}/metrics"}


def start_litellm(backends: dict[str, str], workers: int) -> dict:
    port = free_port()
    model, base = next(iter(backends.items()))
    folder = Path(tempfile.mkdtemp(prefix="litellm-load-"))
    config = folder / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: racer\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {base}/v1\n"
        "      api_key: unused\n"
        "general_settings:\n"
        f"  master_key: {KEY}\n"
    )
    process = subprocess.Popen(
        [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        + ["--num_workers", str(workers)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "litellm.log").open("w"),
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/health/liveliness", process)
    return {"process": process, "url": url, "metrics": None}


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server (its workers follow); SIGKILL after 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def latency_buckets(text: str) -> dict[float, float]:
    """Cumulative counts of ``racer_request_latency_seconds`` (route racer) by upper bound."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("racer_request_latency_seconds_bucket{") and 'route="racer"' in line:
            bound = line.split('le="')[1].split('"')[0]
            counts[float("inf") if bound == "+Inf" else float(bound)] = float(line.split()[-1])
    return counts


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over the observations between two scrapes (ms)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    for k, (bound, count) in enumerate(zip(bounds, counts, strict=True)):
        if count >= rank:
            if bound == float("inf"):
                return bounds[k - 1] * 1000 if k else float("nan")
            lower, below = (bounds[k - 1], counts[k - 1]) if k else (0.0, 0.0)
            share = (rank - below) / (count - below) if count > below else 1.0
            return round((lower + (bound - lower) * share) * 1000, 2)
    return float("nan")


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
    url: str, prompts: list[str], clients: int, duration_s: float, latency_ms: float
) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``duration_s``: latencies, overheads, failures."""
    latencies, overheads, set_sizes = [], [], []
    failures: list[str] = []
    refused = 0
    bodies = [
        json.dumps({"model": "racer", "messages": [{"role": "user", "content": p}]}).encode()
        for p in prompts
    ]
    connections = [await Connection.open(url) for _ in range(clients)]
    deadline = time.perf_counter() + duration_s

    async def client(index: int) -> None:
        nonlocal refused
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
            if status == 429:  # admission control: the client backs off as Retry-After says
                refused += 1
                await asyncio.sleep(1.0)
                continue
            if status != 200:
                failures.append(f"HTTP {status}: {payload[:200]!r}")
                continue
            racer = json.loads(payload).get("racer")
            set_sizes.append(len(racer["set"]) if racer else 1)
            latencies.append(elapsed_ms)
            overheads.append(elapsed_ms - latency_ms)

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
        "refused": refused,
        "rps": round(len(latencies) / wall, 1),
        "mean_set_size": round(float(np.mean(set_sizes)), 2) if set_sizes else float("nan"),
        "latency_p50_ms": pct(latencies, 50),
        "latency_p99_ms": pct(latencies, 99),
        "overhead_p50_ms": pct(overheads, 50),
        "overhead_p99_ms": pct(overheads, 99),
        "first_failures": failures[:3],
    }


HEADER = (
    "backend_ms",
    "system",
    "workers",
    "clients",
    "requests",
    "failed",
    "refused",
    "rps",
    "mean_set_size",
    "latency_p50_ms",
    "latency_p99_ms",
    "metric_p99_ms",
    "overhead_p50_ms",
    "overhead_p99_ms",
    "server_cpu_ms_per_request",
)
RATIOS = ("overhead_p50_ms", "overhead_p99_ms", "latency_p99_ms", "server_cpu_ms_per_request")


def scrape(server: dict) -> dict[float, float]:
    """The gateway's latency histogram now (empty for a server without one)."""
    if not server["metrics"]:
        return {}
    return latency_buckets(http_get(server["metrics"], ADMIN_KEY)[1])


def measure(
    args: argparse.Namespace,
    system: str,
    server: dict,
    workers: int,
    prompts: list[str],
    latency_ms: float,
) -> list[dict]:
    """Every concurrency level against one running server."""
    asyncio.run(load_level(server["url"], prompts, 4, 2.0, latency_ms))  # warm-up
    rows = []
    for clients in (int(c) for c in args.concurrency.split(",")):
        before = scrape(server)
        cpu_before = process_tree_cpu(server["process"].pid)
        row = asyncio.run(load_level(server["url"], prompts, clients, args.duration_s, latency_ms))
        cpu = process_tree_cpu(server["process"].pid) - cpu_before
        row["server_cpu_ms_per_request"] = round(1000 * cpu / max(row["requests"], 1), 2)
        row["metric_p99_ms"] = float("nan")
        if server["metrics"]:
            row["metric_p99_ms"] = histogram_quantile(0.99, before, scrape(server))
        rows.append({"backend_ms": latency_ms, "system": system, "workers": workers, **row})
        print(" | ".join(str(rows[-1][h]) for h in HEADER), flush=True)
    return rows


def ratio_rows(rows: list[dict]) -> list[dict]:
    """RACER / LiteLLM for each (backend latency, workers, clients, repeat) measured for both."""
    index = {
        (r["repeat"], r["backend_ms"], r["system"], r["workers"], r["clients"]): r for r in rows
    }
    ratios = []
    for (repeat, backend_ms, system, workers, clients), racer in index.items():
        same = (repeat, backend_ms, "litellm")
        litellm_workers = workers if (*same, workers, clients) in index else 1
        other = index.get((*same, litellm_workers, clients))
        if system != "racer" or other is None:
            continue
        ratio = {
            "repeat": repeat,
            "backend_ms": backend_ms,
            "workers": workers,
            "litellm_workers": litellm_workers,
            "clients": clients,
        }
        for name in RATIOS:
            ratio[name] = round(racer[name] / other[name], 2) if other[name] > 0 else float("nan")
        ratios.append(ratio)
    return ratios


def throughput_checks(rows: list[dict]) -> list[str]:
    """Per system, workers and backend latency: does throughput hold as clients are added?"""
    lines = []
    cells = sorted({(r["repeat"], r["backend_ms"], r["system"], r["workers"]) for r in rows})
    for repeat, backend_ms, system, workers in cells:
        levels = sorted(
            (r["clients"], r["rps"])
            for r in rows
            if (r["repeat"], r["backend_ms"], r["system"], r["workers"])
            == (repeat, backend_ms, system, workers)
        )
        peak = max(rps for _, rps in levels)
        last = levels[-1][1]
        verdict = "PASS" if last >= 0.9 * peak else "FAIL"
        lines.append(
            f"repeat {repeat}, {backend_ms:g} ms, {system} x{workers}: requests/s by clients "
            + ", ".join(f"{c}: {rps}" for c, rps in levels)
            + f" ({verdict}: at {levels[-1][0]} clients {last} >= 0.9 x peak {peak})"
        )
    return lines


def markdown(rows: list[dict], ratios: list[dict], note: str) -> str:
    header = ("repeat", *HEADER)
    lines = [note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    if ratios:
        names = ("repeat", "backend_ms", "workers", "litellm_workers", "clients", *RATIOS)
        lines += ["", "RACER / LiteLLM (below 1: RACER is lower)", ""]
        lines += ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(str(r[n]) for n in names) + " |" for r in ratios]
    return "\n".join(lines) + "\n"


def measure_latency(
    args: argparse.Namespace,
    prompts: list[str],
    latency_ms: float,
    repeat: int,
    racer_workers: list[int],
    litellm_workers: list[int],
) -> list[dict]:
    """Every system and worker count over replay servers answering after ``latency_ms``."""
    replays, backends = spawn(
        "--role", "replay", "--data", str(args.data), "--latency-ms", str(latency_ms),
        "--jitter-ms", str(args.jitter_ms),
    )  # fmt: skip
    rows: list[dict] = []
    try:
        for workers in sorted(set(racer_workers) | set(litellm_workers)):
            starters = []
            if workers in racer_workers:
                starters.append(("racer", lambda w=workers: start_racer(args, backends, w)))
            if workers in litellm_workers:
                starters.append(("litellm", lambda w=workers: start_litellm(backends, w)))
            if repeat % 2:  # alternate which system runs first
                starters.reverse()
            for system, start in starters:
                server = start()
                try:
                    measured = measure(args, system, server, workers, prompts, latency_ms)
                finally:
                    stop(server["process"])
                rows += [{"repeat": repeat, **row} for row in measured]
    finally:
        replays.stdin.close()
        try:
            replays.wait(timeout=10)
        except subprocess.TimeoutExpired:
            replays.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RouterBench CSV.")
    parser.add_argument(
        "--latency-ms",
        default="200,300",
        help="Injected backend latencies, comma-separated (200: RACER's old cliff; 300: below).",
    )
    parser.add_argument(
        "--jitter-ms",
        type=float,
        default=0.0,
        help="Uniform extra backend latency, at most (it then counts as overhead).",
    )
    parser.add_argument("--duration-s", type=float, default=10.0, help="Time per level.")
    parser.add_argument(
        "--concurrency", default="1,10,50,200", help="Comma-separated client counts."
    )
    parser.add_argument("--repeats", type=int, default=1, help="Measure every cell this often.")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        help="RACER's server.max_in_flight (admission control: 429 beyond).",
    )
    parser.add_argument("--workers", default="1,2", help="RACER worker counts, comma-separated.")
    parser.add_argument(
        "--litellm-workers",
        default="1,2",
        help="LiteLLM worker counts (--num_workers), comma-separated. On a loaded 2-core "
        "machine its extra workers may die at start-up (too slow for the health check).",
    )
    parser.add_argument(
        "--sets",
        choices=["one", "racer"],
        default="one",
        help="one: one-model sets (the router's top model); racer: RACER's calibrated sets.",
    )
    parser.add_argument("--artifact", help="Serve this artifact (embedding included).")
    parser.add_argument("--no-litellm", action="store_true", help="Measure RACER only.")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    parser.add_argument("--markdown", type=Path, help="Also write the tables as Markdown here.")
    parser.add_argument("--role", choices=["replay", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "replay":
        serve_replays(args.data, float(args.latency_ms) / 1000, args.jitter_ms / 1000)
        return
    if args.role == "gateway":
        serve_gateway(args.port, int(args.workers))
        return

    with_litellm = not args.no_litellm and LITELLM.exists()
    if not with_litellm and not args.no_litellm:
        print(f"LiteLLM not found at {LITELLM} (see the module docstring): RACER only.")
    prompts = [str(q) for q in load(args.data).queries]
    rows: list[dict] = []
    print(" | ".join(HEADER), flush=True)
    racer_workers = [int(w) for w in args.workers.split(",")]
    litellm_workers = [int(w) for w in args.litellm_workers.split(",")] if with_litellm else []
    for repeat in range(args.repeats):
        for latency_ms in (float(x) for x in args.latency_ms.split(",")):
            rows += measure_latency(
                args, prompts, latency_ms, repeat, racer_workers, litellm_workers
            )
    ratios = ratio_rows(rows)
    note = (
        f"{os.cpu_count()} CPUs shared by the load generator, the replay servers and the "
        f"gateway (load average at the end: {os.getloadavg()[0]:.1f}); backend latency "
        f"{args.latency_ms} ms + U(0, {args.jitter_ms:g}) ms; "
        f"{args.duration_s:g} s per level; sets: {args.sets}; router: "
        f"{'artifact ' + args.artifact if args.artifact else 'table lookup (no embedding)'}"
    )
    print("\n" + markdown(rows, ratios, note))
    for row in rows:
        for failure in row["first_failures"]:
            print(f"   {row['system']} x{row['workers']} @{row['clients']} failure: {failure}")
    levels = [int(c) for c in args.concurrency.split(",")]
    checked = 50 if 50 in levels else max(levels)
    for ratio in (r for r in ratios if r["clients"] == checked):
        racer = next(
            r for r in rows
            if (r["repeat"], r["backend_ms"], r["system"], r["workers"], r["clients"])
            == (ratio["repeat"], ratio["backend_ms"], "racer", ratio["workers"], checked)
        )  # fmt: skip
        metric_error = abs(racer["metric_p99_ms"] / racer["latency_p99_ms"] - 1)
        print(
            f"repeat {ratio['repeat']}, {ratio['backend_ms']:g} ms, {ratio['workers']} RACER / "
            f"{ratio['litellm_workers']} LiteLLM worker(s), {checked} "
            "clients: p99 overhead RACER/LiteLLM "
            f"{ratio['overhead_p99_ms']} ({'PASS' if ratio['overhead_p99_ms'] <= 1 else 'FAIL'}"
            f" <= 1); RACER p99 metric vs client p99: {metric_error:.0%} off "
            f"({'PASS' if metric_error <= 0.2 else 'FAIL'} <= 20 %)"
        )
    for line in throughput_checks(rows):
        print(line)
    if args.out:
        args.out.write_text(json.dumps({"note": note, "rows": rows, "ratios": ratios}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(rows, ratios, note))


if __name__ == "__main__":
    main()
