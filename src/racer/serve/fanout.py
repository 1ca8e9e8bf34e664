"""Calling backends for one decision: within its deadline, at once, and falling back.

The shared ways of calling upstreams that every way of answering uses:

- :func:`call_within`: one backend, bounded by the time left;
- :func:`call_each`: several backends at once, each bounded by the deadline;
- :func:`fan_out`: the calibrated set at once, stopping at the route's completion rule
  (all answered, decided, grace after the first answer, or the deadline), abandoned
  members cancelled or left to finish in the background; a member cut by ``grace_s``
  is left to finish when its backend has no such call running (:meth:`Backend.watch`),
  so that its breaker learns whether the backend is only slow or hung;
- :func:`call_fallbacks`: the route's fallbacks in order, until one answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from racer.serve.backends import Backend, BackendCall
from racer.serve.decision import Decision

Backends = Mapping[str, Backend]
# Whether no answer of the pending members could change the answer: (answered, pending).
DecidedRule = Callable[[Mapping[str, BackendCall], Sequence[str]], bool]
KeepRunning = Callable[[asyncio.Task[Any]], None]


async def call_within(backend: Backend, body: dict[str, Any], remaining: float) -> BackendCall:
    """``backend``'s answer to ``body``, or an abandoned call after ``remaining`` seconds."""
    try:
        return await asyncio.wait_for(backend.complete(body), remaining)
    except TimeoutError:
        return BackendCall(
            backend.name, None, remaining, 1, error="abandoned (deadline)", abandoned=True
        )


async def call_each(
    backends: Backends, models: Sequence[str], decision: Decision
) -> list[BackendCall]:
    """Call ``models`` at once, each within the decision's deadline (in ``models`` order)."""

    async def one(model: str) -> BackendCall:
        remaining = decision.remaining()
        if remaining <= 0:
            return BackendCall(model, None, 0.0, 0, error="abandoned (deadline)", abandoned=True)
        return await call_within(backends[model], decision.body, remaining)

    return list(await asyncio.gather(*(one(m) for m in models)))


async def call_fallbacks(
    backends: Backends, decision: Decision, calls: list[BackendCall]
) -> BackendCall | None:
    """Try the route's fallbacks in order, within the deadline; None when all fail.

    Each call made is appended to ``calls``.
    """
    for fallback in decision.route.config.fallbacks:
        remaining = decision.remaining()
        if remaining <= 0:
            break
        call = await call_within(backends[fallback], decision.body, remaining)
        calls.append(call)
        if call.ok:
            return call
    return None


async def fan_out(
    backends: Backends,
    decision: Decision,
    decided: DecidedRule,
    keep_running: KeepRunning,
) -> list[BackendCall]:
    """Call the decision's set concurrently until its answer is final.

    Parameters
    ----------
    backends : mapping of str to Backend
        The gateway's backend clients.
    decision : Decision
        Its ``invoked`` models are called; ``decision.completion`` is set to how the
        calls ended.
    decided : callable
        The aggregation's rule, asked after each answer when the route's completion
        rule is "decided".
    keep_running : callable
        Takes the abandoned calls' tasks, so that they are awaited at shutdown.

    Returns
    -------
    list of BackendCall
        One per member, in ``decision.invoked`` order; members that did not answer in
        time are abandoned calls.
    """
    config = decision.route.config
    tasks = {
        asyncio.ensure_future(backends[m].complete(decision.body)): m for m in decision.invoked
    }
    done: dict[str, BackendCall] = {}
    pending = set(tasks)
    reason = "all answered"
    grace_end = None
    while pending:
        timeout = decision.remaining()
        if grace_end is not None:
            timeout = min(timeout, grace_end - time.perf_counter())
        if timeout <= 0:
            reason = "deadline" if decision.remaining() <= 0 else "grace"
            break
        finished, pending = await asyncio.wait(
            pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in finished:
            done[tasks[task]] = task.result()
        if (
            pending
            and config.completion == "decided"
            and decided(done, [tasks[t] for t in pending])
        ):
            reason = "decided"
            break
        if grace_end is None and config.grace_s and any(c.ok for c in done.values()):
            grace_end = time.perf_counter() + config.grace_s
    cancel = config.cancel_abandoned
    cancelled = []
    for task in pending:  # abandoned: cancelled (not billed further), or left to finish
        backend = backends[tasks[task]]
        if cancel and not (reason == "grace" and backend.watch(task)):
            task.cancel()
            cancelled.append(tasks[task])
            if reason == "deadline":  # missed the whole deadline: a failure (a hung member
                breaker = backend.breaker  # opens it); by grace: only slower, nothing
                task.add_done_callback(lambda t, b=breaker: t.cancelled() and b.failure())
        keep_running(task)
    calls = [
        done.get(m)
        or BackendCall(
            m,
            None,
            time.perf_counter() - decision.started,
            0,
            error=f"abandoned ({reason})",
            abandoned=True,
        )
        for m in decision.invoked
    ]
    decision.completion = {
        "rule": config.completion,
        "reason": reason,
        "answered": sum(c.ok for c in calls),
        "abandoned": [c.backend for c in calls if c.abandoned],
        "cancelled": [m for m in decision.invoked if m in cancelled],
    }
    return calls
