"""What free-text agreement certifies on RouterBench MBPP: character n-grams vs MiniLM.

The split and settings of ``benchmarks/answer_level.py``: the MBPP train file is split
once (seed 0) into a training part (60 %: policy grid, bootstrap-union training front,
fixed-sequence order) and a rest; the rest and the test file form the pool. Each of the
``--trials`` validity trials calibrates Learn-then-Test (regret against
gpt-4-1106-preview, delta 0.1, binomial p-values) on an i.i.d. resample of 173 pool
queries and measures the certified policy on the whole pool
(:func:`racer.evaluation.certified_trials.certified_records`). The families hold the
router's cascades and parallel sets (knn, cross-fitted on the training part), as the
"+ free-text agreement" rows of ``answer_level.py``.

Per agreement measure, each at thresholds fixed before any run (``MEASURES``): no
agreement (unextractable answers are not compared), character 3-5-grams (answer kind
``similarity``) and MiniLM sentence embeddings (``similarity-dense``). Printed per alpha:
the certified policy's cost share of gpt-4, its accuracy and gpt-4's, the violation rate,
the share of trials that certified nothing cheaper than gpt-4, and the hindsight share
(cheapest policy of the family with pool regret <= alpha; not a result). Then, on the
training part only, each measure's precision and recall against "both answers right"
over every pair of models that both answered, and the default dense threshold chosen
from them: the least threshold of a 0.01 grid whose training precision reaches that of
character n-grams at their default 0.7.

Usage::

    python benchmarks/free_text_agreement.py [--data ../shared/data] [--trials 200]
        [--router knn|none] [--seed 0] [--output FILE.md]
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
from racer.evaluation.certified_trials import CertifiedSettings, certified_records
from racer.evaluation.scoring import cross_fitted_scores
from racer.similarity import (
    AGREEMENT_THRESHOLD,
    DENSE_AGREEMENT_THRESHOLD,
    SIMILARITY,
    SIMILARITY_DENSE,
    agreement_function,
)

REFERENCE = "gpt-4-1106-preview"
ALPHAS = (0.02, 0.03, 0.05)
#: (label, answer kind): the fixed thresholds were set before any run, the dense default
#: from the training part's precision (printed below); None compares no unextractable answers.
MEASURES = (
    ("none", None),
    ("char 0.6", f"{SIMILARITY}:0.6"),
    ("char 0.7 (default)", SIMILARITY),
    ("char 0.8", f"{SIMILARITY}:0.8"),
    (f"dense {DENSE_AGREEMENT_THRESHOLD:g} (default)", SIMILARITY_DENSE),
    ("dense 0.8", f"{SIMILARITY_DENSE}:0.8"),
    ("dense 0.9", f"{SIMILARITY_DENSE}:0.9"),
    ("dense 0.95", f"{SIMILARITY_DENSE}:0.95"),
)
DENSE_GRID = np.round(np.arange(0.50, 0.995, 0.01), 2)


def split(data: Path, train_share: float = 0.6, seed: int = 0):
    """Training part and pool of MBPP, as ``answer_level.py`` splits them (seed 0)."""
    folder = data / "routerbench"
    full_train = load_routerbench(folder / "mbpp_train.csv")
    test = load_routerbench(folder / "mbpp_test.csv")
    rows = np.random.default_rng(seed).permutation(full_train.n_queries)
    cut = int(train_share * full_train.n_queries)
    pool = concat_datasets([full_train.subset(rows[cut:]), test], name="mbpp pool")
    return full_train.subset(rows[:cut]), pool


def both_right_pairs(train) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query, model j and model k (j < k) of every pair that both answered, and both right."""
    answered = np.vectorize(lambda t: isinstance(t, str) and bool(t.strip()), otypes=[bool])(
        train.responses
    ) & ~np.isnan(train.labels)
    j, k = np.triu_indices(train.n_models, 1)
    both = answered[:, j] & answered[:, k]
    query, pair = np.nonzero(both)
    right = (train.labels[query, j[pair]] == 1) & (train.labels[query, k[pair]] == 1)
    return np.stack([query, j[pair], k[pair]]), right, both


def precision_recall(agree: np.ndarray, pairs: np.ndarray, right: np.ndarray) -> dict:
    """Precision and recall of agreement against "both answers right", and the agreement rate."""
    said = agree[pairs[0], pairs[1], pairs[2]]
    hits = int((said & right).sum())
    return {
        "precision": hits / max(int(said.sum()), 1),
        "recall": hits / max(int(right.sum()), 1),
        "agree_rate": float(said.mean()),
    }


