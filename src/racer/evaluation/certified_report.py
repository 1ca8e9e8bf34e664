"""The report's text for certified answer-level policies: one sentence per alpha, the
comparison with the uncorrected choice, and which aggregator wins (a leaf over the
``certified`` records of :mod:`racer.evaluation.certified_trials`)."""

from __future__ import annotations

__all__ = ["opening_sentences"]


def _points(value: float) -> str:
    return f"{100 * value:.3g} points"


def opening_sentences(results: dict | None) -> list[str]:
    """The report's opening: one plain sentence per alpha of the ``certified`` records.

    Then a table of the certified policy next to the uncorrected choice of the same
    family (tuned on calibration, no bound), and one line per task saying which
    aggregator wins. Empty when ``results`` holds no ``certified`` list.
    """
    records = (results or {}).get("certified") or []
    lines = [f"- {_sentence(record)}" for record in records]
    if not lines:
        return []
    return [
        "## Certified answer-level policy",
        "",
        *lines,
        "",
        *_comparison_table(records),
        "",
        *_aggregator_lines(records),
        "",
    ]


def _sentence(record: dict) -> str:
    reference = record["reference"]
    task = f"{record['task']}, " if record.get("task") else ""
    confidence = f"{1 - record['delta']:g}"
    measured = (
        f"(measured over {record['trials']} validity trials: accuracy "
        f"{record['accuracy']:.3f} vs {record['reference_accuracy']:.3f}, violation rate "
        f"{record['violation_rate']:.3f})"
    )
    if record.get("uncertified", 0.0) >= 0.5:
        return (
            f"{task}alpha {record['alpha']:g}: nothing, not even {reference} alone, could be "
            f"certified in {100 * record['uncertified']:.0f} % of trials; {reference} is "
            f"served without a certificate {measured}."
        )
    # the share is a ratio of float means: "as dear as the reference" up to round-off
    if record["refused"] >= 0.5 and record["cost_share"] <= 1.0 + 1e-9:
        return (
            f"{task}alpha {record['alpha']:g}: no saving could be certified against "
            f"{reference} in {100 * record['refused']:.0f} % of trials, so {reference} itself "
            f"is served {measured}."
        )
    if record["objective"] == "regret":
        promise = f"at most {_points(record['alpha'])} below {reference}"
    elif record["objective"] == "error":
        promise = f"error at most {record['alpha']:g}"
    else:
        promise = f"misrouting risk at most {record['alpha']:g}"
    return (
        f"{task}alpha {record['alpha']:g}: certified {promise} with probability {confidence}, "
        f"at {100 * record['cost_share']:.0f} % of {reference}'s cost {measured}."
    )


def _comparison_table(records: list[dict]) -> list[str]:
    """Certified policy against the uncorrected choice, per alpha (markdown)."""
    with_task = any(record.get("task") for record in records)
    columns = [
        *(["task"] if with_task else []),
        "alpha",
        "FWER",
        "certified: accuracy",
        "cost share",
        "violation",
        "refused",
        "uncorrected: accuracy",
        "cost share",
        "violation",
    ]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    nan = float("nan")
    for record in records:
        raw = {"accuracy": nan, "cost_share": nan, "violation_rate": nan}
        raw.update(record.get("uncorrected") or {})
        cells = [
            *([record.get("task", "")] if with_task else []),
            f"{record['alpha']:g}",
            record.get("method", ""),
            f"{record['accuracy']:.3f}",
            f"{record['cost_share']:.2f}",
            f"{record['violation_rate']:.3f}",
            f"{record['refused']:.2f}",
            f"{raw['accuracy']:.3f}",
            f"{raw['cost_share']:.2f}",
            f"{raw['violation_rate']:.3f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _aggregator_lines(records: list[dict]) -> list[str]:
    """One line per task: which aggregator wins (test accuracy of best / vote / logodds)."""
    lines, seen = [], set()
    for record in records:
        aggregators = record.get("aggregators")
        task = record.get("task", "")
        if not aggregators or task in seen:
            continue
        seen.add(task)
        label = f"{task}: " if task else ""
        lines.append(
            f"- {label}aggregator over {aggregators['over']}: {aggregators['winner']} wins "
            f"(test accuracy best {aggregators['best']:.3f}, vote {aggregators['vote']:.3f}, "
            f"logodds {aggregators['logodds']:.3f})."
        )
    return lines
