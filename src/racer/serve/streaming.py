"""Sending an answer as server-sent events, and relaying one upstream's stream.

An answer is made once; streaming is only how it is sent. A finished
:class:`~racer.serve.decision.Answer` is sent as the events of its message
(:func:`answer_events`). A one-model set (or the call a certified policy serves whatever
it says) may instead be a :class:`Relay`: the upstream's
own stream, opened and read up to its first chunk before the response starts (so a
failure there still fails over like a failed call), then passed through re-labelled
with the gateway's id (``n`` choices, ``logprobs`` and ``system_fingerprint`` as the
upstream sent them; its usage, details included, in the final ``racer`` chunk). Once
it has started, the backend's ``timeout_s`` bounds the wait for each next chunk, not
the whole stream: a healthy long stream is never cut. A relay that breaks later ends
with an OpenAI-style error event and no ``[DONE]``; its decision is logged when it
ends, either way. A relay ended by an upstream error event that rejects the request
(:func:`racer.serve.backends.blames_request`) tells the backend's breaker nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from racer.serve.backends import (
    Backend,
    BackendCall,
    UpstreamError,
    UpstreamStream,
    blames_request,
)
from racer.serve.decision import Answer, Decision
from racer.serve.headers import answer_headers, relay_headers
from racer.serve.records import DecisionRecorder
from racer.serve.schemas import chunk_body, error_event, message_events, sse


def error_of(chunk: dict[str, Any]) -> UpstreamError:
    """The failure an upstream error event stands for (a client error counts for nothing)."""
    detail = chunk["error"]
    text = detail.get("message") if isinstance(detail, dict) else detail
    rejected = blames_request(detail)
    return UpstreamError(
        f"upstream error event: {text}"[:300],
        retryable=False,
        status=400 if rejected else None,
        counts=not rejected,
    )


def parse_event(line: str) -> dict[str, Any] | str | None:
    """One SSE line: a JSON chunk, "[DONE]", or None (not a data line)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return data
    chunk = json.loads(data)
    if not isinstance(chunk, dict):
        raise ValueError("an event is not a JSON object")
    return chunk


async def first_chunk(upstream: UpstreamStream) -> list[dict[str, Any]]:
    """Read the upstream stream up to its first chunk with choices (or its end).

    Raises
    ------
    UpstreamError
        When the stream fails or ends before any chunk with choices.
    """
    read: list[dict[str, Any]] = []
    try:
        async for line in upstream.lines():
            chunk = parse_event(line)
            if chunk is None:
                continue
            if chunk == "[DONE]":
                break
            if "error" in chunk:
                raise error_of(chunk)
            read.append(chunk)
            if chunk.get("choices"):
                return read
    except BaseException as error:
        says_nothing = isinstance(error, asyncio.CancelledError) or (
            isinstance(error, UpstreamError) and not error.counts
        )
        await upstream.aclose(ok=None if says_nothing else False)
        if isinstance(error, Exception) and not isinstance(error, UpstreamError):
            raise UpstreamError(
                f"stream failed before its first chunk ({type(error).__name__})",
                retryable=False,
                attempts=upstream.attempts,
            ) from None
        raise
    await upstream.aclose(ok=False)
    raise UpstreamError(
        "upstream stream ended without any answer chunk",
        retryable=False,
        attempts=upstream.attempts,
    )


