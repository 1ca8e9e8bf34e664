"""``racer serve`` and ``racer replay-server``: the gateway and recorded backends.

Parsing and printing only; the work is in :mod:`racer.serve`. Importing this module
needs only Typer: the server libraries (the ``serve`` extra) are imported when a
command runs, so ``racer`` works without them.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from racer.cli.common import fail, one_line, user_errors, warnings_as_notes


def port_in_use_error(host: str, port: int) -> str | None:
    """The ``Error:`` line when ``host:port`` cannot be bound, else None (port 0: free)."""
    import errno
    import socket

    if port == 0:
        return None
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind((host, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return f"Error: port {port} is already in use; pass another --port."
        return f"Error: cannot listen on {host}:{port} ({error.strerror}); check --host and --port."
    return None


def _require_serve_extra() -> None:
    with user_errors(missing_extra="serve"):
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import uvicorn  # noqa: F401
        import yaml  # noqa: F401


def serve(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The gateway YAML file (see racer.serve.config).")
    ],
    host: Annotated[
        str | None, typer.Option(help="Listen address; default: server.host of the file.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port; default: server.port of the file.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes. With more than one, metrics are aggregated across "
            "workers and every monitor follows the shared decision log.",
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a RACER artifact as an OpenAI-compatible routing gateway."""
    _require_serve_extra()
    import uvicorn

    from racer.serve.config import ConfigError, load_config
    from racer.serve.reload import install_sighup

    try:
        gateway_config = load_config(config)
    except ConfigError as error:
        fail(str(error))
    server = gateway_config.server
    options = {
        "host": host or server.host,
        "port": server.port if port is None else port,
        "log_level": log_level,
        "timeout_keep_alive": server.read_timeout_s,
        "h11_max_incomplete_event_size": server.max_header_bytes,
        "http": http_protocol(),
    }
    busy = port_in_use_error(options["host"], options["port"])
    if busy:
        fail(busy)
    if workers > 1:
        _serve_workers(config, gateway_config, workers, options)
        return
    from racer.serve.app import app_from_config

    try:
        app = app_from_config(gateway_config)
        install_sighup(app, config)  # hook (issue 12): SIGHUP reloads the artifacts
    except (ConfigError, RuntimeError) as error:
        fail(str(error))
    uvicorn.run(app, **options)


def http_protocol() -> str:
    """uvicorn's httptools protocol with the read deadline and head limit, else h11.

    An import string (not the class), so that worker processes import it themselves.
    """
    try:
        import racer.serve.protocol  # noqa: F401 (needs httptools)
    except ImportError:  # no httptools: h11 enforces h11_max_incomplete_event_size itself
        return "h11"
    return "racer.serve.protocol:GuardedHttpToolsProtocol"


def _serve_workers(path: Path, gateway_config: Any, workers: int, options: dict[str, Any]) -> None:
    """Run ``workers`` processes sharing the port, the decision log and the metrics."""
    import logging
    import math
    import os
    import tempfile

    import uvicorn

    from racer.serve.app import CONFIG_ENV
    from racer.serve.metrics import MULTIPROCESS_ENV
    from racer.serve.reload import SHARED_RELOAD_ENV, AbortedRestartAlarm

    if gateway_config.decision_log.url == "sqlite:///:memory:":
        fail(
            "--workers needs a shared decision log; set decision_log.url to a "
            "sqlite:/// file or a postgresql:// URL in the configuration."
        )
    from racer.serve.decision_log import DecisionLog

    try:  # one clear line, not a traceback per worker, when the log cannot be reached
        DecisionLog.from_config(gateway_config.decision_log).close()
    except RuntimeError as error:
        fail(str(error))
    metrics_dir = tempfile.mkdtemp(prefix="racer-metrics-")
    os.environ[MULTIPROCESS_ENV] = metrics_dir  # read by each worker's prometheus_client
    os.environ[CONFIG_ENV] = str(path.resolve())
    os.environ[SHARED_RELOAD_ENV] = "1"  # POST /admin/reload reaches every worker
    logging.getLogger("uvicorn.error").addFilter(AbortedRestartAlarm())
    uvicorn.run(
        "racer.serve.app:app_from_environment",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=math.ceil(gateway_config.server.worker_ready_timeout_s),
        **options,
    )


def replay_server(
    data: Annotated[Path, typer.Option("--data", help="A RouterBench CSV with responses.")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Serve only this model (repeatable). With one model and no "
            "--port-per-model, the server answers as it whatever `model` a request names.",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="The (first) port to listen on; 0: free ports.")] = 8100,
    port_per_model: Annotated[
        bool, typer.Option(help="One server per model on consecutive ports from --port.")
    ] = False,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(help="Delay added to every answer.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Uniform random extra delay, at most.")] = 0.0,
    failure_rate: Annotated[
        float, typer.Option(help="Share of requests answered with HTTP 500.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the injected jitter and failures.")] = 0,
) -> None:
    """Serve recorded responses as OpenAI-compatible models, for offline tests and demos."""
    _require_serve_extra()
    from racer.data.load import load_dataset
    from racer.serve.replay import ReplayBook, create_replay_app
    from racer.serve.runner import ServerThread

    try:
        with warnings_as_notes("replay data"):
            dataset = load_dataset(data)
        if model:
            dataset = dataset.select_models(model)
        book = ReplayBook(dataset)
    except (ValueError, OSError) as error:
        text = one_line(error)
        fail(text if str(data) in text else f"--data {data}: {text}")
    options = {
        "latency_s": latency_ms / 1000,
        "jitter_s": jitter_ms / 1000,
        "failure_rate": failure_rate,
        "seed": seed,
    }
    fixed = (
        list(book.model_names)
        if port_per_model
        else [model[0] if model and len(model) == 1 else None]
    )
    apps = [create_replay_app(book, m, **options) for m in fixed]
    ports = [port + i if port else 0 for i in range(len(apps))]  # --port 0: free ports
    for busy in filter(None, (port_in_use_error(host, p) for p in ports)):
        fail(busy)
    try:
        servers = ServerThread(apps, host, ports, log_level="info")
    except OSError as error:  # taken between the check and the bind
        fail(port_in_use_error(host, ports[0]) or f"cannot listen on {host}: {error.strerror}")
    servers.start()
    typer.echo(f"Replaying {dataset.n_queries} queries of {data}. Backends for gateway.yaml:")
    typer.echo("backends:")
    for name, url in zip(fixed, servers.urls, strict=True):
        for served in [name] if name else book.model_names:
            typer.echo(f"  - {{name: {served!r}, base_url: '{url}/v1'}}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()
