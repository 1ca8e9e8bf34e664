"""Flag, strict and off abstention side by side: what each certifies and what it serves.

For each task and alpha, every mode is calibrated on i.i.d. resamples of the pool (the
pool is the population, racer/method.md section 9) and its *served* decision is measured on
the whole pool: the share of resamples certified, the violation rate (served pool risk
above alpha; it must stay within delta + 3 SE), the mean served risk, the mean number of
models called, the share of queries whose answer carries the abstain flag (flag mode)
and the share on which no model is called (strict abstentions, or refusals).

The base router is a TF-IDF + logistic regression per model (the one the tests use),
trained on the task's train file (RouterBench MBPP: train and test pooled, 5-fold
out-of-fold scores, as the core issue's acceptance test asks).

Usage::

    python benchmarks/abstention_modes.py [--data ../shared/data] [--trials 200]
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from racer import RACER, InfeasibleCalibrationError
from racer.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_data import logistic_scores, out_of_fold_scores  # noqa: E402

MODES = ("flag", "strict", False)
ALPHAS = (0.05, 0.1, 0.2, 0.3)


def routerbench_pooled(data: Path, task: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [load_dataset(data / "routerbench" / f"{task}_{s}.csv", missing="drop_queries")
             for s in ("train", "test")]
    labels = np.vstack([p.labels for p in parts])
    return out_of_fold_scores(np.concatenate([p.queries for p in parts]), labels), labels


def routerdc(data: Path, train: str, test: str) -> tuple[np.ndarray, np.ndarray]:
    train_set = load_dataset(data / "routerdc" / f"{train}.json")
    test_set = load_dataset(data / "routerdc" / f"{test}.json")
    return logistic_scores(train_set, test_set), test_set.labels


def run(scores: np.ndarray, labels: np.ndarray, n_cal: int, trials: int, delta: float) -> None:
    no_good = float(np.mean(labels.max(axis=1) == 0))
    print(f"pool {len(labels)} queries, {labels.shape[1]} models, no model answers "
          f"{no_good:.1%}; calibration resamples of {n_cal}, {trials} trials")
    print("| alpha | mode | certified | violation | served risk | models called | "
          "flag rate | no model called |")
    print("|---|---|---|---|---|---|---|---|")
    slack = delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    for alpha in ALPHAS:
        for mode in MODES:
            rng = np.random.default_rng(0)
            rows = []
            for _ in range(trials):
                sample = rng.integers(0, len(labels), size=n_cal)
                router = RACER(alpha=alpha, delta=delta, abstention=mode)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        router.fit(scores[sample], labels[sample])
                except InfeasibleCalibrationError:
                    continue
                decision = router.predict(scores, include_abstain=True)
                invoked = decision[:, 1:]
                rows.append((
                    router.risk(scores, labels),
                    invoked.sum(axis=1).mean(),
                    np.mean(decision[:, 0] & invoked.any(axis=1)) if mode == "flag" else 0.0,
                    np.mean(~invoked.any(axis=1)),
                ))
            name = mode or "off"
            if not rows:
                print(f"| {alpha} | {name} | 0 % | - | - | - | - | - |")
                continue
            risk, size, flag, silent = np.array(rows).T
            violation = float(np.mean(risk > alpha)) * len(rows) / trials
            mark = "" if violation <= slack else " (!)"
            print(f"| {alpha} | {name} | {len(rows) / trials:.0%} | {violation:.3f}{mark} | "
                  f"{risk.mean():.3f} | {size.mean():.2f} | {flag.mean():.1%} | "
                  f"{silent.mean():.1%} |")
    print(f"(!) marks a violation rate above delta + 3 SE = {slack:.3f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--delta", type=float, default=0.1)
    args = parser.parse_args()
    tasks = {
        "RouterBench MBPP (pooled, out-of-fold)": (lambda: routerbench_pooled(args.data, "mbpp"),
                                                    200),
        "RouterBench ARC-Challenge (pooled, out-of-fold)": (
            lambda: routerbench_pooled(args.data, "arc_challenge"), 400),
        "RouterDC MMLU (train -> test pool)": (
            lambda: routerdc(args.data, "mmlu_train", "mmlu_test"), 1000),
    }
    for title, (load, n_cal) in tasks.items():
        print(f"## {title}")
        scores, labels = load()
        run(scores, labels, n_cal, args.trials, args.delta)


if __name__ == "__main__":
    main()
