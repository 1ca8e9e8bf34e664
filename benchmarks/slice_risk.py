"""Per-slice risk under marginal and per-group certificates, and strict mode before/after.

For each pool of mixed tasks (the group is the task), every trial calibrates on an i.i.d.
resample of the pool (the pool is the population, METHOD.md section 7) and the risk of what
is *served* is measured per group on the whole pool. Printed per pool, mode and alpha: the
share of trials certified, each group's mean served risk (over certified trials) and its
violation rate (share of trials with the group's risk above alpha; it must stay within
delta + 3 SE) under the marginal certificate and under one certificate per group (groups
too small to certify pooled: ``small_groups="pool"``).

Strict mode, before and after issue 16, on the same pools: "before" tests every tau of a
20-level grid by its own chain at delta / 21 and counts a refusal as free (``refusal_cost=0``);
"after" tests one fixed sequence along the risk-size front of a 400-query training resample
(drawn independently of the calibration resample) and prices a refusal at the top model.
Printed: share of trials certified, violation rate, models called per query on the pool,
share refused.

The base router is the independent TF-IDF + logistic regression of tests/real_data.py,
trained on the tasks' train files; the pools are their test files.

Usage::

    python benchmarks/slice_risk.py [--data ../shared/data] [--trials 200] \
        [--output benchmarks/results/slice_risk.md]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from racer import RACER, InfeasibleCalibrationError
from racer.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_data import logistic_scores  # noqa: E402

POOLS = {
    "RouterBench ARC + MBPP": [
        ("routerbench/arc_challenge_train.csv", "routerbench/arc_challenge_test.csv", "arc"),
        ("routerbench/mbpp_train.csv", "routerbench/mbpp_test.csv", "mbpp"),
    ],
    "RouterDC ARC-Challenge + ARC-Easy + MMLU + GSM8K": [
        ("routerdc/arc_challenge_train.json", "routerdc/arc_challenge_test.json", "arc"),
        ("routerdc/arc_easy_train.json", "routerdc/arc_easy_test.json", "arc_easy"),
        ("routerdc/mmlu_train.json", "routerdc/mmlu_test.json", "mmlu"),
        ("routerdc/gsm8k-train.json", "routerdc/gsm8k-test.json", "gsm8k"),
    ],
}
DELTA = 0.1


class _Rows:
    """Queries and labels in the shape logistic_scores reads."""

    def __init__(self, queries: np.ndarray, labels: np.ndarray) -> None:
        self.queries, self.labels = queries, labels
        self.n_models, self.n_queries = labels.shape[1], len(queries)


def load_pool(data: Path, files: list[tuple[str, str, str]]) -> tuple[np.ndarray, ...]:
    """Scores, labels and task of every test query, the router trained on the train files."""
    splits: dict[str, list] = {"train": [], "test": []}
    tasks = []
    for train_file, test_file, task in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train = load_dataset(data / train_file, missing="drop_queries")
            test = load_dataset(data / test_file, missing="drop_queries")
        splits["train"].append(train)
        splits["test"].append(test.select_models(train.model_names))
        tasks += [task] * test.n_queries
    rows = {
        name: _Rows(
            np.concatenate([p.queries for p in parts]),
            np.vstack([p.select_models(splits["train"][0].model_names).labels for p in parts]),
        )
        for name, parts in splits.items()
    }
    scores = logistic_scores(rows["train"], rows["test"])
    return scores, rows["test"].labels, np.array(tasks)


def group_table(scores, labels, groups, mode, alpha, trials, n_cal, rng) -> list[str]:
    """Per-group mean risk and violation rate, marginal and per-group certificates."""
    names = sorted(set(groups))
    lines = []
    for per_group in (False, True):
        risks = []
        for _ in range(trials):
            sample = rng.integers(0, len(scores), size=n_cal)
            router = RACER(alpha=alpha, delta=DELTA, abstention=mode, small_groups="pool")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    router.fit(scores[sample], labels[sample],
                               groups=groups[sample] if per_group else None)
            except InfeasibleCalibrationError:
                continue  # nothing served under a false certificate: not a violation
            risks.append(router.group_risk(scores, labels, groups).risk)
        risk = np.array(risks).reshape(-1, len(names))
        cells = "  ".join(
            f"{name} {risk[:, i].mean():.3f} ({np.sum(risk[:, i] > alpha) / trials:.2f})"
            for i, name in enumerate(names)
        )
        lines.append(f"| {mode} | {alpha} | {'per group' if per_group else 'marginal'} | "
                     f"{len(risks) / trials:.2f} | {cells} |")
    return lines


def strict_row(scores, labels, alpha, trials, n_cal, rng, after: bool) -> str:
    """Certified share, violation rate, models per query and refusals of strict mode."""
    certified, risks, sizes, refused = 0, [], [], []
    for _ in range(trials):
        sample = rng.integers(0, len(scores), size=n_cal)
        training = rng.integers(0, len(scores), size=400)
        if after:
            router = RACER(alpha=alpha, delta=DELTA, abstention="strict")
            extra = {"train_scores": scores[training], "train_labels": labels[training]}
        else:
            router = RACER(alpha=alpha, delta=DELTA, abstention="strict", abstain_grid_size=20,
                           refusal_cost=0.0)
            extra = {}
        try:
            router.fit(scores[sample], labels[sample], **extra)
        except InfeasibleCalibrationError:
            continue
        certified += 1
        decision = router.predict(scores)
        risks.append(router.risk(scores, labels))
        sizes.append(decision.sum(axis=1).mean())
        refused.append(np.mean(~decision.any(axis=1)))
    if not certified:
        return f"| {alpha} | {'after' if after else 'before'} | 0.00 | - | - | - |"
    return (
        f"| {alpha} | {'after' if after else 'before'} | {certified / trials:.2f} | "
        f"{np.sum(np.array(risks) > alpha) / trials:.3f} | {np.mean(sizes):.2f} | "
        f"{np.mean(refused):.3f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2]
                        / "shared" / "data")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--n-cal", type=int, default=1500)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    slack = 3 * math.sqrt(DELTA * (1 - DELTA) / args.trials)
    out = [
        "# Per-slice risk and strict mode (benchmarks/slice_risk.py)",
        "",
        f"{args.trials} trials per row, delta {DELTA}, violation limit delta + 3 SE = "
        f"{DELTA + slack:.3f}. Calibration resamples of {args.n_cal} queries (strict: 600).",
    ]
    for pool_name, files in POOLS.items():
        started = time.perf_counter()
        scores, labels, groups = load_pool(args.data, files)
        counts = {str(g): int(np.sum(groups == g)) for g in sorted(set(groups))}
        out += ["", f"## {pool_name}", "", f"Pool: {counts}, {labels.shape[1]} models.", "",
                "Per group: mean served pool risk (violation rate).", "",
                "| mode | alpha | certificate | certified | groups |", "|---|---|---|---|---|"]
        rng = np.random.default_rng(0)
        for mode in ("flag", False):
            for alpha in (0.1, 0.2):
                out += group_table(scores, labels, groups, mode, alpha, args.trials,
                                   args.n_cal, rng)
        out += ["", "Strict mode on the whole pool (marginal):", "",
                "| alpha | strict | certified | violation | models per query | refused |",
                "|---|---|---|---|---|---|"]
        for alpha in (0.1, 0.2):
            for after in (False, True):
                out.append(strict_row(scores, labels, alpha, args.trials, 600, rng, after))
        out.append(f"\n({time.perf_counter() - started:.0f} s)")
        print("\n".join(out), flush=True)
    if args.output is not None:
        args.output.write_text("\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
