"""Calling one OpenAI-compatible upstream: timeouts, retries with backoff, a concurrency cap.

Each :class:`Backend` owns one ``httpx.AsyncClient``. A call never raises: it
returns a :class:`BackendCall` that holds either the answer or the reason it failed,
so that the gateway can leave a failed model out of the aggregation and report why.
The upstream key is read once from the environment and kept out of every message,
log line and response (:meth:`Backend.redact`).

Which outcomes are the backend's (they count for its circuit breaker): a failed
connection, a timeout before the answer began, a 5xx, a 429 left after the retries, any
other HTTP error but a client error, and a malformed or broken answer. A client error
(:data:`CLIENT_ERROR_STATUS`: the upstream rejects this request, e.g. a prompt over the
context length) is the request's: it never counts, and it reaches the client with the
upstream's status and message. A refusal (``refusal``, ``content: null``) and
``finish_reason: content_filter`` are answers.
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

from racer.serve.breaker import CircuitBreaker
from racer.serve.config import BackendConfig, ConfigError
from racer.signals import choice_token_logprobs

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Upstream statuses that reject the request, not the backend: passed on to the client.
CLIENT_ERROR_STATUS = frozenset({400, 404, 413, 422})
_CLIENT_ERROR_WORDS = ("invalid_request", "badrequest", "content_filter", "content_policy")
_ERROR_TEXT_LIMIT = 300


@dataclass(frozen=True)
class BackendCall:
    """The outcome of one call to one backend (after retries).

    Attributes
    ----------
    backend : str
        The backend's configured name.
    text : str or None
        The answer's text content; None when the call failed, and for an answer
        without text (a tool call with ``content: null``: see ``message``).
    latency_s : float
        Wall time from the first attempt to the answer or the final failure.
    attempts : int
        How many HTTP attempts were made (0: the circuit breaker refused the call).
    prompt_tokens, completion_tokens : int or None
        Token usage reported by the upstream, None when it reported none.
    cost_usd : float or None
        Dollars from the usage and the configured per-token prices.
    error : str or None
        Why the call failed ("HTTP 500: ...", "timed out after 2 s", ...).
    message : dict or None
        The upstream's whole assistant message (``content``, ``tool_calls``, ...).
    finish_reason : str or None
        The upstream's ``finish_reason``.
    status : int or None
        The last HTTP status of a failed call (429: rate-limited).
    retry_after_s : float or None
        The upstream's ``Retry-After`` of a rate-limited call.
    abandoned : bool
        The set's answer was final before this member answered (see ``completion``).
    upstream : dict or None
        The upstream's whole JSON answer (every choice with its ``logprobs``, ``usage``
        with its details, ``system_fingerprint``); for a relayed stream, its usage
        chunk; None for a failed call.
    logprobs_added : bool
        The gateway asked the upstream for ``logprobs`` that the client did not ask for
        (the backend's ``logprobs`` setting): they are read (:attr:`token_logprobs`,
        for the stop rule and the log) but not returned to the client.

    A call that answered (``ok``) may hold no text: a tool call, or a refusal
    (:attr:`refused`).
    """

    backend: str
    text: str | None
    latency_s: float
    attempts: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    message: dict[str, Any] | None = None
    finish_reason: str | None = None
    status: int | None = None
    retry_after_s: float | None = None
    abandoned: bool = False
    upstream: dict[str, Any] | None = field(default=None, repr=False)
    logprobs_added: bool = False

    @property
    def ok(self) -> bool:
        """Whether the backend answered."""
        return self.error is None

    @property
    def refused(self) -> bool:
        """Whether the backend answered with a refusal or a content filter, not an answer."""
        return self.ok and self.text is None and not self.has_tool_calls

    @property
    def rejected(self) -> bool:
        """Whether the upstream rejected the request itself (a client error)."""
        return self.status in CLIENT_ERROR_STATUS

    @property
    def has_tool_calls(self) -> bool:
        """Whether the answer is (or holds) a tool or function call."""
        return bool(
            self.message and (self.message.get("tool_calls") or self.message.get("function_call"))
        )

    @property
    def token_logprobs(self) -> list[float] | None:
        """The answer's token log-probabilities (first choice), None when not returned."""
        return None if self.upstream is None else choice_token_logprobs(self.upstream)

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
            "abandoned": self.abandoned,
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
        status: int | None = None,
        counts: bool = True,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.attempts = attempts
        self.status = status
        self.counts = counts  # whether it says the backend is unhealthy (not a client error)


