"""Write an evaluation as ``results.json`` and a readable ``report.md``."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from racer.evaluation.certified_report import opening_sentences, policy_verdict
from racer.evaluation.metrics import top1_accuracy
from racer.evaluation.run import Evaluation

DEFAULT_RACER = "RACER binomial threshold"
BASELINE_HEADLINE = ("best single model", "top-1 router", "all models")
HEADLINE_METHODS = (DEFAULT_RACER, *BASELINE_HEADLINE)
CALIBRATED_RULES = ("pac", "crc", "empirical", "conformal")
#: Where the method is written down: shipped in the wheel and kept in the repository.
METHOD_PAGE = "the method page (racer/method.md in the package, docs/method.md in the repository)"


def headline_racer(evaluation: Evaluation) -> str:
    """The RACER method the headline tables show: the binomial threshold one when it was
    run, else the first RACER method of the evaluation (for example ``--bounds wsr``)."""
    names = [r["method"] for r in evaluation.records if r["group"] == "racer"]
    if DEFAULT_RACER in names:
        return DEFAULT_RACER
    if not names:
        raise ValueError("The evaluation holds no RACER method; nothing to report.")
    return names[0]


def headline_methods(evaluation: Evaluation) -> tuple[str, ...]:
    """The headline RACER method, then the usual baselines."""
    return (headline_racer(evaluation), *BASELINE_HEADLINE)


def monte_carlo_limit(delta: float, n_trials: int) -> float:
    """Largest violation rate consistent with ``delta``: delta + 3 standard errors."""
    return delta + 3.0 * math.sqrt(delta * (1.0 - delta) / n_trials)


def json_safe(value: Any) -> Any:
    """JSON-safe values: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_document(evaluation: Evaluation, extra: dict[str, Any] | None = None) -> dict:
    """The content of ``results.json``."""
    plan = evaluation.plan
    return json_safe(
        {
            "task": evaluation.task,
            "models": list(evaluation.model_names),
            "settings": asdict(evaluation.settings),
            "cost_unit": evaluation.cost_unit,
            "aggregator": evaluation.aggregator,
            "n_pool": plan.n_pool,
            "n_dropped_unknown_labels": evaluation.n_dropped,
            "prices_from": evaluation.prices_from,
            "method_page": "racer/method.md (docs/method.md in the repository)",
            "trial_scheme": {
                "split": "trial t: numpy.random.default_rng([seed, t]).permutation(n_pool); "
                "the first n_cal rows calibrate, the rest test",
                "validity": "trial t: numpy.random.default_rng([seed, t, 1]).integers(n_pool, "
                "size=n_cal) calibrates; the risk is measured on the whole pool",
                "violation_rate": "share of validity trials whose pool risk exceeds alpha",
                "any_correct_upper_bound": "share of test queries where some invoked model is "
                "correct, reached by calling mean_set_size models per query: an upper bound "
                "for any aggregator, not an accuracy",
                "top1_accuracy": "the base router's top-1 model on the same test queries of "
                "the same trials; accuracy_vs_top1 = accuracy - top1_accuracy; "
                "top1_in_set_rate: share of test queries whose set holds the top-1 model",
            },
            **(extra or {}),
            "results": evaluation.records,
        }
    )


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_cost(value: float | None, unit: str) -> str:
    """A cost per query: dollars to 5 decimals, model calls to 2, "-" when unknown."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"${value:.5f}" if unit == "USD" else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _validity_section(evaluation: Evaluation) -> list[str]:
    settings = evaluation.settings
    limit = monte_carlo_limit(settings.delta, evaluation.plan.n_trials)
    calibrated = [
        r for r in evaluation.records if r["rule"] in CALIBRATED_RULES and r["group"] != "oracle"
    ]
    names = list(dict.fromkeys(r["method"] for r in calibrated))
    rows = []
    for name in names:
        cells = [name]
        for alpha in settings.alphas:
            record = evaluation.record(name, alpha)
            if record["infeasible_rate"] >= 1.0:
                cells.append("refused in every trial (too few calibration points)")
                continue
            mark = "ok" if record["violation_rate"] <= limit else "**above**"
            cells.append(f"{_number(record['violation_rate'])} ({mark})")
        rows.append(cells)
    return [
        "## Does the guarantee hold?",
        "",
        f"Share of {evaluation.plan.n_trials} validity trials whose true risk exceeds alpha "
        "(calibrate on an i.i.d. resample of the pool, measure the risk on the whole pool; "
        f"{METHOD_PAGE}, section 9). RACER promises at most delta = {settings.delta:g}; with "
        f"Monte-Carlo error the limit is delta + 3 SE = {limit:.3f}. Conformal risk control "
        "promises only E[risk] <= alpha, and the uncorrected threshold promises nothing.",
        "",
        *_table(["method"] + [f"alpha = {a:g}" for a in settings.alphas], rows),
    ]


def _headline_section(evaluation: Evaluation) -> list[str]:
    unit = evaluation.cost_unit
    lines = [
        "## RACER next to the usual choices",
        "",
        f"Means over {evaluation.plan.n_trials} random calibration/test splits; accuracy is "
        f"the {evaluation.aggregator} aggregator's (abstentions count as not correct); cost "
        f"per query in {unit}.",
        "",
    ]
    if evaluation.aggregator == "best":
        lines += [
            "The data has no responses to vote over, so accuracy is best-in-set: the answer "
            "of the highest-scored invoked model, the same as the top-1 router's whenever "
            "the top model is in the set. What a larger set buys shows in the 'any correct' "
            "upper bound below.",
            "",
        ]
    rows = []
    for alpha in evaluation.settings.alphas:
        for name in headline_methods(evaluation):
            record = evaluation.record(name, alpha)
            rows.append(
                [
                    f"{alpha:g}",
                    name,
                    _number(record["accuracy"]),
                    format_cost(record["mean_cost"], unit),
                    _number(record["mean_set_size"], 2),
                    _number(record.get("flag_rate")),
                    _number(record["risk"]),
                    _points_difference(record.get("accuracy_vs_top1")),
                ]
            )
    header = [
        "alpha",
        "method",
        "accuracy",
        "mean cost",
        "set size",
        "flag rate",
        "test risk",
        "accuracy vs top-1 (same queries)",
    ]
    return lines + _table(header, rows)


def flag_warnings(evaluation: Evaluation, limit: float = 0.5) -> list[str]:
    """One sentence per RACER method and alpha whose answers carry the abstain flag on
    more than ``limit`` of the test queries (flag mode), with the share no model answers."""
    labels = evaluation.pool.labels
    no_good = float(np.mean(~np.any(np.nan_to_num(labels) > 0, axis=1)))
    found = []
    for record in evaluation.records:
        flag_rate = record.get("flag_rate")
        if record["group"] != "racer" or flag_rate is None or not flag_rate > limit:
            continue
        alpha = record["alpha"]
        found.append(
            f"**Warning:** {record['method']} at alpha {alpha:g} raises the abstain flag on "
            f"{flag_rate:.0%} of the test queries, calling {record['mean_set_size']:.2f} models "
            "each: its certificate mostly rests on flagged answers (\"possibly no model can "
            f"answer\"). {no_good:.1%} of the pool's queries have no good model"
            + (
                f"; below that share any distribution-free guarantee must abstain on at least "
                f"{no_good - alpha:.1%} of all queries"
                if no_good > alpha
                else ""
            )
            + ". Consider `racer calibrate --abstention strict` or a higher alpha."
        )
    return found


def _flag_section(evaluation: Evaluation) -> list[str]:
    found = flag_warnings(evaluation)
    return [*(f"- {warning}" for warning in found), ""] if found else []


def _compare(racer: float, best: float, higher: str, lower: str, digits: str) -> str:
    if racer is None or best is None or not (math.isfinite(racer) and math.isfinite(best)):
        return "cannot be compared (RACER refused to calibrate in every trial)"
    if abs(racer - best) < 5 * 10 ** -(int(digits[1]) + 1):
        return f"ties ({racer:{digits}} vs {best:{digits}})"
    word = higher if racer > best else lower
    return f"{word} ({racer:{digits}} vs {best:{digits}})"


def top1_in_every_answered_set(record: dict) -> bool:
    """Whether a record's sets hold the top-1 model whenever they call any model."""
    answered = 1.0 - record["abstention_rate"]
    return bool(answered > 0 and abs(record["top1_in_set_rate"] - answered) < 1e-9)


