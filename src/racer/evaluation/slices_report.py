"""The report's section on slices and served rates (a leaf over :mod:`racer.evaluation.slices`)."""

from __future__ import annotations

from typing import Any


def _rate(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def above_alpha_lines(records: list[dict[str, Any]]) -> list[str]:
    """One plain sentence per group above alpha, e.g. ``mbpp: risk 0.90 under a
    certificate of 0.2 (flag, marginal calibration)``."""
    lines = []
    for record in records:
        for row in record["groups"] or []:
            if row["above_alpha"]:
                lines.append(
                    f"{row['group']}: risk {row['risk']:.2f} under a certificate of "
                    f"{record['alpha']:g} ({record['mode']}, {record['calibration']} calibration)"
                )
    return lines


def slices_section(records: list[dict[str, Any]], group_by: str | None) -> list[str]:
    """Markdown lines: served rates per (alpha, mode, calibration), per-group risk, and
    every group above alpha named."""
    if not records:
        return []
    trials = records[0]["trials"]
    lines = [
        "## What users receive, per abstention mode"
        + (f" and per group ({group_by})" if group_by else ""),
        "",
        f"RACER calibrated on the calibration rows of the first {trials} split trials serves "
        "their test rows; the rates pool those test rows. Refused: no model called; without "
        "a right answer: no served model is right (refusals included); flagged: answered "
        "with the abstain flag; flag precision: flagged answers without a right answer.",
        "",
        "| alpha | mode | calibration | certified trials | risk | models per query | refused "
        "| without a right answer | flagged | flag precision |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        certified = f"{r['trials_certified']}/{r['trials']}"
        if r["risk"] is None:
            lines.append(
                f"| {r['alpha']:g} | {r['mode']} | {r['calibration']} | {certified} "
                "| - | - | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {r['alpha']:g} | {r['mode']} | {r['calibration']} | {certified} "
            f"| {r['risk']:.3f} | {r['mean_set_size']:.2f} | {_rate(r['refusal_rate'])} "
            f"| {_rate(r['without_right_answer'])} | {_rate(r['flag_rate'])} "
            f"| {_rate(r['flag_precision'])} |"
        )
    lines.append("")
    grouped = [r for r in records if r["groups"]]
    if not grouped:
        return lines
    for alpha in dict.fromkeys(r["alpha"] for r in grouped):
        at_alpha = [r for r in grouped if r["alpha"] == alpha]
        tables = [{row["group"]: row for row in r["groups"]} for r in at_alpha]
        names = sorted({name for table in tables for name in table})
        lines += [
            f"Per-group risk of the served decisions at alpha = {alpha:g} (n: test rows "
            "pooled over the certified trials):",
            "",
            "| group | " + " | ".join(f"{r['mode']}, {r['calibration']}" for r in at_alpha) + " |",
            "|---|" + "---|" * len(at_alpha),
        ]
        for name in names:
            cells = []
            for table in tables:
                row = table.get(name)
                if row is None:
                    cells.append("-")
                    continue
                cell = f"{row['risk']:.3f} (n={row['n']})"
                cells.append(f"**{cell} above alpha**" if row["above_alpha"] else cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    above = above_alpha_lines(records)
    if above:
        lines += ["**Groups above alpha:**", "", *[f"- {line}." for line in above], ""]
    else:
        lines += ["No group is above alpha in any setting.", ""]
    return lines
