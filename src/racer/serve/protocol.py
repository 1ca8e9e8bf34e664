"""uvicorn's HTTP protocol with two limits it lacks: request-head size and read deadline.

A client must send a whole request (head and body) within ``read_timeout_s`` of its
first byte (or of the connection's opening), else it gets 408 and the connection is
closed; a request head (request line and headers) over ``max_header_bytes`` gets 431
and the connection is closed. Without them, stalled or endless headers hold a
connection (and its memory) forever.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


class _HeadTooLarge(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the read deadline and the head size limit.

    The limits are uvicorn's own options, which the httptools protocol otherwise
    ignores for these purposes: ``timeout_keep_alive`` (the read deadline, also the
    idle keep-alive timeout) and ``h11_max_incomplete_event_size`` (the head size).
    Pass the class as ``uvicorn.run(..., http=GuardedHttpToolsProtocol)``.
    """

    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self._read_timeout_s = float(config.timeout_keep_alive)
        self._max_head_bytes = int(config.h11_max_incomplete_event_size or 16_384)
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._too_large = False

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self._read_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_408)
            self.transport.close()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # When the request's first bytes were read: the latency metric starts here, so
        # that time spent waiting for a busy event loop is counted too.
        self.scope["state"]["racer_received"] = time.perf_counter()
        self._head_bytes = 0
        self._arm()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self.transport.write(_431)
            self.transport.close()
            return
        super().send_400_response(msg)