def cannot_beat_top1(record: dict) -> bool:
    """Served best-in-set with the top-1 model in every answered set, a set answers exactly
    as the top-1 router (or not at all): its accuracy cannot exceed top-1's."""
    return record["aggregator"] == "best" and top1_in_every_answered_set(record)


def set_verdict(evaluation: Evaluation) -> dict[str, Any]:
    """Do the calibrated sets beat the best single model, per alpha, on accuracy and cost?

    Returns
    -------
    dict
        ``method`` (the headline RACER method), ``per_alpha`` (a list of dicts with
        ``alpha``, ``accuracy``, ``best_accuracy``, ``cost``, ``best_cost``,
        ``more_accurate`` and ``cheaper`` (bool or None when unknown), and the honest
        comparison on the same test queries: ``top1_accuracy`` (the base router's top-1),
        ``cannot_beat_top1`` (best-in-set with the top-1 model in every answered set)),
        and the counts ``more_accurate_at`` and ``cheaper_at``.
    """
    name = headline_racer(evaluation)
    rows = []
    for alpha in evaluation.settings.alphas:
        ours, best = evaluation.record(name, alpha), evaluation.record("best single model", alpha)
        known = all(
            v is not None and math.isfinite(v)
            for v in (ours["accuracy"], best["accuracy"], ours["mean_cost"], best["mean_cost"])
        )
        rows.append(
            {
                "alpha": alpha,
                "accuracy": ours["accuracy"],
                "best_accuracy": best["accuracy"],
                "cost": ours["mean_cost"],
                "best_cost": best["mean_cost"],
                "more_accurate": bool(ours["accuracy"] > best["accuracy"]) if known else None,
                "cheaper": bool(ours["mean_cost"] < best["mean_cost"]) if known else None,
                "top1_accuracy": ours["top1_accuracy"],
                "cannot_beat_top1": cannot_beat_top1(ours) if known else None,
            }
        )
    return {
        "method": name,
        "per_alpha": rows,
        "more_accurate_at": sum(bool(r["more_accurate"]) for r in rows),
        "cheaper_at": sum(bool(r["cheaper"]) for r in rows),
    }


