"""The ``usage`` an answer reports: the upstream's own, or a sum that says it is one.

An answer made by one call reports that upstream's ``usage`` unchanged
(``prompt_tokens_details``, ``completion_tokens_details``, ``cost`` and all), as the
upstream sent it. An answer that called several models (a multi-model set, a
cascade, fallbacks) reports the sum over every call, each nested count summed too,
and says so in its ``racer`` object: ``usage_summed: true`` and ``usage_by_model``
(each model's own usage), so that a client's cost accounting is not silently
multiplied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from racer.serve.backends import BackendCall


def call_usage(call: BackendCall) -> dict[str, Any] | None:
    """The usage ``call``'s upstream reported (its own object when it sent one), or None."""
    upstream = call.upstream or {}
    usage = upstream.get("usage")
    if isinstance(usage, dict):
        return complete_totals(usage)
    if call.prompt_tokens is None and call.completion_tokens is None:
        return None
    return complete_totals(
        {"prompt_tokens": call.prompt_tokens or 0, "completion_tokens": call.completion_tokens or 0}
    )


def complete_totals(usage: Mapping[str, Any]) -> dict[str, Any]:
    """``usage`` with the three token counts OpenAI always sends (0 when missing)."""
    completed = dict(usage)
    for key in ("prompt_tokens", "completion_tokens"):
        if not isinstance(completed.get(key), int):
            completed[key] = 0
    if not isinstance(completed.get("total_tokens"), int):
        completed["total_tokens"] = completed["prompt_tokens"] + completed["completion_tokens"]
    return completed


def sum_usage(usages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The field-by-field sum of ``usages`` (nested detail objects summed the same way).

    Numbers are added; a field that is not a number or an object keeps its first value.

    Examples
    --------
    >>> sum_usage([{"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1}},
    ...            {"prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}])
    {'prompt_tokens': 7, 'prompt_tokens_details': {'cached_tokens': 3}}
    """
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, bool) or value is None:
                total.setdefault(key, value)
            elif isinstance(value, (int, float)):
                before = total.get(key, 0)
                total[key] = before + value if isinstance(before, (int, float)) else before
            elif isinstance(value, Mapping):
                before = total.get(key)
                total[key] = sum_usage([before, value]) if isinstance(before, Mapping) else value
            else:
                total.setdefault(key, value)
    return total


def answer_usage(calls: Sequence[BackendCall]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer's ``usage`` and the ``racer`` fields that say how it was made.

    Returns
    -------
    usage : dict
        One call's usage as the upstream sent it, or the sum over the calls.
    racer_fields : dict
        ``usage_summed`` (whether several models' usage was added) and, when it was,
        ``usage_by_model``.
    """
    by_model: dict[str, dict[str, Any]] = {}
    for call in calls:
        usage = call_usage(call)
        if usage is not None:
            before = by_model.get(call.backend)
            by_model[call.backend] = usage if before is None else sum_usage([before, usage])
    if len(by_model) <= 1:
        usage = next(iter(by_model.values()), None) or complete_totals({})
        return usage, {"usage_summed": False}
    return complete_totals(sum_usage(list(by_model.values()))), {
        "usage_summed": True,
        "usage_by_model": by_model,
    }
