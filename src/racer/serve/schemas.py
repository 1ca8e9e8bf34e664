"""The wire format: OpenAI chat-completion requests, responses, stream chunks and errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

STREAM_PIECE_CHARS = 64


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
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only one choice is supported.")

    @model_validator(mode="after")
    def _has_user_message(self) -> ChatCompletionRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one message with role 'user'")
        return self

    def query(self) -> str:
        """The text that is routed: the last user message."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user")

    def upstream_body(self) -> dict[str, Any]:
        """The body forwarded to each backend (``model`` and ``stream`` are set per call)."""
        return self.model_dump(mode="json", exclude_unset=True, exclude={"n"})


class FeedbackRequest(BaseModel):
    """Whether a routed answer was right, for the decision log and the risk monitor.

    Give ``correct`` (the answer the client got was right; for an abstention: abstaining
    was right) or ``models_correct`` (which models' answers are acceptable, which makes
    the misrouting loss exact; with ``correct`` alone a wrong aggregated answer counts
    as a misroute, an upper bound).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="The `id` of the chat completion.")
    correct: bool | None = None
    models_correct: dict[str, bool] | None = None

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
    text: str,
    usage: dict[str, int],
    racer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion``, with the ``racer`` object added when one is given."""
    body: dict[str, Any] = {
        "id": answer_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }
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
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` gives the final chunk with no choices."""
    body: dict[str, Any] = {
        "id": decision_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": route,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
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


def validation_message(errors: Sequence[Any]) -> str:
    """One readable line from pydantic / FastAPI validation errors."""
    parts = []
    for item in errors[:10]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)
