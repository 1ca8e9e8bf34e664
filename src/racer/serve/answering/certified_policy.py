"""Answer with a certified answer-level policy (METHOD.md section 8).

A route whose artifact carries a certified policy (``racer calibrate --objective``,
read by :mod:`racer.serve.served_policy`) answers with that policy instead of calling
the calibrated set:

- :class:`~racer.policies.Single`: call the one model;
- :class:`~racer.policies.Cascade`: call the tiers in the policy's order, one at a
  time; after each answer, stop when the stop rule fires, else call the next tier,
  finally the fallback (the reference);
- :class:`~racer.policies.ParallelSets`: call the policy's set at once and aggregate
  (best / vote / logodds, or the policy's judge model: the route's ``judge`` backend
  when it names one); an empty set, or one where nothing answered, escalates to the
  fallback.

Serving equals evaluation: after every call the recorded answers so far go through the
policy's own ``simulate`` on a one-query :class:`~racer.policies.PolicyData` (answers
extracted by :func:`racer.aggregate.answer_codes` with the policy's answer kind, models
not called yet counted as "no response"). A cascade stops exactly when ``simulate``
would have stopped with those answers, and serves the answer ``simulate`` serves. When
every call failed, the route's fallbacks are tried.

Streaming: a call whose answer is served whatever it says (a single model; the
fallback a cascade or a set escalates to, once it is chosen) is relayed as the
upstream streams it, so time to first token is that tier's, after the lower tiers
answered. Every other answer depends on comparing answers (a cascade's stop rule, a
set's aggregation, a judge), so it is sent once it is chosen, as a finished answer.

Outside the certificate: when a cascade escalates to its reference and the reference
fails, the route's ``on_reference_failure`` decides: ``error`` (the default) serves no
tier's answer (the route's fallbacks, flagged, else 502); ``serve`` serves the cheaper
tiers' weighted vote, flagged ``reference_failed``. An answer from the route's fallbacks
is flagged ``fallback``. A relayed answer is the policy's own, within the certificate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from racer.aggregate import answer_codes, judge_choice, weighted_vote
from racer.policies import ParallelSets, PolicyData, Single
from racer.policies.families import JUDGE
from racer.serve.answering.base import Services
from racer.serve.backends import Backend, BackendCall
from racer.serve.decision import Answer, Decision
from racer.serve.fanout import call_each, call_fallbacks
from racer.serve.records import FALLBACK, REFERENCE_FAILED, DecisionRecorder
from racer.serve.served_policy import ServedPolicy
from racer.serve.streaming import Relay
from racer.signals import answer_signals
from racer.similarity import free_text_codes, is_free_text


def policy_row(
    texts: Sequence[str | None],
    scores: np.ndarray,
    kind: str | None,
    logprobs: Sequence[Sequence[float] | None] | None = None,
) -> PolicyData:
    """One query's answers so far as :class:`PolicyData` (not called / failed: no response).

    The codes are :func:`racer.aggregate.answer_codes` of the answers with the policy's
    answer kind, as :func:`racer.evaluation.certified.policy_data` computes them; with
    no answer kind every answer is unextractable; with a free-text kind (``"similarity"``,
    ``"similarity-dense"``) the answers agree by that measure of their texts, as in the
    simulation. Each answer's
    own signals (:func:`racer.signals.answer_signals`, with ``logprobs``: each answer's
    token log-probabilities or None) are those the simulation reads.
    """
    responses = np.empty((1, len(texts)), dtype=object)
    responses[0, :] = list(texts)
    agree = None
    if is_free_text(kind):
        codes, agree = free_text_codes(responses, kind)
    elif kind is not None:
        codes = answer_codes(responses, kind)
    else:
        codes = np.where([[isinstance(t, str) for t in texts]], -1, -2).astype(np.int64)
    shape = (1, len(texts))
    token_logprobs = None
    if logprobs is not None:
        token_logprobs = np.empty(shape, dtype=object)
        token_logprobs[0, :] = list(logprobs)
    signals = answer_signals(responses, token_logprobs)
    return PolicyData(
        np.zeros(shape), codes, np.zeros(shape), np.asarray(scores)[None, :], agree, signals
    )


class PolicyRun:
    """One request answered by a certified policy: the calls, in order, and why it stopped.

    With ``records`` (a streamed request), the call whose answer is served whatever it
    says (a single model, the fallback a cascade or a set escalates to) is relayed as
    it streams (:class:`~racer.serve.streaming.Relay`) instead of called.
    """

    def __init__(
        self,
        backends: Mapping[str, Backend],
        decision: Decision,
        served: ServedPolicy,
        records: DecisionRecorder | None = None,
    ):
        self.backends = backends
        self.decision = decision
        self.served = served
        self.records = records
        self.names = decision.route.model_names
        self.calls: list[BackendCall] = []
        self.texts: list[str | None] = [None] * len(self.names)
        self.logprobs: list[list[float] | None] = [None] * len(self.names)
        self.judge_call: BackendCall | None = None
        self.stopped = ""
        self.uncertified: str | None = None  # why the answer is outside the certificate

    async def _call(self, models: Sequence[str]) -> list[BackendCall]:
        """Call ``models`` at once within the deadline; record their answers."""
        calls = await call_each(self.backends, models, self.decision)
        for call in calls:
            self.calls.append(call)
            if call.ok:
                column = self.names.index(call.backend)
                self.texts[column] = call.text
                self.logprobs[column] = call.token_logprobs
        return calls

    def _data(self) -> PolicyData:
        return policy_row(
            self.texts, self.decision.scores, self.served.answer_kind, self.logprobs
        )

    def _call_of(self, column: int) -> BackendCall | None:
        name = self.names[column]
        return next((c for c in self.calls if c.backend == name and c.ok), None)

    async def _last_tier(self, column: int) -> BackendCall | Relay | None:
        """Call the model whose answer is served as it comes: relayed when streaming."""
        name = self.names[column]
        if self.records is None:
            await self._call([name])
            return self._call_of(column)
        self.decision.invoked = list(dict.fromkeys([*(c.backend for c in self.calls), name]))
        self.decision.completion = {"rule": "policy", "reason": self.stopped}
        opened = await Relay.open(
            self.decision, self.backends[name], self.records, self.calls, self._relayed
        )
        if isinstance(opened, Relay):
            return opened
        self.calls.append(opened)
        return None

    def _relayed(self, calls: list[BackendCall]) -> dict[str, Any]:
        """The ``racer`` fields of a relayed answer, once its stream has ended."""
        self.calls = list(calls)
        return {"policy": self.report(calls[-1].backend), "cost_usd": self.cost()}

    async def run(self) -> BackendCall | Relay | None:
        """Serve the policy; the call whose answer is returned (None: every call failed)."""
        policy = self.served.policy
        if isinstance(policy, Single):
            self.stopped = "single model"
            return await self._last_tier(policy.model)
        if isinstance(policy, ParallelSets):
            return await self._parallel(policy)
        return await self._sequential(policy)

    async def _sequential(self, policy: Any) -> BackendCall | Relay | None:
        """A cascade of any kind: its tiers one at a time, the policy's own stop rule after each.

        The policy names the tiers of this query in calling order (``tiers_for``, from the
        router's scores). After each answer it is simulated on the answers so far; it stops
        when the simulation serves an answer having called no model that was not called yet
        (a stop rule reads the tiers called so far only, so this is where the simulation
        stops on the recorded answers).
        """
        asked = np.zeros(len(self.names), dtype=bool)
        for column in policy.tiers_for(self.decision.scores):
            await self._call([self.names[column]])
            asked[column] = True
            # Off the event loop: comparing answers may embed them (dense agreement).
            data = await asyncio.to_thread(self._data)
            outcome = policy.simulate(data)  # the stop rule of the evaluation, as is
            if not outcome.escalated[0] and not (outcome.invoked[0] & ~asked).any():
                self.stopped = policy.stop_reason(data, asked)
                return self._call_of(int(outcome.served[0]))
        self.stopped = f"escalated to {self._fallback_role(policy.fallback)}"
        served = await self._last_tier(policy.fallback)
        if served is not None:
            return served
        self.uncertified = REFERENCE_FAILED
        if self.decision.route.config.on_reference_failure == "serve":
            return self._best_so_far(asked)
        self.stopped += " (failed; on_reference_failure: error)"
        return None

    async def _parallel(self, policy: ParallelSets) -> BackendCall | Relay | None:
        members = policy.sets(self.decision.scores[None, :])[0]
        order = np.argsort(-self.decision.scores, kind="stable")
        await self._call([self.names[k] for k in order if members[k]])
        chosen: int | None = None
        answered = [k for k, t in enumerate(self.texts) if isinstance(t, str)]
        if len(answered) == 1:  # nothing to aggregate (simulate asks no judge either)
            chosen = answered[0]
            self.stopped = "one answer in the set"
        elif answered:
            if policy.aggregator == JUDGE:
                chosen = await self._judge()
            else:
                data = await asyncio.to_thread(self._data)
                outcome = policy.simulate(data)  # the evaluation's aggregation, as is
                if not outcome.escalated[0]:
                    chosen = int(outcome.served[0])
                    self.stopped = f"{policy.aggregator} over {int(members.sum())} model(s)"
        if chosen is not None:
            return self._call_of(chosen)
        reason = "empty set" if not members.any() else "no answer in the set"
        self.stopped = f"{reason}: escalated to {self._fallback_role(policy.fallback)}"
        return await self._last_tier(policy.fallback)

    async def _judge(self) -> int | None:
        """Let the judge pick among the set's answers; best-in-set on failure."""
        route = self.decision.route
        judge = self.backends[self.served.judge(self.names, route.config.judge) or ""]
        loop = asyncio.get_running_loop()
        columns = [k for k, t in enumerate(self.texts) if isinstance(t, str)]
        responses = [self.texts[k] for k in columns]

        def ask(prompt: str) -> str | None:
            body = {"messages": [{"role": "user", "content": prompt}]}
            future = asyncio.run_coroutine_threadsafe(judge.complete(body), loop)
            self.judge_call = future.result(timeout=max(self.decision.remaining(), 0.001))
            if not self.judge_call.ok:
                raise RuntimeError(self.judge_call.error or "judge failed")
            return self.judge_call.text

        index, judged = await asyncio.to_thread(
            judge_choice,
            self.decision.query,
            responses,
            [float(self.decision.scores[k]) for k in columns],
            ask,
        )
        if index is None:
            return None
        self.stopped = (
            f"judge {judge.name} chose {self.names[columns[index]]}"
            if judged
            else f"judge {judge.name} gave no usable verdict: best in set"
        )
        return columns[index]

    def _best_so_far(self, asked: np.ndarray) -> BackendCall | None:
        """When the fallback failed: the cascade's vote over the tiers that answered."""
        policy: Any = self.served.policy
        data = self._data()
        chosen, _ = weighted_vote(asked[None, :], policy.tier_weights(data), policy.codes(data))
        if chosen[0] < 0:
            return None
        self.stopped += " (failed; the tiers' vote served)"
        return self._call_of(int(chosen[0]))

    def _fallback_role(self, column: int) -> str:
        name = self.names[column]
        return "reference" if self.served.certificate.get("reference") == name else name

    def report(self, chosen: str | None) -> dict[str, Any]:
        """The ``racer.policy`` object: calls in order, why it stopped, the certificate."""
        report: dict[str, Any] = {
            "called": [c.backend for c in self.calls],
            "stopped": self.stopped,
            "served": chosen,
            "certificate": self.served.certificate,
        }
        if self.judge_call is not None:
            report["judge"] = {"backend": self.judge_call.backend, **self.judge_call.summary()}
        return report

    def cost(self) -> float | None:
        """Dollars of every call, the judge's included; None when none reported a cost."""
        calls = [*self.calls, *([self.judge_call] if self.judge_call else [])]
        costs = [c.cost_usd for c in calls if c.cost_usd is not None]
        return sum(costs) if costs else None


class CertifiedPolicy:
    """The certified policy's answer: single, cascade, parallel set or judge."""

    def __init__(self, services: Services):
        self.services = services

    async def answer(self, decision: Decision) -> Answer | Relay:
        """Answer ``decision`` with its route's certified policy (see the module docstring).

        Raises
        ------
        GatewayError
            As every answer: 429 / 502 / 504 when no call answered.
        """
        served = decision.route.policy
        assert served is not None, "a certified-policy answer needs a route with a policy"
        backends = self.services.backends
        records = self.services.records if decision.stream else None
        run = PolicyRun(backends, decision, served, records)
        chosen = await run.run()
        if isinstance(chosen, Relay):
            return chosen
        uncertified = run.uncertified
        if chosen is None:
            chosen = await call_fallbacks(backends, decision, run.calls)
            uncertified = None if chosen is None else FALLBACK
        decision.invoked = list(dict.fromkeys(c.backend for c in run.calls))
        decision.completion = {"rule": "policy", "reason": run.stopped}
        name = None if chosen is None else chosen.backend
        extra = {"policy": run.report(name), "cost_usd": run.cost()}
        why = (
            "The certified policy's reference failed, and this route serves no answer "
            "outside its certificate (on_reference_failure: error)"
            if run.uncertified == REFERENCE_FAILED
            and decision.route.config.on_reference_failure == "error"
            else None
        )
        return await self.services.records.answer(
            decision, run.calls, chosen, extra, uncertified=uncertified, why=why
        )