def verdict(evaluation: Evaluation, certified: list[dict] | None = None) -> dict[str, Any]:
    """What to serve: the certified answer-level policy, the calibrated sets, or one model.

    Parameters
    ----------
    evaluation : Evaluation
    certified : list of dict, optional
        The ``certified`` records (``racer evaluate --objective``, the demo's stories).

    Returns
    -------
    dict
        The set-level verdict of :func:`set_verdict` (``method``, ``per_alpha``,
        ``more_accurate_at``, ``cheaper_at``), beside it ``policy`` (the policy verdict of
        :func:`racer.evaluation.certified_report.policy_verdict`, None without
        ``certified``), and ``serve`` ("certified policy", "calibrated sets" or "best
        single model") with ``why``, one sentence with the numbers.
    """
    sets = set_verdict(evaluation)
    top1 = top1_accuracy(evaluation.pool.scores, evaluation.pool.labels)
    policy = policy_verdict(certified or [], top1)
    serve, why = _recommendation(evaluation, sets, policy)
    return {**sets, "policy": policy, "serve": serve, "why": why}


def _recommendation(evaluation: Evaluation, sets: dict, policy: dict | None) -> tuple[str, str]:
    total = len(sets["per_alpha"])
    set_words = (
        f"the calibrated sets ({sets['method']}) are more accurate than the best single model "
        f"at {sets['more_accurate_at']} of {total} alphas and cheaper at {sets['cheaper_at']} "
        f"of {total}"
    )
    rows = (policy or {}).get("per_alpha", [])
    saving = [row for row in rows if row["serve"] == "certified policy"]
    if policy is not None and saving:
        row = min(saving, key=lambda r: r["alpha"])
        task = f"on {row['task']} " if row["task"] else ""
        return "certified policy", (
            f"The certified answer-level policy saves money with a guarantee on the answer "
            f"served: {task}at alpha {row['alpha']:g} it is certified {row['promise']} with "
            f"probability {1 - policy['delta']:g} and serves accuracy {row['accuracy']:.3f} "
            f"against {row['reference_accuracy']:.3f} at {100 * row['cost_share']:.0f} % of "
            f"{row['reference']}'s cost; {set_words}, and certify only the misrouting risk."
        )
    if sets["more_accurate_at"] or sets["cheaper_at"]:
        return "calibrated sets", f"No certified policy saves money here; {set_words}."
    nothing = "no certified policy saves money and " if policy else ""
    return "best single model", (
        f"On this task {nothing}{set_words}: calling the best single model is the better "
        "choice unless the certified bound on the misrouting risk is needed."
    )


def _points_difference(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:+.{digits}f} pts"


