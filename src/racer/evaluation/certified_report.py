"""The report's text for certified answer-level policies: one sentence per alpha, the
comparison with the uncorrected choice, and which aggregator wins (a leaf over the
``certified`` records of :mod:`racer.evaluation.certified_trials`)."""

from __future__ import annotations

__all__ = ["opening_sentences", "policy_verdict", "promise", "saves"]


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
    return (
        f"{task}alpha {record['alpha']:g}: certified {promise(record)} with probability "
        f"{confidence}, at {100 * record['cost_share']:.0f} % of {reference}'s cost {measured}."
    )


def promise(record: dict) -> str:
    """What a certified record promises about the served answer, in words."""
    if record["objective"] == "regret":
        return f"at most {_points(record['alpha'])} below {record['reference']}"
    if record["objective"] == "error":
        return f"error at most {record['alpha']:g}"
    return f"misrouting risk at most {record['alpha']:g}"


def saves(record: dict) -> bool:
    """Whether a certified record saves money: in most trials a policy cheaper than the
    reference was certified, and its mean cost is below the reference's."""
    return (
        record["uncertified"] < 0.5 and record["refused"] < 0.5 and record["cost_share"] < 1.0
    )


def policy_verdict(records: list[dict], top1_accuracy: float | None = None) -> dict | None:
    """Does the certified answer-level policy save money, per alpha (and task)?

    Parameters
    ----------
    records : list of dict
        The ``certified`` records of :mod:`racer.evaluation.certified_trials`.
    top1_accuracy : float, optional
        The base router's top-1 accuracy on the records' pool, put beside the rows of
        records without a ``task`` (those of the evaluation's own test data).

    Returns
    -------
    dict or None
        None without records; else ``objective``, ``delta``, ``per_alpha`` (per record:
        ``task``, ``alpha``, ``policy`` (the one chosen most often) and
        ``policy_share_of_trials``, ``promise``,
        ``reference``, ``accuracy``, ``reference_accuracy``, ``top1_accuracy``,
        ``mean_cost``, ``reference_cost``, ``cost_share``, ``violation_rate``,
        ``refused``, ``uncertified``, ``serve`` ("certified policy" or the reference's
        name)) and ``saves_at`` (rows that serve the policy), every number copied from
        the records.
    """
    if not records:
        return None
    rows = []
    for record in records:
        keep = saves(record)
        rows.append(
            {
                "task": record.get("task"),
                "alpha": record["alpha"],
                "policy": record["policy"],
                "policy_share_of_trials": record.get("policy_share_of_trials"),
                "promise": promise(record),
                "reference": record["reference"],
                "accuracy": record["accuracy"],
                "reference_accuracy": record["reference_accuracy"],
                "top1_accuracy": top1_accuracy if record.get("task") is None else None,
                "mean_cost": record["mean_cost"],
                "reference_cost": record["reference_cost"],
                "cost_share": record["cost_share"],
                "violation_rate": record["violation_rate"],
                "refused": record["refused"],
                "uncertified": record["uncertified"],
                "serve": "certified policy" if keep else record["reference"],
            }
        )
    return {
        "objective": records[0]["objective"],
        "delta": records[0]["delta"],
        "trials": records[0]["trials"],
        "per_alpha": rows,
        "saves_at": sum(row["serve"] == "certified policy" for row in rows),
    }


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
