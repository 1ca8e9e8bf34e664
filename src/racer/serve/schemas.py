"""The wire format: OpenAI chat-completion requests, responses, stream chunks and errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

STREAM_PIECE_CHARS = 64
MAX_CHOICES = 128  # OpenAI's own limit on n


class ContentPart(BaseModel):
    """One part of a multi-part message; only ``text`` parts are routed on."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text (the text parts joined by newlines)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content or [] if p.type == "text" and p.text)


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat-completion request; unknown fields are forwarded to the backends."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="A configured route, e.g. 'racer'.")
    messages: list[ChatMessage] = Field(
        min_length=1, description="At least one message must have role 'user'."
    )
    stream: StrictBool = False
    n: int = Field(
        1,
        ge=1,
        le=MAX_CHOICES,
        description="Choices to return; each called model is asked for n (see the README).",
    )
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @model_validator(mode="before")
    @classmethod
    def _utf8_text(cls, data: Any) -> Any:
        if has_lone_surrogate(data):
            raise ValueError("the request holds text that is not valid Unicode (a lone surrogate)")
        return data

    @model_validator(mode="after")
    def _has_user_message(self) -> ChatCompletionRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one message with role 'user'")
        return self

    def query(self) -> str:
        """The text that is routed: the last user message."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user")

    @model_validator(mode="after")
    def _group_is_text(self) -> ChatCompletionRequest:
        metadata = getattr(self, "metadata", None)
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("metadata must be an object of string values")
        if metadata is not None and not isinstance(metadata.get("racer_group", ""), str):
            raise ValueError("metadata.racer_group must be a string (the request's group)")
        return self

    def racer_group(self) -> str | None:
        """The request's group: the OpenAI ``metadata`` entry ``racer_group`` (None if absent)."""
        metadata = getattr(self, "metadata", None)
        return None if metadata is None else metadata.get("racer_group")

    def upstream_body(self) -> dict[str, Any]:
        """The body forwarded to each backend (``model`` and ``stream`` are set per call).

        ``metadata.racer_group`` is the gateway's and is not forwarded.
        """
        body = self.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and "racer_group" in metadata:
            rest = {k: v for k, v in metadata.items() if k != "racer_group"}
            if rest:
                body["metadata"] = rest
            else:
                del body["metadata"]
        return body


class FeedbackRequest(BaseModel):
    """Whether a routed answer was right, for the decision log and the risk monitor.

    Give ``correct`` (the answer the client got was right; for an abstention: abstaining
    was right) or ``models_correct`` (which models' answers are acceptable, which makes
    the misrouting loss exact; with ``correct`` alone a wrong aggregated answer counts
    as a misroute, an upper bound).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256, description="The `id` of the chat completion.")
    correct: StrictBool | None = None
    models_correct: dict[str, StrictBool] | None = None

    @model_validator(mode="before")
    @classmethod
    def _utf8_text(cls, data: Any) -> Any:
        if has_lone_surrogate(data):
            raise ValueError("the request holds text that is not valid Unicode (a lone surrogate)")
        return data

    def label_row(self, model_names: Sequence[str]) -> np.ndarray:
        """The (1, M) label row ``models_correct`` gives; a model left out is unknown (NaN)."""
        known = self.models_correct or {}
        return np.array([[float(known.get(name, np.nan)) for name in model_names]])

    @model_validator(mode="after")
    def _some_outcome(self) -> FeedbackRequest:
        if self.correct is None and self.models_correct is None:
            raise ValueError("give `correct` or `models_correct`")
        return self


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def completion_body(
    answer_id: str,
    created: int,
    model: str,
    text: str | dict[str, Any],
    usage: dict[str, int],
    racer: dict[str, Any] | None = None,
    finish_reason: str = "stop",
    choices: Sequence[dict[str, Any]] = (),
    system_fingerprint: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion``, with the ``racer`` object added when one is given.

    ``text`` is the answer's text, or a whole assistant message (tool calls and all);
    ``choices``, when given, are every choice as OpenAI sends them (``n`` of them, with
    their ``logprobs``) and replace the one choice ``text`` makes.
    """
    message = text if isinstance(text, dict) else {"role": "assistant", "content": text}
    one = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
    body: dict[str, Any] = {
        "id": answer_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": list(choices) or [one],
        "usage": usage,
    }
    if system_fingerprint is not None:
        body["system_fingerprint"] = system_fingerprint
    if racer is not None:
        body["racer"] = racer
    return body


