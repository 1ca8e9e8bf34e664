"""Certified answer-level savings on RouterBench: regret against gpt-4-1106-preview.

Per RouterBench task: the train file is split once (seeded) into a training part (the
policy grid, the bootstrap-union training front and the fixed-sequence order) and a rest;
the rest and the test file form the pool. Each validity trial calibrates Learn-then-Test
on an i.i.d. resample of ``--n-cal`` pool queries and measures the certified policy on the
whole pool. Printed per task, signal set and alpha (0.02 / 0.03 / 0.05): the certified
policy's cost share of gpt-4 (mean over trials), its accuracy against gpt-4's, the
violation rate, how often nothing cheaper than gpt-4 was certified, the uncorrected
choice of the same family (cheapest policy with calibration regret <= alpha, no bound),
the hindsight-best policy of the family (cheapest with pool regret <= alpha; not a
result) and the per-query oracle (the cheapest model without regret on each query: the
cheapest right model where gpt-4 is right, the cheapest model where it is wrong).

The signal sets, each adding to the one before: the margin rule alone (training-accuracy
weighted agreement of extracted answers), then ``+ router start`` (what
:func:`racer.policies.policy_grid` holds with the router: router-weighted and router-led
cascades and RACER's parallel sets, the router's training scores cross-fitted on the
training part by :func:`racer.evaluation.scoring.cross_fitted_scores`; ``--router`` names
it, ``none`` leaves it out), then ``+ learned stop`` (cascades whose stop rule is a
classifier trained on the training part, :mod:`racer.policies.learned`, reading the
answers so far, their agreement, the router's scores and each answer's own signals; its
training outcomes cross-fitted), then, on tasks without extractable answers (MBPP: code),
``+ free-text agreement`` (tiers agree by the similarity of their character n-grams,
:mod:`racer.similarity`; the rows before it compare no unextractable answers; MiniLM
agreement is compared in ``free_text_agreement.py``). With
``--fwer all`` the table repeats for fixed-sequence, Holm and Bonferroni testing. Per
task, one line says which aggregator over all models wins on the pool (best / vote /
log-odds, training-accuracy weights).

Usage::

    python benchmarks/answer_level.py [--data ../shared/data] [--trials 200]
        [--fwer fixed_sequence|bonferroni|holm|all] [--router knn|none] [--output FILE.md]
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from racer.data.load import concat_datasets
from racer.data.routerbench import load_routerbench
from racer.evaluation.certified import answer_kind, policy_data
from racer.evaluation.certified_trials import CertifiedSettings, certified_records
from racer.evaluation.scoring import cross_fitted_scores
from racer.policies.certify import FWER_METHODS
from racer.similarity import SIMILARITY

TASKS = {"ARC-Challenge": "arc_challenge", "MBPP": "mbpp"}
REFERENCE = "gpt-4-1106-preview"
ALPHAS = (0.02, 0.03, 0.05)


def _row(task: str, signals: str, record: dict, oracle: float) -> str:
    unc, hind = record["uncorrected"], record["hindsight_best"] or {"cost_share": float("nan")}
    return (
        f"| {task} | {signals} | {record['method']} | {record['alpha']:g} "
        f"| {record['cost_share']:.3f} | {record['accuracy']:.3f} "
        f"| {record['reference_accuracy']:.3f} | {record['violation_rate']:.3f} "
        f"| {record['refused']:.2f} | {unc['cost_share']:.3f} ({unc['violation_rate']:.2f}) "
        f"| {hind['cost_share']:.3f} | {oracle:.3f} | {record['n_policies']} "
        f"| {record['n_cal']} / {record['n_pool']} |"
    )


def with_synthetic_logprobs(dataset, auroc: float, seed: int):
    """The dataset with SYNTHETIC token logprobs whose mean separates right from wrong answers.

    Each answer gets three tokens at one mean log-probability drawn from
    N(-0.3, 0.3) when the answer is right and N(-0.3 - gap, 0.3) when it is wrong, the gap
    chosen so that the mean's AUROC for correctness is ``auroc`` (capped at 0). A what-if
    for the learned stop rule's use of logprobs; not a measurement of any model.
    """
    from scipy.stats import norm

    gap = 0.3 * np.sqrt(2.0) * norm.ppf(auroc)
    rng = np.random.default_rng(seed)
    logprobs = np.empty(dataset.labels.shape, dtype=object)
    for (i, j), label in np.ndenumerate(dataset.labels):
        mean = rng.normal(-0.3 - (0.0 if label == 1.0 else gap), 0.3)
        logprobs[i, j] = np.full(3, min(mean, 0.0))
    return replace(dataset, logprobs=logprobs)


def oracle_share(pool, reference: str) -> float:
    """Per-query oracle's cost share of the reference: the cheapest model without regret."""
    known = ~np.isnan(pool.labels).any(axis=1)
    labels, costs = pool.labels[known], policy_data(pool.subset(known), None, None).costs
    ref = pool.model_names.index(reference)
    no_regret = (labels == 1.0) | (labels[:, [ref]] != 1.0)
    cheapest = np.where(no_regret, costs, np.inf).min(axis=1)
    return float(cheapest.mean() / costs[:, ref].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--train-share", type=float, default=0.6)
    parser.add_argument("--n-cal", type=int, default=600)
    parser.add_argument("--fwer", choices=[*FWER_METHODS, "all"], default="fixed_sequence")
    parser.add_argument("--router", default="knn", help="router of '+ router' (none: skip)")
    parser.add_argument(
        "--synthetic-logprobs",
        type=float,
        default=None,
        metavar="AUROC",
        help="add a last row with SYNTHETIC token logprobs of this AUROC (a what-if, not data)",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    router = None if args.router == "none" else args.router
    # (label, router, learned stop, free-text agreement), each adding to the one before.
    signal_sets = [("margin rule", None, False, False)]
    if router is not None:
        signal_sets.append((f"+ router start ({router})", router, False, False))
    signal_sets.append(("+ learned stop", router, True, False))
    lines = [
        f"Certified regret against {REFERENCE}: delta 0.1, {args.trials} validity trials, "
        "binomial p-values, policies ordered along the training front with its ties "
        "(safest first), never dearer than gpt-4 on training data.",
        "",
        "| task | signals | FWER | alpha | cost share | accuracy | gpt-4 accuracy "
        "| violation rate | refused | uncorrected share (violation) | hindsight share "
        "| oracle share | policies | n_cal / pool |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    methods = FWER_METHODS if args.fwer == "all" else (args.fwer,)
    winners = []
    start = time.perf_counter()
    for task, stem in TASKS.items():
        folder = args.data / "routerbench"
        full_train = load_routerbench(folder / f"{stem}_train.csv")
        test = load_routerbench(folder / f"{stem}_test.csv")
        rows = np.random.default_rng(0).permutation(full_train.n_queries)
        cut = int(args.train_share * full_train.n_queries)
        train = full_train.subset(rows[:cut])
        pool = concat_datasets([full_train.subset(rows[cut:]), test], name=f"{stem} pool")
        n_cal = min(args.n_cal, int(0.7 * pool.n_queries))
        oracle = oracle_share(pool, REFERENCE)
        free_text = answer_kind(train, "char") == SIMILARITY
        rows_of_task = [*signal_sets]
        if free_text:
            rows_of_task.append(("+ free-text agreement", router, True, True))
        if args.synthetic_logprobs is not None:
            label = f"+ SYNTHETIC logprobs (AUROC {args.synthetic_logprobs:g})"
            rows_of_task.append((label, router, True, free_text))
        scored = None if router is None else cross_fitted_scores(router, train, pool)
        for signals, row_router, learned, similarity in rows_of_task:
            scores = (None, None) if row_router is None else scored
            if signals.startswith("+ SYNTHETIC"):
                train = with_synthetic_logprobs(train, args.synthetic_logprobs, seed=1)
                pool = with_synthetic_logprobs(pool, args.synthetic_logprobs, seed=2)
            for method in methods:
                settings = CertifiedSettings(
                    "regret",
                    REFERENCE,
                    ALPHAS,
                    n_trials=args.trials,
                    n_cal=n_cal,
                    method=method,
                    agreement="char",
                    learned_stop=learned,
                    # Without free-text agreement, unextractable answers are not compared.
                    free_text=similarity,
                )
                records = certified_records(
                    train, pool, settings, train_scores=scores[0], pool_scores=scores[1]
                )
                for record in records:
                    lines.append(_row(task, signals, record, oracle))
                    print(lines[-1], flush=True)
                    print(f"    certified (most trials): {record['policy']}", flush=True)
        votes = record["aggregators"]
        winners.append(
            f"- {task}: {votes['winner']} wins over {votes['over']} (pool accuracy best "
            f"{votes['best']:.3f}, vote {votes['vote']:.3f}, logodds {votes['logodds']:.3f})."
        )
    lines += ["", "Aggregator per task:", "", *winners]
    lines += ["", f"Run time {time.perf_counter() - start:.0f} s."]
    print(lines[-1])
    if args.output is not None:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