class Relay:
    """A single backend's stream, opened and read to its first chunk, sent as it arrives.

    Parameters
    ----------
    decision : Decision
        The request it answers.
    backend : Backend
        The one backend streaming.
    upstream : UpstreamStream
        Its open stream.
    first : list of dict
        The chunks already read (up to the first one with choices).
    records : DecisionRecorder
        Logs the decision when the stream ends.
    earlier : sequence of BackendCall, default ()
        The calls made before this one for the same answer (a cascade's lower tiers),
        logged with it.
    extra : callable, optional
        Given every call (``earlier`` and the relayed one) when the stream ends, the
        fields it adds to the ``racer`` object (a policy's report and its cost).
    """

    def __init__(
        self,
        decision: Decision,
        backend: Backend,
        upstream: UpstreamStream,
        first: list[dict[str, Any]],
        records: DecisionRecorder,
        earlier: Sequence[BackendCall] = (),
        extra: Callable[[list[BackendCall]], dict[str, Any]] | None = None,
    ):
        self.decision = decision
        self.backend = backend
        self.upstream = upstream
        self.first = first
        self.records = records
        self.earlier = list(earlier)
        self.extra = extra

    @classmethod
    async def open(
        cls,
        decision: Decision,
        backend: Backend,
        records: DecisionRecorder,
        earlier: Sequence[BackendCall] = (),
        extra: Callable[[list[BackendCall]], dict[str, Any]] | None = None,
    ) -> Relay | BackendCall:
        """Open ``backend``'s stream within the deadline; the failed call if it cannot."""
        opened = time.perf_counter()
        try:
            upstream = await asyncio.wait_for(
                backend.open_stream(decision.body), max(decision.remaining(), 0.001)
            )
            first = await first_chunk(upstream)
        except (UpstreamError, TimeoutError) as error:
            message = str(error) or f"no answer within deadline_s ({type(error).__name__})"
            return BackendCall(
                backend.name,
                None,
                time.perf_counter() - opened,
                getattr(error, "attempts", 1),
                error=backend.redact(message),
                status=getattr(error, "status", None),
                retry_after_s=getattr(error, "retry_after_s", None),
            )
        return cls(decision, backend, upstream, first, records, earlier, extra)

    def headers(self) -> dict[str, str]:
        """The ``x-racer-*`` headers known before the first byte (the cost is pending)."""
        route = self.decision.route
        models = [*(c.backend for c in self.earlier), self.backend.name]
        if route.policy is None:
            decided = "set of 1: relayed"
            guarantee = {
                "alpha": route.calibration.alpha,
                "delta": route.calibration.delta,
                "abstention": route.mode,
            }
        else:
            decided = f"policy: {self.decision.completion.get('reason', '')} (relayed)"
            guarantee = {"policy": {"certificate": route.policy.certificate}}
        return relay_headers(self.decision.id, route.name, models, decided, guarantee)

    async def events(self) -> AsyncIterator[bytes]:
        """The upstream's chunks re-labelled with the gateway's id, then ``racer`` and [DONE]."""
        decision, backend, upstream = self.decision, self.backend, self.upstream
        prompt_tokens = completion_tokens = None
        usage_chunk: dict[str, Any] | None = None
        error = None
        finished = False
        ok: bool | None = None

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            nonlocal finished
            for chunk in self.first:
                yield chunk
            async for line in upstream.lines():
                # timeout_s bounds the wait for each chunk, not the whole healthy stream
                upstream.deadline = time.perf_counter() + backend.config.timeout_s
                chunk = parse_event(line)
                if chunk == "[DONE]":
                    finished = True
                    return
                if chunk is not None:
                    yield chunk

        try:
            async for chunk in chunks():
                if "error" in chunk:
                    raise error_of(chunk)
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    usage_chunk = {"usage": usage}
                    prompt_tokens = usage.get("prompt_tokens")
                    completion_tokens = usage.get("completion_tokens")
                if not chunk.get("choices"):
                    continue
                finished = finished or any(
                    c.get("finish_reason") for c in chunk["choices"] if isinstance(c, dict)
                )
                chunk.update(id=decision.id, model=decision.route.name, created=decision.created)
                yield sse(chunk)
            if not finished:
                raise UpstreamError(
                    "upstream stream ended without [DONE] or a finish_reason", retryable=False
                )
            ok = True
        except (Exception, TimeoutError) as failure:  # noqa: B014 (TimeoutError for clarity)
            kind = "deadline passed" if isinstance(failure, TimeoutError) else str(failure)
            error = backend.redact(f"stream interrupted ({type(failure).__name__}: {kind})")
            # a client-error event is the request's; a stream silent for timeout_s (a
            # healthy one is never cut: the wait is per chunk) is the backend's failure
            says_nothing = isinstance(failure, UpstreamError) and not failure.counts
            ok = None if says_nothing else False
        except BaseException:  # the client went away: still log the decision
            error = "client disconnected"
            raise
        finally:
            await upstream.aclose(ok)
            call = BackendCall(
                backend.name,
                None if error else "",
                time.perf_counter() - upstream.started,
                upstream.attempts,
                prompt_tokens,
                completion_tokens,
                backend.cost(prompt_tokens, completion_tokens),
                error,
                upstream=usage_chunk,
            )
            calls = [*self.earlier, call]
            racer = await self.records.finish(
                decision,
                calls,
                backend.name,
                "failed" if error else "answered",
                None if self.extra is None else self.extra(calls),
            )
        if error is not None:
            yield sse(error_event(f"The upstream stream failed: {error}", racer))
            return
        yield sse(chunk_body(decision.id, decision.created, decision.route.name, None, racer=racer))
        yield sse("[DONE]")


class AnswerStream:
    """An answer's server-sent events (iterate it) and the headers sent before them."""

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str]):
        self.events = events
        self.headers = headers

    def __aiter__(self) -> AnswerStream:
        return self

    async def __anext__(self) -> bytes:
        return await self.events.__anext__()

    async def aclose(self) -> None:
        """Stop the events (the client went away)."""
        if isinstance(self.events, AsyncGenerator):
            await self.events.aclose()


def answer_events(decision: Decision, answer: Answer | Relay) -> AnswerStream:
    """The server-sent events of an answer: relayed as it streams, or its finished message.

    Their headers (:mod:`racer.serve.headers`) say what is known before the first byte.
    """
    route = decision.route
    if isinstance(answer, Relay):
        return AnswerStream(answer.events(), answer.headers())
    final = chunk_body(decision.id, decision.created, route.name, None, racer=answer.racer)
    events = message_events(
        decision.id,
        decision.created,
        route.name,
        answer.message,
        answer.finish_reason,
        final,
        answer.all_choices(),
        answer.system_fingerprint,
    )
    return AnswerStream(events, answer_headers(answer.racer))