def chunk_body(
    decision_id: str,
    created: int,
    route: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    racer: dict[str, Any] | None = None,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
    system_fingerprint: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` gives the final chunk with no choices."""
    body: dict[str, Any] = {
        "id": decision_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": route,
        "choices": []
        if delta is None
        else [
            {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}
        ],
    }
    if system_fingerprint is not None:
        body["system_fingerprint"] = system_fingerprint
    if racer is not None:
        body["racer"] = racer
        body["usage"] = racer["usage"]
    return body


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying ``data`` (a JSON object or a literal like [DONE])."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def text_pieces(text: str) -> list[str]:
    """``text`` cut into pieces for streaming."""
    return [text[i : i + STREAM_PIECE_CHARS] for i in range(0, len(text), STREAM_PIECE_CHARS)]


async def text_events(
    answer_id: str, created: int, model: str, text: str, final_chunk: dict[str, Any] | None = None
) -> AsyncIterator[bytes]:
    """A complete answer as an OpenAI chunk stream: role, text pieces, stop, ``final_chunk``."""
    yield sse(chunk_body(answer_id, created, model, {"role": "assistant", "content": ""}))
    for piece in text_pieces(text):
        yield sse(chunk_body(answer_id, created, model, {"content": piece}))
    yield sse(chunk_body(answer_id, created, model, {}, "stop"))
    if final_chunk is not None:
        yield sse(final_chunk)
    yield sse("[DONE]")


def choice_chunks(
    answer_id: str,
    created: int,
    model: str,
    choice: dict[str, Any],
    system_fingerprint: str | None = None,
) -> Iterator[dict[str, Any]]:
    """One choice (``index``, ``message``, ``finish_reason``, ``logprobs``) as chunks.

    Its text pieces, then its tool calls (one delta, each call with its ``index``),
    then its ``finish_reason``. Its ``logprobs`` ride on the first chunk after the role.
    """
    index, message = choice.get("index", 0), choice["message"]
    logprobs = choice.get("logprobs")

    def chunk(
        delta: dict[str, Any], finish: str | None = None, probs: Any = None
    ) -> dict[str, Any]:
        return chunk_body(
            answer_id, created, model, delta, finish, None, index, probs, system_fingerprint
        )

    yield chunk({"role": "assistant", "content": ""})
    for piece in text_pieces(message.get("content") or ""):
        yield chunk({"content": piece}, probs=logprobs)
        logprobs = None
    extra = {k: v for k, v in message.items() if k not in ("role", "content") and v is not None}
    if isinstance(extra.get("tool_calls"), list):
        extra["tool_calls"] = [
            {"index": i, **call} if isinstance(call, dict) else call
            for i, call in enumerate(extra["tool_calls"])
        ]
    if extra:
        yield chunk(extra, probs=logprobs)
        logprobs = None
    yield chunk({}, choice.get("finish_reason") or "stop", logprobs)


async def message_events(
    answer_id: str,
    created: int,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    final_chunk: dict[str, Any] | None = None,
    choices: Sequence[dict[str, Any]] = (),
    system_fingerprint: str | None = None,
) -> AsyncIterator[bytes]:
    """A whole answer as a chunk stream: each choice (:func:`choice_chunks`), one after
    the other, then ``final_chunk`` and [DONE]. ``choices`` (every choice, as in
    :func:`completion_body`) replace the one choice ``message`` makes."""
    one = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
    for choice in choices or [one]:
        for chunk in choice_chunks(answer_id, created, model, choice, system_fingerprint):
            yield sse(chunk)
    if final_chunk is not None:
        yield sse(final_chunk)
    yield sse("[DONE]")


def error_event(message: str, racer: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event that ends a broken stream (OpenAI's error object; no [DONE] follows)."""
    body = error_body(message, "upstream_error", "stream_interrupted")
    if racer is not None:
        body["racer"] = racer
    return body


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in a JSON value holds a lone UTF-16 surrogate (not UTF-8 text)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def validation_message(errors: Sequence[Any], body: bytes = b"") -> str:
    """One readable line from pydantic / FastAPI validation errors.

    A body that is not JSON is said so, with the decoder's reason and where in ``body``
    (line and column) it stopped.
    """
    for item in errors:
        if item.get("type") == "json_invalid":
            offset = item.get("loc", ("body", 0))[-1]
            offset = offset if isinstance(offset, int) else 0
            before = body[:offset].decode("utf-8", "replace")
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            reason = str((item.get("ctx") or {}).get("error", "JSON decode error"))[:200]
            return (
                f"The request body is not valid JSON: {reason} at line {line} column {column}."
            )
    parts = []
    for item in errors[:10]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where[:80]}: {str(item.get('msg', 'invalid'))[:200]}")
    return "Invalid request: " + "; ".join(parts)