def top1_sentences(evaluation: Evaluation) -> list[str]:
    """Served accuracy of the headline RACER method against the top-1 router, per alpha,
    on the same test queries; says so where a set cannot beat top-1."""
    name = headline_racer(evaluation)
    lines, bounded = [], []
    for alpha in evaluation.settings.alphas:
        record = evaluation.record(name, alpha)
        if record["infeasible_rate"] >= 1.0:
            continue
        text = (
            f"- alpha = {alpha:g}: {name} serves accuracy {_number(record['accuracy'])} against "
            f"the top-1 router's {_number(record['top1_accuracy'])} on the same test queries "
            f"({_points_difference(record['accuracy_vs_top1'])}), calling "
            f"{_number(record['mean_set_size'], 2)} models per query"
        )
        if record["abstention_rate"] > 0:
            text += (
                f" and refusing {100 * record['abstention_rate']:.1f} % of the queries "
                "(a refusal counts as not correct)"
            )
        if cannot_beat_top1(record):
            bounded.append(f"{alpha:g}")
        elif record["aggregator"] == "best":
            text += (
                f"; the top-1 model is in the set on {_number(record['top1_in_set_rate'])} "
                "of the queries"
            )
        lines.append(text + ".")
    if bounded:
        lines += [
            "",
            f"At alpha = {', '.join(bounded)} these sets cannot beat top-1: with no responses "
            "to aggregate, best-in-set serves the highest-scored model of the set, every set "
            "they answer with holds the top-1 model, so they serve top-1's answer exactly and "
            "their other models add cost only.",
        ]
    return lines


def _verdict_section(evaluation: Evaluation, certified: list[dict] | None) -> list[str]:
    found = verdict(evaluation, certified)
    unit = evaluation.cost_unit
    total = len(found["per_alpha"])
    lines = [
        "## Does RACER beat the best single model?",
        "",
        f"In short: serve the {found['serve']}. {found['why']}",
        "",
    ]
    if found["policy"] is not None:
        lines += [
            "**Certified answer-level policy** (the answer served, measured on the whole test "
            f"pool over {found['policy']['trials']} validity trials):",
            "",
            *_policy_lines(found["policy"]),
            "",
            "**Calibrated sets** (set-level: the misrouting risk is certified, not the cost):",
            "",
        ]
    lines += [
        f"{found['method']} is more accurate than the best single model at "
        f"{found['more_accurate_at']} of {total} alphas and cheaper at "
        f"{found['cheaper_at']} of {total} (means over {evaluation.plan.n_trials} splits; "
        "the best single model is chosen on each split's calibration half).",
        "",
    ]
    for row in found["per_alpha"]:
        cost_digits = ".5f" if unit == "USD" else ".2f"
        lines.append(
            f"- alpha = {row['alpha']:g}: accuracy "
            + _compare(row["accuracy"], row["best_accuracy"], "higher", "lower", ".3f")
            + f"; cost per query ({unit}) "
            + _compare(row["cost"], row["best_cost"], "higher", "lower", cost_digits)
            + "."
        )
    honest = top1_sentences(evaluation)
    if honest:
        lines += ["", "Served accuracy against the base router's top-1:", "", *honest]
    return lines + [""]


def _policy_lines(policy: dict) -> list[str]:
    lines = []
    for row in policy["per_alpha"]:
        task = f"{row['task']}, " if row["task"] else ""
        top1 = (
            f", top-1 router {row['top1_accuracy']:.3f}"
            if row["top1_accuracy"] is not None
            else ""
        )
        share = row["policy_share_of_trials"]
        served = (
            f"certified most often ({share:.0%} of trials): {row['policy']}"
            if row["serve"] == "certified policy"
            else f"serves {row['reference']} (no saving certified in most trials)"
        )
        lines.append(
            f"- {task}alpha = {row['alpha']:g}: {served}; certified {row['promise']}; "
            f"accuracy {row['accuracy']:.3f} vs {row['reference']} {row['reference_accuracy']:.3f}"
            f"{top1}; cost {100 * row['cost_share']:.0f} % of {row['reference']}'s; violation "
            f"rate {row['violation_rate']:.3f}."
        )
    return lines


