"""Base routers on RouterDC's five in-distribution tasks: AUROC, ECE and top-1 accuracy.

Trains every router on the pooled train files (hyper-parameters tuned by
cross-validation on those only), scores the test files, and prints, per task and
pooled: the mean per-model AUROC of correctness, the expected calibration error of the
scores (10 equal-width bins over all query-model cells), and the top-1 routing accuracy
(mean quality of the highest-scored model: pass fraction on GSM8K and HumanEval, as
RouterDC reports). Reference rows: the best single model on the test file (hindsight),
the best model of each task's train file, the any-model-correct oracle, and the
RouterDC paper's routed accuracy. A last table gives the mean per-model AUROC on
RouterBench's ARC-Challenge (11 models, prompts that share a 5-shot preamble) with
and without the embedder's removal of that shared preamble.

Usage::

    python benchmarks/routers_routerdc.py [--data ../shared/data] [--output FILE.md]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from racer.data.load import concat_datasets, load_dataset
from racer.routers import TfidfEmbedder, make_router

TASKS = {
    "MMLU": ("mmlu_train", "mmlu_test"),
    "GSM8K": ("gsm8k-train", "gsm8k-test"),
    "CMMLU": ("cmmlu_train", "cmmlu_test"),
    "ARC-C": ("arc_challenge_train", "arc_challenge_test"),
    "HumanEval": ("humaneval_train", "humaneval_test"),
}
PAPER = {"MMLU": 61.07, "GSM8K": 70.32, "CMMLU": 51.77, "ARC-C": 58.52, "HumanEval": 51.02}
ROUTERS = ("prior", "knn", "logistic", "mlp", "mf", "cluster", "ensemble")
COLUMNS = [*TASKS, "pooled"]
TUNED = ("k_", "shrink_", "C_", "alpha_", "n_clusters_", "prior_strength_", "temperature_")


def mean_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over models of the AUROC of the scores for that model's correctness.

    Unknown (NaN) labels are left out; a model whose known labels are all equal is skipped.
    """
    per_model = []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        if known.any() and 0 < labels[known, j].mean() < 1:
            per_model.append(roc_auc_score(labels[known, j], scores[known, j]))
    return float(np.mean(per_model))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width score bins, weighted by bin size."""
    y, p = labels.ravel(), scores.ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(error)


def top1_accuracy(quality: np.ndarray, scores: np.ndarray) -> float:
    """Mean quality of the highest-scored model (ties go to the first model)."""
    return float(quality[np.arange(len(quality)), scores.argmax(axis=1)].mean())


def quality_of(data) -> np.ndarray:
    return data.labels if data.quality is None else data.quality


def load(data_dir: Path, split: int):
    folder = data_dir / "routerdc"
    parts = [load_dataset(folder / f"{files[split]}.json") for files in TASKS.values()]
    return parts, concat_datasets(parts, sources=list(TASKS), name=f"routerdc-{split}")


def routerbench_auroc(data_dir: Path) -> dict[str, dict[str, float]]:
    """Mean per-model AUROC on RouterBench ARC-Challenge, preamble stripped or kept."""
    folder = data_dir / "routerbench"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate ids and missing cells, reported by loader
        train, test = (load_dataset(folder / f"arc_challenge_{s}.csv") for s in ("train", "test"))
    rows: dict[str, dict[str, float]] = {}
    for strip in (False, True):
        embedder = TfidfEmbedder(progress=False, strip_shared_prefix=strip)
        embedder.fit(list(train.queries))
        for name in ("knn", "logistic", "ensemble"):
            router = make_router(name, embedder=embedder).fit(list(train.queries), train.labels)
            scores = router.predict_proba(list(test.queries))
            column = "preamble stripped" if strip else "full prompt"
            rows.setdefault(name, {})[column] = mean_auroc(test.labels, scores)
    return rows


def table(rows: dict[str, dict[str, float]], fmt: str, columns: list[str] = COLUMNS) -> str:
    lines = ["| router | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        cells = [fmt.format(values[c]) if c in values else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    train_parts, train = load(args.data, 0)
    test_parts, test = load(args.data, 1)
    started = time.perf_counter()
    embedder = TfidfEmbedder(progress=False).fit(list(train.queries))
    embed_seconds = time.perf_counter() - started
    auroc, ece, top1, notes = {}, {}, {}, []
    for name in ROUTERS:
        started = time.perf_counter()
        params = {} if name == "prior" else {"embedder": embedder}
        router = make_router(name, **params).fit(list(train.queries), train.labels)
        scores = router.predict_proba(list(test.queries))
        seconds = time.perf_counter() - started
        tuned = {k: getattr(router, k) for k in TUNED if hasattr(router, k)}
        notes.append(f"{name}: fit + predict {seconds:.1f} s, tuned {tuned}")
        auroc[name], ece[name], top1[name] = {}, {}, {}
        for task, part in zip([*TASKS, "pooled"], [*test_parts, test], strict=True):
            rows = test.sources == task if task != "pooled" else np.ones(test.n_queries, bool)
            auroc[name][task] = mean_auroc(part.labels, scores[rows])
            ece[name][task] = expected_calibration_error(part.labels, scores[rows])
            top1[name][task] = 100 * top1_accuracy(quality_of(part), scores[rows])
    references = {"best single model (test, hindsight)": {}, "best train model per task": {},
                  "any-model-correct oracle": {}, "RouterDC paper": dict(PAPER)}
    for task, part, train_part in zip(
        [*TASKS, "pooled"], [*test_parts, test], [*train_parts, train], strict=True
    ):
        quality = quality_of(part)
        references["best single model (test, hindsight)"][task] = 100 * quality.mean(0).max()
        references["any-model-correct oracle"][task] = 100 * quality.max(axis=1).mean()
        if task != "pooled":
            best = quality_of(train_part).mean(0).argmax()
            references["best train model per task"][task] = 100 * quality[:, best].mean()
    report = "\n\n".join([
        f"# Base routers on RouterDC (train {train.n_queries} / test {test.n_queries} queries)",
        f"TF-IDF embedding fit: {embed_seconds:.1f} s. " + "; ".join(notes) + ".",
        "## Mean per-model AUROC (prior = 0.5 by construction)", table(auroc, "{:.3f}"),
        "## Expected calibration error (10 bins, all query-model cells)", table(ece, "{:.3f}"),
        "## Top-1 routing accuracy, % (pass fraction on GSM8K / HumanEval)",
        table({**top1, **references}, "{:.2f}"),
        "## RouterBench ARC-Challenge: mean per-model AUROC (train 1032 / test 445 queries)",
        table(routerbench_auroc(args.data), "{:.3f}", ["full prompt", "preamble stripped"]),
    ])
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
