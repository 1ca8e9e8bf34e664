"""The base-router interface: scikit-learn conventions, labels, registry, saved state."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from racer.routers import (
    ROUTER_NAMES,
    KNNRouter,
    LogisticRouter,
    PriorRouter,
    TfidfEmbedder,
    make_router,
    router_from_state,
)
from racer.routers.base import masked_log_loss
from racer.routers.linear import fit_logistic

TOPICS = {
    "algebra": "solve equation variable polynomial root factor integer sum",
    "history": "empire war king century treaty revolution dynasty battle",
    "chemistry": "molecule acid reaction bond electron atom solution element",
}


def topic_corpus(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Queries on three topics; model j answers topic j well (0.9) and others badly (0.2)."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 3, n)
    vocab = [words.split() for words in TOPICS.values()]
    queries = [
        "question: " + " ".join(rng.choice(vocab[t], 5)) + f" item {rng.integers(1000)}"
        for t in topic
    ]
    good = np.where(np.arange(3)[None, :] == topic[:, None], 0.9, 0.2)
    labels = (rng.uniform(size=(n, 3)) < good).astype(float)
    return queries, labels, topic


@pytest.fixture(scope="module")
def corpus():
    train_queries, train_labels, _ = topic_corpus(300, 0)
    test_queries, test_labels, _ = topic_corpus(200, 1)
    embedder = TfidfEmbedder(n_components=8, progress=False).fit(train_queries)
    return train_queries, train_labels, test_queries, test_labels, embedder


FAST = {
    "knn": {"k": 20},
    "logistic": {"C": 1.0},
    "mlp": {"alpha": 1e-3},
    "mf": {"alpha": 1e-3},
    "ensemble": {"members": ("knn", "logistic")},
}
LEARNED = list(FAST)


def build(name: str, embedder):
    """A router with fixed hyper-parameters (no tuning) sharing the fitted embedder."""
    if name == "prior":
        return make_router(name)
    return make_router(name, embedder=embedder, **FAST[name])


def test_registry_lists_every_router():
    assert ROUTER_NAMES == (
        "prior", "knn", "logistic", "mlp", "mf", "cluster", "ensemble", "external"
    )
    assert isinstance(make_router("knn", k=5), KNNRouter)
    with pytest.raises(ValueError, match="Unknown router 'gpt'; choose one of"):
        make_router("gpt")


@pytest.mark.parametrize("name", ["prior", *LEARNED])
def test_predict_before_fit_raises_not_fitted(name):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        make_router(name).predict_proba(["a query"])


@pytest.mark.parametrize("name", LEARNED)
def test_router_learns_which_model_fits_the_topic(corpus, name):
    train_queries, train_labels, test_queries, test_labels, embedder = corpus
    router = build(name, embedder)
    params = router.get_params()
    router.fit(train_queries, train_labels, model_names=["a", "b", "c"])
    assert router.get_params() == params  # hyper-parameters stay as given
    assert router.model_names_ == ["a", "b", "c"] and router.n_models_ == 3
    scores = router.predict_proba(test_queries)
    assert scores.shape == (200, 3) and 0 <= scores.min() and scores.max() <= 1
    for j in range(3):
        assert roc_auc_score(test_labels[:, j], scores[:, j]) > 0.8


@pytest.mark.parametrize("name", ["prior", *LEARNED])
def test_saved_state_rebuilds_identical_scores(corpus, name):
    train_queries, train_labels, test_queries, _, embedder = corpus
    router = build(name, embedder).fit(train_queries, train_labels)
    rebuilt = router_from_state(router.get_state())
    assert type(rebuilt) is type(router)
    assert rebuilt.model_names_ == ["model_0", "model_1", "model_2"]
    np.testing.assert_array_equal(
        rebuilt.predict_proba(test_queries), router.predict_proba(test_queries)
    )


def test_router_fits_its_own_embedder_from_a_name(corpus):
    train_queries, train_labels, test_queries, _, _ = corpus
    router = LogisticRouter(C=1.0, embedder="tfidf")
    router.fit(train_queries * 2, np.vstack([train_labels] * 2))
    assert router.embedder == "tfidf" and router.embedder_.is_fitted
    assert router.predict_proba(test_queries[:1]).shape == (1, 3)


def test_unknown_labels_are_ignored():
    labels = np.array([[1, np.nan], [0, 1], [1, np.nan], [np.nan, 0]])
    router = PriorRouter().fit(["a", "b", "c", "d"], labels)
    np.testing.assert_allclose(router.accuracy_, [(2 + 0.5) / 4, (1 + 0.5) / 3])


def test_logistic_with_unknown_cells_equals_fit_on_known_rows(corpus):
    train_queries, train_labels, _, _, embedder = corpus
    features = embedder.transform(train_queries)
    column = train_labels[:, :1].copy()
    column[::3] = np.nan
    coef, intercept = fit_logistic(features, column, C=1.0)
    known = ~np.isnan(column[:, 0])
    coef_known, intercept_known = fit_logistic(features[known], column[known], C=1.0)
    np.testing.assert_allclose(coef, coef_known, atol=1e-4)
    np.testing.assert_allclose(intercept, intercept_known, atol=1e-4)


def test_a_model_that_is_always_right_gets_a_constant_high_score(corpus):
    train_queries, train_labels, test_queries, _, embedder = corpus
    labels = train_labels.copy()
    labels[:, 2] = 1.0
    scores = LogisticRouter(C=1.0, embedder=embedder).fit(train_queries, labels).predict_proba(
        test_queries
    )
    assert scores[:, 2].min() > 0.95


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.full((3, 2), 0.5), "labels must be 0 \\(wrong\\), 1 \\(correct\\) or NaN"),
        (np.ones((2, 2)), "labels have 2 rows but there are 3 queries"),
        (np.full((3, 2), np.nan), "all NaN"),
        (np.ones(3), "Expected a 2D array of labels"),
    ],
)
def test_bad_labels_are_refused_with_a_hint(labels, message):
    with pytest.raises(ValueError, match=message):
        PriorRouter().fit(["a", "b", "c"], labels)


def test_a_single_string_is_not_taken_for_a_list_of_queries(corpus):
    train_queries, train_labels, *_ = corpus
    router = PriorRouter().fit(train_queries, train_labels)
    with pytest.raises(TypeError, match="Wrap it in a list"):
        router.predict_proba("one query")


def test_model_names_must_match_the_label_columns():
    with pytest.raises(ValueError, match="model_names must be 2 unique names"):
        PriorRouter().fit(["a", "b"], np.ones((2, 2)), model_names=["x", "x"])


def test_knn_picks_k_from_its_grid_by_cross_validation(corpus):
    train_queries, train_labels, _, _, embedder = corpus
    router = KNNRouter(ks=(1, 30), shrink=0.0, embedder=embedder, cv=3)
    router.fit(train_queries, train_labels)
    assert router.k_ == 30  # one neighbour is a noisy estimate of a 0.9 / 0.2 rate
    assert router.cv_losses_.shape == (2,)


def test_knn_shrinks_a_small_neighbourhood_towards_a_wider_one(corpus):
    train_queries, train_labels, test_queries, test_labels, embedder = corpus
    plain = KNNRouter(k=3, shrink=0.0, embedder=embedder).fit(train_queries, train_labels)
    shrunk = KNNRouter(k=3, shrink=20.0, wide_k=60, embedder=embedder)
    shrunk.fit(train_queries, train_labels)
    losses = [
        masked_log_loss(router.predict_proba(test_queries), test_labels)
        for router in (plain, shrunk)
    ]
    assert losses[1] < losses[0]  # three neighbours alone over-fit; 60 pin the topic's rate
    tuned = KNNRouter(ks=(3,), shrinks=(0.0, 20.0), wide_k=60, embedder=embedder, cv=3)
    assert tuned.fit(train_queries, train_labels).shrink_ == 20.0
    assert tuned.cv_losses_.shape == (2,)


def test_ensemble_refuses_unknown_members(corpus):
    train_queries, train_labels, *_, embedder = corpus
    with pytest.raises(ValueError, match="members must be names among"):
        make_router("ensemble", members=("knn", "gpt"), embedder=embedder).fit(
            train_queries, train_labels
        )
