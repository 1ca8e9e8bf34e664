"""Answer with the calibrated set: call its models at once, aggregate their answers.

An empty set is a refusal: no model is called, and the reply is the route's
``abstention_message`` followed by the reason (``racer.refusal_reason``). A streamed
one-model set is relayed as the upstream streams it. Otherwise the set is called concurrently
(:func:`racer.serve.fanout.fan_out`, with the route's completion rule) and its answers
become one, by this rule (documented in the README): when the request carries
``tools``, ``functions``, ``tool_choice``, ``function_call`` or ``response_format``,
or any member answered with a tool call, the answer is the highest-scored answering
member's message, unchanged (tool calls, ``finish_reason`` and all): tool calls are
never voted on. Otherwise the route's aggregator picks among the text answers. A
one-model set's message always passes through unchanged. When no member answers, the
route's fallbacks are tried in order (their answer is outside the set: flagged
uncertified).

A refusal (or content filter) is an answer but not one to aggregate: the set's answer
is formed from the other members, and is the top refusal only when no member answered.
When a member scored above the one served refused, serving the lower member passes over
the top model's answer: with ``on_reference_failure: serve`` it is served, flagged
uncertified; with ``error`` (the default) the top refusal is served instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from racer.aggregate import choose_response, extract_answer
from racer.serve.answering.base import Services
from racer.serve.backends import BackendCall
from racer.serve.decision import Answer, Decision, single_choice
from racer.serve.fanout import call_fallbacks, fan_out
from racer.serve.records import FALLBACK, TOP_MODEL_REFUSED
from racer.serve.streaming import Relay


def is_decided(decision: Decision, done: Mapping[str, BackendCall], pending: Sequence[str]) -> bool:
    """Whether no answer of the ``pending`` members could change the chosen answer."""
    answered = [c for c in done.values() if c.ok and not c.refused]
    if not answered:
        return False
    best_pending = max(decision.score_of(m) for m in pending)
    best_done = max(decision.score_of(c.backend) for c in answered)
    best_rule = (
        decision.route.config.aggregator == "best"
        or decision.needs_whole_message
        or any(c.has_tool_calls for c in answered)
    )
    if best_rule:
        return best_done > best_pending
    kind = decision.route.config.answer_kind
    weights: dict[str, float] = {}
    top_score: dict[str, float] = {}
    for call in answered:
        answer = extract_answer(call.text, kind)
        if answer is None:
            return False
        score = decision.score_of(call.backend)
        weights[answer] = weights.get(answer, 0.0) + score
        top_score[answer] = max(top_score.get(answer, -np.inf), score)
    ranked = sorted(weights.values(), reverse=True)
    leader = max(weights, key=lambda a: (weights[a], top_score[a]))
    runner_up = ranked[1] if len(ranked) > 1 else 0.0
    pending_weight = sum(decision.score_of(m) for m in pending)
    return weights[leader] > runner_up + pending_weight and top_score[leader] > best_pending


def choose(decision: Decision, calls: Sequence[BackendCall]) -> BackendCall | None:
    """The call whose answer is returned (the module's rule); None when none answered."""
    answered = [c for c in calls if c.ok and not c.refused]
    if not answered:
        return top_refusal(decision, calls)
    if decision.needs_whole_message or any(c.has_tool_calls for c in answered):
        return max(answered, key=lambda c: decision.score_of(c.backend))
    config = decision.route.config
    index = choose_response(
        [c.text for c in answered],
        [decision.score_of(c.backend) for c in answered],
        method=config.aggregator,
        answer_kind=config.answer_kind,
    )
    return None if index is None else answered[index]


def top_refusal(
    decision: Decision, calls: Sequence[BackendCall], above: BackendCall | None = None
) -> BackendCall | None:
    """The highest-scored refusal (scored above ``above``'s member, when given), or None."""
    floor = -np.inf if above is None else decision.score_of(above.backend)
    refusals = [c for c in calls if c.refused and decision.score_of(c.backend) > floor]
    return max(refusals, key=lambda c: decision.score_of(c.backend)) if refusals else None


class CalibratedSet:
    """The calibrated set's answer: refuse, relay, or fan out and aggregate."""

    def __init__(self, services: Services):
        self.services = services

    async def answer(self, decision: Decision) -> Answer | Relay:
        """Answer ``decision`` with its calibrated set (see the module docstring)."""
        services = self.services
        if not decision.invoked:
            racer = await services.records.finish(decision, [], None, "abstained")
            opening = decision.route.config.abstention_message.rstrip(" .:")
            text = f"{opening}: {racer['refusal_reason']}."
            message = {"role": "assistant", "content": text}
            copies = int(decision.body.get("n", 1))
            return Answer(
                message,
                "stop",
                racer,
                tuple(single_choice(message, "stop", i) for i in range(copies)),
            )
        if decision.stream and len(decision.invoked) == 1:
            backend = services.backends[decision.invoked[0]]
            opened = await Relay.open(decision, backend, services.records)
            if isinstance(opened, Relay):
                return opened
            calls = [opened]
            chosen = None
        else:
            calls = await fan_out(
                services.backends,
                decision,
                lambda done, pending: is_decided(decision, done, pending),
                services.keep_running,
            )
            chosen = choose(decision, calls)
        uncertified = None
        passed_over = (
            top_refusal(decision, calls, above=chosen)
            if chosen is not None and not chosen.refused
            else None
        )
        if passed_over is not None:
            if decision.route.config.on_reference_failure == "serve":
                uncertified = TOP_MODEL_REFUSED
            else:
                chosen = passed_over
        if chosen is None:
            chosen = await call_fallbacks(services.backends, decision, calls)
            uncertified = None if chosen is None else FALLBACK
        return await services.records.answer(decision, calls, chosen, uncertified=uncertified)
