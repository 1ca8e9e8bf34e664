"""Query encoders compared: TF-IDF vs MiniLM vs hybrid, per-task AUROC with bootstrap CIs.

For each encoder (``tfidf``, ``minilm``, ``hybrid``) and router (``knn``, ``logistic``,
hyper-parameters tuned by cross-validation on the training split), the mean over models
of the per-model AUROC of the router's scores for that model's correctness, on:

- RouterDC's five in-distribution tasks (routers trained on the pooled train files, as
  in ``routers_routerdc.py``), each task and pooled;
- RouterBench ARC-Challenge and MBPP (trained on each task's own train file).

Every figure comes with a 95 % percentile bootstrap interval over test queries (the
same resamples for every encoder, so that the differences to TF-IDF are paired). An
interval of a difference that contains 0 is no evidence either way.

MiniLM embeds tens of texts per second on two busy cores, so RouterDC's files are
subsampled (``--train-per-task``, ``--test-per-task``, seeded); RouterBench is used
whole. MiniLM vectors are cached on disk (``$RACER_CACHE_DIR``), so a rerun is fast.

Usage::

    nice -n 10 python benchmarks/embeddings_auroc.py [--data ../shared/data] \\
        [--output benchmarks/results/embeddings_auroc.md]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from racer.data.load import concat_datasets, load_dataset
from racer.routers import make_embedder, make_router

ROUTERDC = {
    "MMLU": ("mmlu_train", "mmlu_test"),
    "GSM8K": ("gsm8k-train", "gsm8k-test"),
    "CMMLU": ("cmmlu_train", "cmmlu_test"),
    "ARC-C": ("arc_challenge_train", "arc_challenge_test"),
    "HumanEval": ("humaneval_train", "humaneval_test"),
}
ROUTERBENCH = {"RouterBench ARC": "arc_challenge", "RouterBench MBPP": "mbpp"}
EMBEDDERS = ("tfidf", "minilm", "hybrid")
ROUTERS = ("knn", "logistic")


def bootstrap_auroc(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over models of the per-model AUROC, once per row of bootstrap ``counts``.

    The AUROC of a weighted sample is P(score of a positive > score of a negative),
    ties counted one half, each query weighted by how often the resample drew it.

    Parameters
    ----------
    labels : ndarray of shape (n, M)
        1 correct, 0 wrong, NaN unknown (left out for that model).
    scores : ndarray of shape (n, M)
        The router's scores.
    counts : ndarray of shape (B, n)
        How many times each resample draws each query (all ones: the point estimate).

    Returns
    -------
    ndarray of shape (B,)
        The mean AUROC over models whose known labels are not all equal; NaN where a
        resample has no positive or no negative of some model.
    """
    per_model = []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if not 0 < y.mean() < 1:
            continue
        s = scores[known, j]
        order = np.argsort(s, kind="stable")
        y, s, weights = y[order], s[order], counts[:, known][:, order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # one group per tied score
        positives = np.add.reduceat(weights * y, starts, axis=1)
        negatives = np.add.reduceat(weights * (1 - y), starts, axis=1)
        below = np.cumsum(negatives, axis=1) - negatives
        pairs = positives.sum(axis=1) * negatives.sum(axis=1)
        won = (positives * (below + 0.5 * negatives)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_model.append(np.where(pairs > 0, won / pairs, np.nan))
    return np.mean(per_model, axis=0)


def interval(values: np.ndarray) -> tuple[float, float]:
    """The 95 % percentile interval of bootstrap values."""
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def subsample(data, per_task: int, rng: np.random.Generator):
    """At most ``per_task`` queries of each source, drawn without replacement."""
    rows = []
    for source in np.unique(data.sources):
        members = np.flatnonzero(data.sources == source)
        rows.append(np.sort(rng.choice(members, min(per_task, members.size), replace=False)))
    return data.subset(np.concatenate(rows))


def routerdc_split(data_dir: Path, args: argparse.Namespace):
    folder = data_dir / "routerdc"
    rng = np.random.default_rng(args.seed)
    splits = []
    for split, per_task in ((0, args.train_per_task), (1, args.test_per_task)):
        parts = [load_dataset(folder / f"{files[split]}.json") for files in ROUTERDC.values()]
        pooled = concat_datasets(parts, sources=list(ROUTERDC), name=f"routerdc-{split}")
        splits.append(subsample(pooled, per_task, rng))
    return splits


def routerbench_split(data_dir: Path, stem: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate ids and missing cells, reported by loader
        return [
            load_dataset(data_dir / "routerbench" / f"{stem}_{split}.csv")
            for split in ("train", "test")
        ]


def score(train, test, seconds: dict[str, float]) -> dict[tuple[str, str], np.ndarray]:
    """Test scores of every router on every encoder, fitted on ``train``."""
    scores = {}
    for name in EMBEDDERS:
        started = time.perf_counter()
        embedder = make_embedder(name, progress=True).fit(list(train.queries))
        embedder.transform(list(train.queries) + list(test.queries))  # timed (and cached)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        for router in ROUTERS:
            fitted = make_router(router, embedder=embedder).fit(list(train.queries), train.labels)
            scores[name, router] = fitted.predict_proba(list(test.queries))
    return scores


def cell(point: float, values: np.ndarray, signed: bool = False) -> str:
    low, high = interval(values)
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"{fmt.format(point)} [{fmt.format(low)}, {fmt.format(high)}]"


def rows_for(task: str, labels, scores, rng: np.random.Generator, resamples: int) -> dict:
    """One table row per router: each encoder's AUROC and its difference to TF-IDF."""
    n = labels.shape[0]
    counts = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1 / n), size=resamples)])
    rows = {}
    for router in ROUTERS:
        values = {name: bootstrap_auroc(labels, scores[name, router], counts) for name in EMBEDDERS}
        row = {name: cell(v[0], v[1:]) for name, v in values.items()}
        for name in EMBEDDERS[1:]:
            difference = values[name] - values["tfidf"]
            row[f"{name} - tfidf"] = cell(difference[0], difference[1:], signed=True)
        rows[router] = (task, n, row)
    return rows