def _row(label: str, record: dict) -> str:
    hind = record["hindsight_best"] or {"cost_share": float("nan")}
    return (
        f"| {label} | {record['alpha']:g} | {record['cost_share']:.3f} "
        f"| {record['accuracy']:.3f} | {record['reference_accuracy']:.3f} "
        f"| {record['violation_rate']:.3f} | {record['refused']:.2f} "
        f"| {hind['cost_share']:.3f} | {record['n_policies']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--n-cal", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (0: answer_level's)")
    parser.add_argument("--router", default="knn", help="router of the families (none: skip)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    train, pool = split(args.data, seed=args.seed)
    n_cal = min(args.n_cal, int(0.7 * pool.n_queries))
    scores = (None, None)
    if args.router != "none":
        scores = cross_fitted_scores(args.router, train, pool)
    lines = [
        f"RouterBench MBPP, certified regret against {REFERENCE}: delta 0.1, {args.trials} "
        f"validity trials, n_cal {n_cal}, router {args.router}; split seed {args.seed}, "
        f"training part {train.n_queries} queries, pool {pool.n_queries}.",
        "",
        "| agreement | alpha | cost share | accuracy | gpt-4 accuracy | violation rate "
        "| refused | hindsight share | policies |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, kind in MEASURES:
        clock = time.perf_counter()
        parts = (train, pool)
        if kind is None:
            parts = (replace(train, responses=None), replace(pool, responses=None))
        settings = CertifiedSettings(
            "regret", REFERENCE, ALPHAS, n_trials=args.trials, n_cal=n_cal,
            agreement=kind or "char",
        )
        records = certified_records(*parts, settings, train_scores=scores[0], pool_scores=scores[1])
        for record in records:
            lines.append(_row(label, record))
            print(lines[-1], flush=True)
        print(f"    {label}: {time.perf_counter() - clock:.0f} s; certified (most trials, "
              f"alpha {ALPHAS[-1]}): {records[-1]['policy']}", flush=True)

    pairs, right, _ = both_right_pairs(train)
    lines += [
        "",
        f"Agreement against \"both answers right\" on the training part ({pairs.shape[1]} "
        f"pairs of models that both answered, {right.mean():.3f} of them both right):",
        "",
        "| agreement | precision | recall | agree rate |",
        "|---|---|---|---|",
    ]
    measured = {}
    for label, kind in MEASURES[1:]:
        measured[label] = precision_recall(agreement_function(kind)(train.responses), pairs, right)
        m = measured[label]
        lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} "
                     f"| {m['agree_rate']:.3f} |")
        print(lines[-1], flush=True)
    target = measured["char 0.7 (default)"]["precision"]
    grid = {
        float(t): precision_recall(
            agreement_function(f"{SIMILARITY_DENSE}:{t:g}")(train.responses), pairs, right
        )
        for t in DENSE_GRID
    }
    reaching = [t for t, m in grid.items() if m["precision"] >= target]
    chosen = min(reaching) if reaching else None
    curve = ", ".join(
        f"{t:.2f}: {grid[t]['precision']:.3f} / {grid[t]['recall']:.3f}"
        for t in DENSE_GRID[::5]
    )
    lines += [
        "",
        f"Dense precision / recall on the training part by threshold: {curve}.",
        "",
        f"Default dense threshold (least of {DENSE_GRID[0]:.2f}..{DENSE_GRID[-1]:.2f} whose "
        f"training precision reaches char 0.7's {target:.3f}): "
        + (
            "none reaches it."
            if chosen is None
            else f"{chosen:.2f} (precision {grid[chosen]['precision']:.3f}, recall "
            f"{grid[chosen]['recall']:.3f}; char {AGREEMENT_THRESHOLD:g}: recall "
            f"{measured['char 0.7 (default)']['recall']:.3f})."
        )
        + f" racer.similarity.DENSE_AGREEMENT_THRESHOLD is {DENSE_AGREEMENT_THRESHOLD:g}.",
        "",
        f"Run time {time.perf_counter() - start:.0f} s (MiniLM vectors read from the "
        "on-disk cache when computed before).",
    ]
    for line in lines[-5:]:
        print(line)
    if args.output is not None:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
