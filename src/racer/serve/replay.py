"""An OpenAI-compatible server that answers with the responses real models once gave.

Built over a routing dataset with recorded responses (a RouterBench CSV), it makes
the gateway testable and demonstrable offline: each prompt is answered with the
recorded response of one model, chosen by the port (a server bound to one model) or
by the request's ``model`` field. Latency and failures can be injected.

Prompts are found by exact text, then by a normalised text (whitespace collapsed,
case folded). When two recorded queries have the same text the first one answers.
Token counts in ``usage`` are estimates (4 characters per token): the recorded data
holds dollar costs, not token counts; the recorded cost is reported as ``usage.cost``.

Recorded token log-probabilities (``RoutingDataset.logprobs``, from data that
``racer collect`` or ``racer dataset`` wrote) are returned to a request that asks with
``logprobs: true``, in the OpenAI chat format (``choices[0].logprobs.content``, one entry
per recorded value, streamed on the first text chunk). The recorded data holds the
values, not the tokens: each entry's ``token`` is ``""`` and its ``bytes`` null, and
``top_logprobs`` is empty. A request without the flag gets none, as from OpenAI.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from racer.data.dataset import RoutingDataset
from racer.serve.schemas import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    error_body,
    message_events,
    validation_message,
)

CHARS_PER_TOKEN = 4


def normalise(text: str) -> str:
    """The lookup key of the fallback match: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


def estimate_tokens(text: str) -> int:
    """A rough token count (one token per 4 characters, at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class ReplayBook:
    """The recorded responses of a dataset, looked up by prompt text.

    Parameters
    ----------
    dataset : RoutingDataset
        A dataset with ``responses`` (e.g. from ``load_dataset`` on a RouterBench CSV).

    Examples
    --------
    >>> book = ReplayBook(dataset)  # doctest: +SKIP
    >>> book.response("gpt-4-1106-preview", dataset.queries[0])  # doctest: +SKIP
    'A'
    """

    def __init__(self, dataset: RoutingDataset):
        if dataset.responses is None:
            raise ValueError(
                f"Dataset {dataset.name!r} has no recorded responses to replay; load a file "
                "with responses (a RouterBench CSV)."
            )
        self.dataset = dataset
        self._exact: dict[str, int] = {}
        self._normalised: dict[str, int] = {}
        for row, query in enumerate(dataset.queries):
            self._exact.setdefault(str(query), row)
            self._normalised.setdefault(normalise(str(query)), row)

    @property
    def model_names(self) -> tuple[str, ...]:
        """The models whose responses can be replayed."""
        return self.dataset.model_names

    def find(self, prompt: str) -> int | None:
        """The row of ``prompt`` (exact text first, then normalised), or None."""
        row = self._exact.get(prompt)
        return self._normalised.get(normalise(prompt)) if row is None else row

    def response(self, model: str, prompt: str) -> str | None:
        """The recorded response of ``model`` to ``prompt``, None when there is none."""
        row = self.find(prompt)
        if row is None:
            return None
        text = self.dataset.responses[row, self.model_names.index(model)]
        return text if isinstance(text, str) else None

    def logprobs(self, model: str, prompt: str) -> list[float] | None:
        """The recorded token log-probabilities of ``model``'s answer to ``prompt``, or None."""
        row = self.find(prompt)
        if row is None or self.dataset.logprobs is None:
            return None
        values = self.dataset.logprobs[row, self.model_names.index(model)]
        return None if values is None else [float(v) for v in values]

    def cost(self, model: str, prompt: str) -> float | None:
        """The recorded dollar cost of ``model`` on ``prompt``, None when unknown."""
        row = self.find(prompt)
        if row is None or self.dataset.costs is None:
            return None
        value = float(self.dataset.costs[row, self.model_names.index(model)])
        return value if np.isfinite(value) else None


def chat_logprobs(values: list[float]) -> dict[str, Any]:
    """Recorded values in the OpenAI chat ``logprobs`` format (tokens unknown: ``""``).

    Examples
    --------
    >>> chat_logprobs([-0.5])
    {'content': [{'token': '', 'logprob': -0.5, 'bytes': None, 'top_logprobs': []}]}
    """
    return {
        "content": [
            {"token": "", "logprob": value, "bytes": None, "top_logprobs": []} for value in values
        ]
    }


def _error(
    status: int, message: str, code: str, kind: str = "invalid_request_error"
) -> JSONResponse:
    return JSONResponse(error_body(message, kind, code), status)


def create_replay_app(
    book: ReplayBook,
    model: str | None = None,
    latency_s: float = 0.0,
    jitter_s: float = 0.0,
    failure_rate: float = 0.0,
    seed: int | None = 0,
) -> FastAPI:
    """An OpenAI-compatible app answering from ``book``.

    Parameters
    ----------
    book : ReplayBook
        The recorded responses.
    model : str, optional
        Answer as this model whatever the request asks (one server per model);
        None: the request's ``model`` field chooses.
    latency_s : float, default 0
        Delay added before every answer.
    jitter_s : float, default 0
        A uniform random extra delay in [0, jitter_s].
    failure_rate : float, default 0
        Share of requests answered with HTTP 500 (at random).
    seed : int or None, default 0
        Seed of the injected jitter and failures.
    """
    if model is not None and model not in book.model_names:
        raise ValueError(f"Unknown model {model!r}; the data has {list(book.model_names)}.")
    if not 0.0 <= failure_rate <= 1.0 or latency_s < 0 or jitter_s < 0:
        raise ValueError("failure_rate must be in [0, 1]; latency_s and jitter_s must be >= 0.")
    rng = random.Random(seed)
    served = [model] if model else list(book.model_names)
    app = FastAPI(title="RACER replay server", description="Recorded responses, replayed.")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message = validation_message(error.errors(), await request.body())
        return _error(400, message, "invalid_request")

    model_list = {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "replay"} for m in served],
    }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return model_list

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": served, "queries": book.dataset.n_queries}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest) -> Response:
        answering = model or request.model
        if answering not in book.model_names:
            return _error(404, f"The model {answering!r} does not exist here.", "model_not_found")
        delay = latency_s + (rng.uniform(0, jitter_s) if jitter_s else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if failure_rate and rng.random() < failure_rate:
            return _error(500, "Injected failure.", "injected_failure", "server_error")
        prompt = request.query()
        text = book.response(answering, prompt)
        if text is None:
            found = book.find(prompt) is not None
            return _error(
                404,
                f"No recorded response of {answering!r} to this prompt"
                + ("." if found else " (the prompt is not in the data)."),
                "response_not_found",
            )
        answer_id, created = f"chatcmpl-replay-{uuid.uuid4().hex}", int(time.time())
        usage = {
            "prompt_tokens": estimate_tokens(prompt),
            "completion_tokens": estimate_tokens(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        recorded = book.cost(answering, prompt)
        if recorded is not None:  # the recorded dollars, as OpenRouter reports usage.cost
            usage["cost"] = recorded
        values = book.logprobs(answering, prompt) if request.logprobs else None
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None if values is None else chat_logprobs(values),
        }
        if request.stream:
            options = getattr(request, "stream_options", None) or {}
            with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            final = {**chunk_body(answer_id, created, answering, None), "usage": usage}
            events = message_events(
                answer_id,
                created,
                answering,
                choice["message"],
                "stop",
                final if with_usage else None,
                [choice],
            )
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(
            completion_body(answer_id, created, answering, text, usage, choices=[choice])
        )

    return app
