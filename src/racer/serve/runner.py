"""Running ASGI apps on loopback ports with uvicorn, in a background thread.

One event loop in one thread serves any number of apps, each on its own port: the
command line uses it for one replay server per model, and the tests and benchmarks
use it to start and always stop real servers. Ports are bound before the servers
start (port 0 picks a free one), so there is no race for them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import uvicorn

LOOPBACK = "127.0.0.1"


def bind(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port)."""
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it Nagle's algorithm adds ~40 ms to every keep-alive response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class ServerThread:
    """Serve ASGI apps with uvicorn in a daemon thread; stop them all on exit.

    Parameters
    ----------
    apps : sequence of ASGI apps
        One server each.
    host : str, default "127.0.0.1"
        The address to listen on.
    ports : sequence of int, optional
        One port per app; 0 or None picks a free port.
    log_level : str, default "warning"
        uvicorn's log level.

    Examples
    --------
    >>> with ServerThread([app]) as servers:  # doctest: +SKIP
    ...     url = servers.urls[0]
    """

    def __init__(
        self,
        apps: Sequence[Any],
        host: str = LOOPBACK,
        ports: Sequence[int] | None = None,
        log_level: str = "warning",
    ):
        ports = list(ports) if ports is not None else [0] * len(apps)
        if len(ports) != len(apps):
            raise ValueError(f"Give one port per app: {len(apps)} apps, {len(ports)} ports.")
        self.host = host
        self._sockets = [bind(host, port) for port in ports]
        self.ports = [s.getsockname()[1] for s in self._sockets]
        self.servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    log_level=log_level,
                    access_log=False,
                    timeout_graceful_shutdown=1,
                    timeout_keep_alive=30,
                )
            )
            for app in apps
        ]
        self._thread = threading.Thread(target=self._run, name="racer-servers", daemon=True)
        self._error: BaseException | None = None

    @property
    def urls(self) -> list[str]:
        """``http://host:port`` of each app, in order."""
        return [f"http://{self.host}:{port}" for port in self.ports]

    def _run(self) -> None:
        async def serve_all() -> None:
            await asyncio.gather(
                *(
                    server.serve(sockets=[sock])
                    for server, sock in zip(self.servers, self._sockets, strict=True)
                )
            )

        try:
            # uvicorn's choice of loop: uvloop when installed (uvicorn[standard]).
            loop_factory = self.servers[0].config.get_loop_factory()
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(serve_all())
        except BaseException as error:  # surfaced by start() instead of dying silently
            self._error = error

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        """Start serving; return once every server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not all(server.started for server in self.servers):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"A server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Servers did not start within {timeout_s} s.")
            time.sleep(0.01)
        return self

    def stop_one(self, index: int, timeout_s: float = 10.0) -> None:
        """Stop one server at once (as if its process were killed); the others go on.

        Returns once the port refuses connections.
        """
        self.servers[index].force_exit = True
        self.servers[index].should_exit = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.ports[index]), timeout=1).close()
            except OSError:
                return
            time.sleep(0.02)
        raise TimeoutError(f"Server {index} still accepts connections after {timeout_s} s.")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every server and wait for the thread to end."""
        for server in self.servers:
            server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            for server in self.servers:
                server.force_exit = True
            self._thread.join(timeout_s)
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
