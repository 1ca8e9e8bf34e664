"""Every router beats the prior router on held-out real routing data (RouterDC)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from racer.data import RoutingDataset
from racer.data.load import concat_datasets, load_dataset
from racer.routers import AbstentionHead, TfidfEmbedder, make_router, no_model_correct

TASKS = {  # train file, test file, rows kept from each (keeps the suite fast)
    "mmlu": ("mmlu_train", "mmlu_test"),
    "gsm8k": ("gsm8k-train", "gsm8k-test"),
    "cmmlu": ("cmmlu_train", "cmmlu_test"),
    "arc_challenge": ("arc_challenge_train", "arc_challenge_test"),
}
ROWS = 500


def _pooled(shared_data, split: int) -> RoutingDataset:
    rng = np.random.default_rng(split)
    parts = []
    for files in TASKS.values():
        part = load_dataset(shared_data / "routerdc" / f"{files[split]}.json")
        parts.append(part.subset(np.sort(rng.permutation(part.n_queries)[:ROWS])))
    return concat_datasets(parts, name=f"routerdc-{split}")


@pytest.fixture(scope="module")
def routerdc(shared_data):
    train, test = _pooled(shared_data, 0), _pooled(shared_data, 1)
    embedder = TfidfEmbedder(progress=False).fit(list(train.queries))
    return train, test, embedder


def mean_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over models of the AUROC of the scores for that model's correctness."""
    per_model = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(labels.shape[1])]
    return float(np.mean(per_model))


def top1_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of queries whose highest-scored model is correct."""
    return float(labels[np.arange(len(labels)), scores.argmax(axis=1)].mean())


ROUTERS = {
    "knn": {"k": 50},
    "logistic": {"C": 0.3},
    "mlp": {"alpha": 1e-3},
    "mf": {"alpha": 3e-3},
    "ensemble": {"members": ("knn", "logistic")},
}


@pytest.mark.parametrize("name", list(ROUTERS))
def test_router_beats_prior_auroc_on_held_out_data(routerdc, name):
    train, test, embedder = routerdc
    names = train.model_names
    prior = make_router("prior").fit(list(train.queries), train.labels, model_names=names)
    router = make_router(name, embedder=embedder, **ROUTERS[name])
    router.fit(list(train.queries), train.labels, model_names=names)
    scores = router.predict_proba(list(test.queries))
    assert scores.shape == test.labels.shape
    assert scores.min() >= 0 and scores.max() <= 1
    prior_auroc = mean_auroc(test.labels, prior.predict_proba(list(test.queries)))
    assert prior_auroc == pytest.approx(0.5)
    assert mean_auroc(test.labels, scores) > prior_auroc + 0.08
    # On top-1 choice simple routers only tie "always the best training model".
    prior_top1 = top1_accuracy(test.labels, prior.predict_proba(list(test.queries)))
    assert top1_accuracy(test.labels, scores) > prior_top1 - 0.01


def test_cross_validation_tunes_on_training_data_only(routerdc):
    train, test, embedder = routerdc
    router = make_router("logistic", embedder=embedder, Cs=(1e-4, 0.3), cv=3)
    router.fit(list(train.queries), train.labels)
    assert router.C_ == 0.3  # a C of 1e-4 flattens every score to the prior
    assert router.cv_losses_.shape == (2,) and router.cv_losses_[1] < router.cv_losses_[0]


def test_abstention_head_ranks_unanswerable_queries(routerdc):
    train, test, embedder = routerdc
    head = AbstentionHead(C=0.3, embedder=embedder).fit(list(train.queries), train.labels)
    target = no_model_correct(test.labels)
    score = head.abstain_score(list(test.queries))
    assert score.shape == (test.n_queries,)
    assert roc_auc_score(target, score) > 0.57
    assert 0.05 < head.base_rate_ < 0.4