@dataclass
class UpstreamStream:
    """An open streaming response (status already checked); iterate, then :meth:`aclose`.

    ``deadline`` (``time.perf_counter`` seconds) ends the whole stream: :meth:`lines`
    raises ``TimeoutError`` when the next line has not come by then.
    """

    response: httpx.Response
    started: float
    attempts: int
    deadline: float
    _backend: Backend = field(repr=False)
    _closed: bool = field(default=False, repr=False)
    _lines: AsyncIterator[str] | None = field(default=None, repr=False)

    async def lines(self) -> AsyncIterator[str]:
        """The raw SSE lines of the upstream stream, each within the deadline."""
        if self._lines is None:  # one iterator: a second call goes on where the first stopped
            self._lines = self.response.aiter_lines().__aiter__()
        iterator = self._lines
        while True:
            remaining = self.deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError("stream deadline passed")
            try:
                line = await asyncio.wait_for(iterator.__anext__(), remaining)
            except StopAsyncIteration:
                return
            yield line

    async def aclose(self, ok: bool | None = None) -> None:
        """Close the upstream response, free its slot and tell the breaker how it went.

        ``ok`` None: the stream ended for a reason that says nothing of the backend.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self.response.aclose()
        finally:
            self._backend._slots.release()
            self._backend._settle(ok)


def blames_request(detail: Any) -> bool:
    """Whether an upstream error object (an error event's ``error``) rejects the request.

    A client-error status in ``code`` or ``status``, or a ``type`` / ``code`` naming an
    invalid request or a content filter (OpenAI's and vLLM's spellings).
    """
    if not isinstance(detail, dict):
        return False
    code = detail.get("code", detail.get("status"))
    if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
        return int(code) in CLIENT_ERROR_STATUS
    words = f"{detail.get('type', '')} {code or ''}".lower()
    return any(word in words for word in _CLIENT_ERROR_WORDS)


def is_answer(message: dict[str, Any], finish_reason: Any) -> bool:
    """Whether an upstream message answers: text, a tool call, a refusal or a content filter."""
    return bool(
        isinstance(message.get("content"), str)
        or message.get("tool_calls")
        or message.get("function_call")
        or isinstance(message.get("refusal"), str)
        or finish_reason == "content_filter"
    )


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _usage_cost(payload: dict[str, Any]) -> float | None:
    """The dollar cost the upstream reports in ``usage.cost`` (OpenRouter style), if any."""
    usage = payload.get("usage")
    cost = usage.get("cost") if isinstance(usage, dict) else None
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


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
        self._watched: asyncio.Task[Any] | None = None
        self._url = httpx.URL(f"{config.base_url}/chat/completions")
        self.breaker = CircuitBreaker(
            config.breaker_failures, config.cooldown_s, config.max_cooldown_s, name=config.name
        )

    @property
    def name(self) -> str:
        """The backend's configured name."""
        return self.config.name

    def watch(self, task: asyncio.Task[Any]) -> bool:
        """Leave ``task``, a call the answer no longer waits for, to finish; False if busy.

        A member cut by a route's ``grace_s`` says nothing about its backend, only that
        it was slower than the others: one such call per backend at a time is left to
        run to its end (up to ``timeout_s``), so that the breaker learns whether the
        backend is slow (it answers: success) or hung (it times out: a failure). The
        others are cancelled.
        """
        if self._watched is not None and not self._watched.done():
            return False
        self._watched = task
        return True

    def redact(self, text: str) -> str:
        """``text`` with the upstream key (should an upstream echo it) masked."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def cost(
        self,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        reported: float | None = None,
    ) -> float | None:
        """Dollars for a call's token usage, None when the upstream reported none.

        With ``cost_from_upstream``, the dollars the upstream reports (``usage.cost``)
        win over the token prices.
        """
        if reported is not None and self.config.cost_from_upstream:
            return reported
        if prompt_tokens is None and completion_tokens is None:
            return None
        return (prompt_tokens or 0) * self.config.input_cost_per_token + (
            completion_tokens or 0
        ) * self.config.output_cost_per_token

    def adds_logprobs(self, request: dict[str, Any], stream: bool) -> bool:
        """Whether the upstream is asked for ``logprobs`` the client did not ask for.

        A backend with ``logprobs: true`` asks on a non-streamed call whose client left
        ``logprobs`` unset (a client's own ``true`` or ``false`` is sent as it is).
        """
        return self.config.logprobs and not stream and "logprobs" not in request

    def _payload(self, request: dict[str, Any], stream: bool) -> dict[str, Any]:
        payload = {**request, "model": self.config.upstream_model, "stream": stream}
        payload.pop("stream_options", None)
        if stream:  # the usage chunk gives the cost; the gateway sends its own to the client
            payload["stream_options"] = {"include_usage": True}
        if self.adds_logprobs(request, stream):
            payload["logprobs"] = True
        return payload

    def _describe(self, error: BaseException) -> UpstreamError:
        if isinstance(error, UpstreamError):
            return error
        if isinstance(error, (httpx.TimeoutException, TimeoutError)):
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
            status=response.status_code,
            counts=response.status_code not in CLIENT_ERROR_STATUS,
        )

    def _backoff(self, attempt: int, error: UpstreamError) -> float:
        wait = self.config.backoff_s * 2**attempt
        if error.retry_after_s is not None:
            wait = max(wait, error.retry_after_s)
        return min(wait, self.config.max_backoff_s)

    def _settle(self, ok: bool | None) -> None:
        """Tell the breaker how a call ended (None: it says nothing about the backend)."""
        if ok is None:
            self.breaker.release()
        elif ok:
            self.breaker.success()
        else:
            self.breaker.failure()

    def _refused(self) -> UpstreamError:
        return UpstreamError(
            f"circuit open after repeated failures; next probe in {self.breaker.retry_in():.1f} s",
            retryable=False,
            counts=False,
        )

    async def _attempts(
        self, payload: dict[str, Any], stream: bool
    ) -> tuple[httpx.Response, Any, int, float]:
        """Send with retries (only before any answer byte); hold the slot on success.

        Returns the response, the parsed JSON body (None when streaming), the number
        of attempts and the attempt's deadline (``time.perf_counter`` seconds).
        """
        attempts = 0
        retries = 0 if self.breaker.probing else self.config.retries
        while True:
            attempts += 1
            await self._slots.acquire()
            response = None
            deadline = time.perf_counter() + self.config.timeout_s
            answered = False  # a 2xx status arrived: from now on, never retry
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    request = self._client.build_request("POST", self._url, json=payload)
                    response = await self._client.send(request, stream=True)
                    await self._check_status(response)
                    answered = True
                    if stream:
                        return response, None, attempts, deadline
                    body = json.loads(await response.aread())
                await response.aclose()
                self._slots.release()
                return response, body, attempts, deadline
            except BaseException as raw:  # free the slot even when cancelled
                if response is not None:
                    await response.aclose()
                self._slots.release()
                if not isinstance(raw, Exception):
                    raise
                if answered and not isinstance(raw, TimeoutError):
                    kind = type(raw).__name__
                    error = UpstreamError(
                        f"malformed or interrupted upstream answer ({kind})", retryable=False
                    )
                else:
                    error = self._describe(raw)  # every failure becomes an UpstreamError
                if not error.retryable or attempts > retries:
                    raise UpstreamError(
                        self.redact(str(error)),
                        retryable=False,
                        attempts=attempts,
                        status=error.status,
                        retry_after_s=error.retry_after_s,
                        counts=error.counts,
                    ) from None
                await asyncio.sleep(self._backoff(attempts - 1, error))

    async def complete(self, request: dict[str, Any]) -> BackendCall:
        """Send a (non-streaming) chat completion; never raises (except when cancelled).

        Parameters
        ----------
        request : dict
            The client's OpenAI request body; ``model`` and ``stream`` are replaced.
        """
        started = time.perf_counter()
        if not self.breaker.admit():
            return BackendCall(self.name, None, 0.0, 0, error=str(self._refused()))
        attempts = 0
        try:
            _, body, attempts, _ = await self._attempts(self._payload(request, False), False)
            choice = body["choices"][0]
            message = choice["message"]
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
            text = message.get("content")
            if not is_answer(message, choice.get("finish_reason")):
                raise UpstreamError(
                    "upstream answer has no content, tool call or refusal", retryable=False
                )
        except UpstreamError as error:
            self._settle(False if error.counts else None)
            return BackendCall(
                self.name,
                None,
                time.perf_counter() - started,
                error.attempts or attempts,
                error=str(error),
                status=error.status,
                retry_after_s=error.retry_after_s,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            self._settle(False)
            return BackendCall(
                self.name,
                None,
                time.perf_counter() - started,
                attempts,
                error=self.redact(f"malformed upstream response ({type(error).__name__})"),
            )
        except BaseException:
            self._settle(None)
            raise
        self._settle(True)
        prompt_tokens, completion_tokens = _usage_tokens(body)
        return BackendCall(
            self.name,
            text if isinstance(text, str) else None,
            time.perf_counter() - started,
            attempts,
            prompt_tokens,
            completion_tokens,
            self.cost(prompt_tokens, completion_tokens, _usage_cost(body)),
            message=message,
            finish_reason=choice.get("finish_reason"),
            upstream=body,
            logprobs_added=self.adds_logprobs(request, False),
        )

    async def open_stream(self, request: dict[str, Any]) -> UpstreamStream:
        """Open a streaming chat completion, retrying until the status is good.

        The answer must be an event stream (``text/event-stream``); anything else is
        a failure here, before the client has received a byte.

        Raises
        ------
        UpstreamError
            When every attempt failed or the breaker is open (the message says why).
        """
        started = time.perf_counter()
        if not self.breaker.admit():
            raise self._refused()
        try:
            response, _, attempts, deadline = await self._attempts(
                self._payload(request, stream=True), True
            )
        except UpstreamError as error:
            self._settle(False if error.counts else None)
            raise
        except BaseException:
            self._settle(None)
            raise
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            await response.aclose()
            self._slots.release()
            self._settle(False)
            raise UpstreamError(
                f"upstream answered a stream request without an event stream "
                f"(content-type {content_type[:60]!r})",
                retryable=False,
                attempts=attempts,
            )
        return UpstreamStream(response, started, attempts, deadline, self)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
