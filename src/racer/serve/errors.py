"""The error a request is answered with when it cannot be served, and how input is quoted."""

from __future__ import annotations


class GatewayError(Exception):
    """A request that cannot be answered; ``status`` is the HTTP status to return."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code
        self.headers = headers


def truncate(text: str, limit: int = 64) -> str:
    """``text`` cut to ``limit`` characters (error messages never echo long input)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
