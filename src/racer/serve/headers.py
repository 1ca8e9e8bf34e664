"""The ``x-racer-*`` response headers: every answer explains itself before its body.

- ``x-racer-id``: the completion's (and the logged decision's) id;
- ``x-racer-route``: the route that answered;
- ``x-racer-models``: the models called, in the order they were called (comma-separated,
  a policy's judge last); empty when none was (an abstention);
- ``x-racer-decision``: ``set of K: REASON`` (a calibrated set; REASON is how its calls
  ended: ``all answered``, ``decided``, ``grace``, ``deadline``, or ``relayed``),
  ``policy: STOP`` (a certified policy and its stop reason, e.g. ``escalated to
  reference``), ``abstained`` (the refusal), or ``failed`` (no model answered; an
  error status comes with it);
- ``x-racer-cost-usd``: the dollars of every call made; ``unknown`` when no upstream
  reported usage; ``pending`` on a relayed stream (see below);
- ``x-racer-certificate``: what the route guarantees, ``alpha=A; delta=D;
  abstention=MODE`` for a calibrated set, ``objective=O; alpha=A; delta=D;
  certified=C`` for a certified policy (``; this answer: uncertified`` appended when
  the answer is outside it);
- ``x-racer-certified``: ``true`` when the answer is within the route's certificate,
  ``false`` when it is not (``racer.uncertified`` says why: a cascade whose reference
  failed, a set whose top member's refusal was passed over, a fallback's answer); absent
  on a failure (no answer).

Headers leave before the first byte of the body. A finished answer (JSON, or a stream
made from a finished answer: multi-model sets, policies that compared answers,
abstentions) knows everything then. A relayed stream (a one-model set; a policy's
single model or the fallback it escalated to) is sent as the upstream streams it, so
its headers say what is known when it starts (route, models called so far, decision
``set of 1: relayed`` or ``policy: STOP (relayed)``, certificate, ``x-racer-certified:
true``: a relayed answer is the set's or the policy's own) and
``x-racer-cost-usd: pending``: its cost is in the final chunk's ``racer.cost_usd``,
sent just before ``[DONE]``.

Values are ASCII (anything else becomes ``?``) and at most 512 characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_VALUE_CHARS = 512


def header_value(text: str) -> str:
    """``text`` as a safe header value: printable ASCII only, at most 512 characters."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return safe[:MAX_VALUE_CHARS]


def cost_text(cost_usd: float | None) -> str:
    """Dollars as a header value (``unknown`` when no upstream reported usage)."""
    return "unknown" if cost_usd is None else f"{cost_usd:.6g}"


def certificate_text(racer: Mapping[str, Any]) -> str:
    """The route's guarantee, from a ``racer`` object (a policy's certificate first)."""
    policy = racer.get("policy")
    if isinstance(policy, Mapping) and isinstance(policy.get("certificate"), Mapping):
        certificate = policy["certificate"]
        fields = ("objective", "alpha", "delta", "certified")
        text = "; ".join(f"{key}={certificate.get(key)}" for key in fields)
    else:
        fields = ("alpha", "delta", "abstention")
        text = "; ".join(f"{key}={racer.get(key)}" for key in fields)
    if racer.get("certified") is False:  # an answer outside the certificate says so
        text += "; this answer: uncertified"
    return text


def decision_text(racer: Mapping[str, Any]) -> str:
    """What was decided: a set and how its calls ended, a policy's stop, or the refusal."""
    if racer.get("abstained"):
        return "abstained"
    if racer.get("chosen") is None:
        return "failed"
    completion = racer.get("completion") or {}
    if isinstance(racer.get("policy"), Mapping):
        return f"policy: {completion.get('reason') or racer['policy'].get('stopped', '')}"
    return f"set of {len(racer.get('set') or [])}: {completion.get('reason') or 'relayed'}"


def models_called(racer: Mapping[str, Any]) -> list[str]:
    """The models called for an answer, in call order (a policy's judge last)."""
    policy = racer.get("policy")
    if isinstance(policy, Mapping):
        called = list(policy.get("called") or [])
        judge = policy.get("judge")
        return called + ([judge["backend"]] if isinstance(judge, Mapping) else [])
    return list(racer.get("backends") or {})


def answer_headers(racer: Mapping[str, Any]) -> dict[str, str]:
    """The ``x-racer-*`` headers of an answer (or a failure) whose ``racer`` object is known."""
    headers = {
        "x-racer-id": str(racer.get("id", "")),
        "x-racer-route": str(racer.get("route", "")),
        "x-racer-models": ",".join(models_called(racer)),
        "x-racer-decision": decision_text(racer),
        "x-racer-cost-usd": cost_text(racer.get("cost_usd")),
        "x-racer-certificate": certificate_text(racer),
    }
    if "certified" in racer:  # an answer, not a failure
        headers["x-racer-certified"] = "false" if racer["certified"] is False else "true"
    return {name: header_value(value) for name, value in headers.items()}


def relay_headers(
    decision_id: str,
    route: str,
    models: list[str],
    decided: str,
    guarantee: Mapping[str, Any],
) -> dict[str, str]:
    """The headers of a relayed stream, sent before its first byte.

    ``models`` are the models called so far, the relayed one last; ``guarantee`` is a
    ``racer``-like mapping for :func:`certificate_text`; the cost is ``pending`` (it
    comes in the final chunk's ``racer.cost_usd``). A relayed answer is within the
    certificate (``x-racer-certified: true``).
    """
    headers = {
        "x-racer-id": decision_id,
        "x-racer-route": route,
        "x-racer-models": ",".join(models),
        "x-racer-decision": decided,
        "x-racer-cost-usd": "pending",
        "x-racer-certificate": certificate_text(guarantee),
        "x-racer-certified": "true",
    }
    return {name: header_value(value) for name, value in headers.items()}
