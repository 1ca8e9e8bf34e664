"""Calling one OpenAI-compatible upstream: timeouts, retries with backoff, a concurrency cap.

Each :class:`Backend` owns one ``httpx.AsyncClient``. A call never raises: it
returns a :class:`BackendCall` that holds either the answer or the reason it failed,
so that the gateway can leave a failed model out of the aggregation and report why.
The upstream key is read once from the environment and kept out of every message,
log line and response (:meth:`Backend.redact`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from racer.serve.config import BackendConfig, ConfigError

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_ERROR_TEXT_LIMIT = 300


@dataclass(frozen=True)
class BackendCall:
    """The outcome of one call to one backend (after retries).

    Attributes
    ----------
    backend : str
        The backend's configured name.
    text : str or None
        The answer, None when the call failed.
    latency_s : float
        Wall time from the first attempt to the answer or the final failure.
    attempts : int
        How many HTTP attempts were made.
    prompt_tokens, completion_tokens : int or None
        Token usage reported by the upstream, None when it reported none.
    cost_usd : float or None
        Dollars from the usage and the configured per-token prices.
    error : str or None
        Why the call failed ("HTTP 500: ...", "timed out after 2 s", ...).
    """

    backend: str
    text: str | None
    latency_s: float
    attempts: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the backend answered."""
        return self.error is None

    def summary(self) -> dict[str, Any]:
        """The JSON-ready report of this call for the ``racer`` response object."""
        return {
            "ok": self.ok,
            "latency_ms": round(self.latency_s * 1000, 3),
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "error": self.error,
        }


class UpstreamError(Exception):
    """One failed attempt; ``retryable`` says whether another attempt may succeed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        attempts: int = 0,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.attempts = attempts


@dataclass
class UpstreamStream:
    """An open streaming response (status already checked); iterate, then :meth:`aclose`."""

    response: httpx.Response
    started: float
    attempts: int
    _release: asyncio.Semaphore = field(repr=False)

    def lines(self) -> AsyncIterator[str]:
        """The raw SSE lines of the upstream stream."""
        return self.response.aiter_lines()

    async def aclose(self) -> None:
        """Close the upstream response and free its concurrency slot."""
        try:
            await self.response.aclose()
        finally:
            self._release.release()


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _usage_tokens(payload: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


class Backend:
    """An async client for one OpenAI-compatible upstream.

    Parameters
    ----------
    config : BackendConfig
        URL, model id, key variable, prices, timeout, retries, concurrency limit.
    transport : httpx.AsyncBaseTransport, optional
        For tests: a custom transport instead of the network.

    Raises
    ------
    ConfigError
        When ``config.api_key_env`` names a variable that is not set.
    """

    def __init__(self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self._api_key = None
        if config.api_key_env:
            self._api_key = os.environ.get(config.api_key_env)
            if not self._api_key:
                raise ConfigError(
                    f"backend {config.name!r}: environment variable {config.api_key_env} "
                    "(api_key_env) is not set."
                )
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=config.max_concurrency,
                max_keepalive_connections=config.max_concurrency,
            ),
            transport=transport,
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._url = httpx.URL(f"{config.base_url}/chat/completions")

    @property
    def name(self) -> str:
        """The backend's configured name."""
        return self.config.name

    def redact(self, text: str) -> str:
        """``text`` with the upstream key (should an upstream echo it) masked."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """Dollars for a call's token usage, None when the upstream reported none."""
        if prompt_tokens is None and completion_tokens is None:
            return None
        return (prompt_tokens or 0) * self.config.input_cost_per_token + (
            completion_tokens or 0
        ) * self.config.output_cost_per_token

    def _payload(self, request: dict[str, Any], stream: bool) -> dict[str, Any]:
        payload = {**request, "model": self.config.upstream_model, "stream": stream}
        payload.pop("stream_options", None)
        if stream:  # the usage chunk gives the cost; the gateway sends its own to the client
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _describe(self, error: Exception) -> UpstreamError:
        if isinstance(error, UpstreamError):
            return error
        if isinstance(error, httpx.TimeoutException):
            return UpstreamError(
                f"timed out after {self.config.timeout_s:g} s ({type(error).__name__})",
                retryable=False,
            )
        if isinstance(error, httpx.TransportError):
            return UpstreamError(
                f"connection failed ({type(error).__name__}: {error})", retryable=True
            )
        return UpstreamError(f"{type(error).__name__}: {error}", retryable=False)

    async def _check_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        body = (await response.aread()).decode("utf-8", "replace")
        try:
            detail = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = body
        raise UpstreamError(
            f"HTTP {response.status_code}: {str(detail)[:_ERROR_TEXT_LIMIT]}",
            retryable=response.status_code in RETRYABLE_STATUS,
            retry_after_s=_retry_after(response),
        )

    def _backoff(self, attempt: int, error: UpstreamError) -> float:
        wait = self.config.backoff_s * 2**attempt
        if error.retry_after_s is not None:
            wait = max(wait, error.retry_after_s)
        return min(wait, self.config.max_backoff_s)

    async def _send(self, payload: dict[str, Any], stream: bool) -> tuple[httpx.Response, int]:
        """Send with retries; return the open response (its slot held) and the attempts."""
        attempts = 0
        while True:
            attempts += 1
            await self._slots.acquire()
            response = None
            try:
                request = self._client.build_request("POST", self._url, json=payload)
                response = await self._client.send(request, stream=stream)
                await self._check_status(response)
                return response, attempts
            except BaseException as raw:  # free the slot even when cancelled
                if response is not None:
                    await response.aclose()
                self._slots.release()
                if not isinstance(raw, Exception):
                    raise
                error = self._describe(raw)  # every failure becomes a described UpstreamError
                if not error.retryable or attempts > self.config.retries:
                    raise UpstreamError(
                        self.redact(str(error)), retryable=False, attempts=attempts
                    ) from None
                await asyncio.sleep(self._backoff(attempts - 1, error))

    async def complete(self, request: dict[str, Any]) -> BackendCall:
        """Send a (non-streaming) chat completion; never raises.

        Parameters
        ----------
        request : dict
            The client's OpenAI request body; ``model`` and ``stream`` are replaced.
        """
        started = time.perf_counter()
        attempts = 0
        try:
            response, attempts = await self._send(self._payload(request, stream=False), False)
            try:
                body = response.json()
            finally:
                self._slots.release()
            text = body["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise UpstreamError("upstream answer has no text content", retryable=False)
        except UpstreamError as error:
            return BackendCall(
                self.name,
                None,
                time.perf_counter() - started,
                error.attempts or attempts,
                error=str(error),
            )
        except (ValueError, KeyError, IndexError, TypeError) as error:
            return BackendCall(
                self.name,
                None,
                time.perf_counter() - started,
                attempts,
                error=self.redact(f"malformed upstream response ({type(error).__name__})"),
            )
        prompt_tokens, completion_tokens = _usage_tokens(body)
        return BackendCall(
            self.name,
            text,
            time.perf_counter() - started,
            attempts,
            prompt_tokens,
            completion_tokens,
            self.cost(prompt_tokens, completion_tokens),
        )

    async def open_stream(self, request: dict[str, Any]) -> UpstreamStream:
        """Open a streaming chat completion, retrying until the status is good.

        Raises
        ------
        UpstreamError
            When every attempt failed (the message says why).
        """
        started = time.perf_counter()
        response, attempts = await self._send(self._payload(request, stream=True), True)
        return UpstreamStream(response, started, attempts, self._slots)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