def table(rows: list[tuple[str, int, dict]]) -> str:
    columns = [*EMBEDDERS, *(f"{name} - tfidf" for name in EMBEDDERS[1:])]
    lines = ["| task | test queries | " + " | ".join(columns) + " |"]
    lines.append("|---" * (len(columns) + 2) + "|")
    for task, n, row in rows:
        lines.append(f"| {task} | {n} | " + " | ".join(row[c] for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--train-per-task", type=int, default=500)
    parser.add_argument("--test-per-task", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed + 1)
    seconds: dict[str, float] = {}
    by_router: dict[str, list] = {router: [] for router in ROUTERS}
    train, test = routerdc_split(args.data, args)
    scores = score(train, test, seconds)
    for task in [*ROUTERDC, "RouterDC pooled"]:
        rows = test.sources == task if task in ROUTERDC else np.ones(test.n_queries, bool)
        task_scores = {key: value[rows] for key, value in scores.items()}
        task_rows = rows_for(task, test.labels[rows], task_scores, rng, args.resamples)
        for router, row in task_rows.items():
            by_router[router].append(row)
    sizes = [f"RouterDC train {train.n_queries} / test {test.n_queries}"]
    for task, stem in ROUTERBENCH.items():
        bench_train, bench_test = routerbench_split(args.data, stem)
        sizes.append(f"{task} train {bench_train.n_queries} / test {bench_test.n_queries}")
        task_scores = score(bench_train, bench_test, seconds)
        task_rows = rows_for(task, bench_test.labels, task_scores, rng, args.resamples)
        for router, row in task_rows.items():
            by_router[router].append(row)
    timing = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    report = "\n\n".join([
        "# Query encoders: mean per-model AUROC, TF-IDF vs MiniLM vs hybrid",
        f"Generated by `benchmarks/embeddings_auroc.py` (seed {args.seed}). Queries: "
        + "; ".join(sizes)
        + f". RouterDC subsampled to at most {args.train_per_task} train and "
        f"{args.test_per_task} test queries per task; RouterBench whole. Encoders: "
        "`tfidf` (128-d TF-IDF + SVD), `minilm` (all-MiniLM-L6-v2 int8 ONNX, 384-d), "
        "`hybrid` (both, tfidf_weight 0.5). Each cell: the mean over models of the "
        "per-model AUROC of the router's score for that model's correctness, with its "
        f"95 % percentile bootstrap interval over test queries ({args.resamples} resamples, "
        "the same for every encoder: differences are paired). An interval containing 0 "
        "is no evidence of a difference.",
        f"Time to fit and embed train + test (all tasks): {timing}; whole run "
        f"{time.perf_counter() - started:.0f} s on a shared 2-core machine "
        "(MiniLM vectors read from the on-disk cache on a rerun).",
        *(f"## {router}\n\n" + table(rows) for router, rows in by_router.items()),
    ])
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