def _all_methods_section(evaluation: Evaluation) -> list[str]:
    unit = evaluation.cost_unit
    header = [
        "alpha",
        "method",
        "test risk (± SE)",
        "violation rate",
        "set size",
        "vs oracle",
        "abstention",
        "flag rate",
        f"cost ({unit})",
        "accuracy",
        "vs top-1",
        "any correct: upper bound (models per query)",
        "refused",
    ]
    rows = [
        [
            f"{r['alpha']:g}",
            r["method"],
            f"{_number(r['risk'])} ± {_number(r['risk_se'])}",
            _number(r["violation_rate"]),
            _number(r["mean_set_size"], 2),
            _number(r["set_size_vs_oracle"], 2),
            _number(r["abstention_rate"]),
            _number(r.get("flag_rate")),
            format_cost(r["mean_cost"], unit),
            _number(r["accuracy"]),
            _points_difference(r.get("accuracy_vs_top1")),
            f"{_number(r['any_correct_upper_bound'])} ({_number(r['mean_set_size'], 2)})",
            _number(r["infeasible_rate"], 2),
        ]
        for r in evaluation.records
        if r["group"] != "single"
    ]
    return [
        "## Every method",
        "",
        "'vs oracle' is the mean set size over the hindsight oracle's (the smallest "
        "threshold sets whose test risk is <= alpha). 'vs top-1' is the served accuracy minus "
        "the base router's top-1 accuracy on the same test queries, in points. 'any correct' "
        "is the share of queries where some invoked model is right, reached by calling the "
        "models per query in brackets: an upper bound for any aggregator, not an accuracy. "
        "'refused' is the share of trials where the calibration could not certify "
        "alpha (too little data); other columns average the remaining trials.",
        "",
        *_table(header, rows),
    ]


def _models_section(evaluation: Evaluation) -> list[str]:
    alpha = evaluation.settings.alphas[0]
    rows = []
    for name in evaluation.model_names:
        record = evaluation.record(f"model: {name}", alpha)
        rows.append(
            [
                name,
                _number(record["accuracy"]),
                format_cost(record["mean_cost"], "USD")
                if evaluation.cost_unit == "USD"
                else "1 call",
            ]
        )
    return ["## Candidate models (test splits)", "", *_table(["model", "accuracy", "cost"], rows)]


def write_report(
    evaluation: Evaluation,
    out_dir: Path,
    *,
    figures: list[Path] | None = None,
    figures_note: str | None = None,
    header: list[str] | None = None,
    extra_sections: list[str] | None = None,
    extra_results: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``results.json`` and ``report.md`` into ``out_dir``.

    Parameters
    ----------
    evaluation : Evaluation
        What :func:`racer.evaluation.run.evaluate_pool` returned.
    out_dir : pathlib.Path
        Created if missing.
    figures : list of pathlib.Path, optional
        PNG files to embed (paths relative to ``out_dir`` are kept as they are).
    figures_note : str, optional
        Why there are no figures (for example matplotlib is not installed).
    header : list of str, optional
        Lines describing the data and the router, put under the title.
    extra_sections : list of str, optional
        Markdown lines appended at the end (for example the cost-matching search).
    extra_results : dict, optional
        Extra top-level entries of ``results.json``.

    Returns
    -------
    tuple of pathlib.Path
        The paths of ``results.json`` and ``report.md``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    certified = (extra_results or {}).get("certified")
    extra = {
        "verdict": verdict(evaluation, certified),
        "flag_warnings": flag_warnings(evaluation),
        **(extra_results or {}),
    }
    results_path.write_text(json.dumps(results_document(evaluation, extra), indent=2))
    plan = evaluation.plan
    lines = [
        f"# RACER evaluation: {evaluation.task}",
        "",
        *opening_sentences(extra_results),
        *(header or []),
        f"Pool: {plan.n_pool} test queries ({evaluation.n_dropped} left out for unknown labels); "
        f"{plan.n_trials} trials with {plan.n_cal} calibration and {plan.n_test} test queries; "
        f"delta = {evaluation.settings.delta:g}.",
        "",
        *(
            [
                f"The cost family's per-model prices are the mean costs of "
                f"{evaluation.prices_from} (fixed before calibration).",
                "",
            ]
            if evaluation.prices_from
            else []
        ),
        *_verdict_section(evaluation, certified),
        *_headline_section(evaluation),
        *_validity_section(evaluation),
        *_flag_section(evaluation),
        *(extra_sections or []),
        *[f"![{path.stem}]({path.name})\n" for path in figures or []],
        *([f"_No figures: {figures_note}_", ""] if figures_note else []),
        *_all_methods_section(evaluation),
        *_models_section(evaluation),
    ]
    report_path = out_dir / "report.md"
    report_path.write_text("\n".join(lines))
    return results_path, report_path
