"""A loopback TCP proxy that a test can cut (as a database restart looks to its clients).

While cut, the proxy's port refuses connections and every proxied connection is
closed; restored, it accepts again on the same port.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest


class CuttableProxy:
    """Forward ``127.0.0.1:port`` to ``(host, target_port)`` until :meth:`cut`."""

    def __init__(self, host: str, target_port: int):
        self.target = (host, target_port)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._serve(self._listener)

    def _serve(self, listener: socket.socket) -> None:
        self._stop = stop = threading.Event()
        listener.settimeout(0.05)

        def accept() -> None:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                try:
                    upstream = socket.create_connection(self.target)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._sockets += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(source, sink), daemon=True).start()
            listener.close()

        self._accepting = threading.Thread(target=accept, daemon=True)
        self._accepting.start()

    def cut(self) -> None:
        """Refuse new connections and close every open one."""
        self._stop.set()
        self._accepting.join()  # within its 50 ms timeout; the listener is then closed
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._serve(self._listener)

    def close(self) -> None:
        """Stop for good."""
        self.cut()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` into ``sink`` until either closes."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def proxied_postgres() -> Iterator[tuple[str, CuttableProxy]]:
    """RACER_TEST_POSTGRES_URL through a :class:`CuttableProxy`, on fresh tables.

    Skips the test when RACER_TEST_POSTGRES_URL is unset (CI sets it).
    """
    url = os.environ.get("RACER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set RACER_TEST_POSTGRES_URL (and install psycopg) to test PostgreSQL")
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "DROP TABLE IF EXISTS feedback, decisions, decision_audit, audit_responses, "
            "route_reloads"
        )
    parts = urlsplit(url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    try:
        yield parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl(), proxy
    finally:
        proxy.close()
