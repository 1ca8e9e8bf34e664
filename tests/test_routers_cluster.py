"""The cluster router: per-region model accuracies over k-means clusters of embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from test_routers_real import _pooled, mean_auroc, top1_accuracy

from racer.artifact import load_artifact, save_artifact
from racer.estimator import RACER
from racer.routers import ROUTER_NAMES, ClusterRouter, TfidfEmbedder, make_router
from racer.routers.cluster import cluster_tables, region_weights


@pytest.fixture(scope="module")
def fitted(shared_data):
    """Pooled RouterDC train -> test (4 tasks, 500 rows each), a tuned cluster router."""
    train, test = _pooled(shared_data, 0), _pooled(shared_data, 1)
    embedder = TfidfEmbedder(progress=False).fit(list(train.queries))
    router = ClusterRouter(embedder=embedder)
    router.fit(list(train.queries), train.labels, model_names=train.model_names)
    return train, test, router


def test_registry_builds_the_cluster_router():
    assert "cluster" in ROUTER_NAMES
    assert isinstance(make_router("cluster", n_clusters=5), ClusterRouter)


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ClusterRouter().predict_proba(["a query"])


def test_cluster_router_beats_prior_on_held_out_data(fitted):
    train, test, router = fitted
    queries = list(test.queries)
    prior = make_router("prior").fit(list(train.queries), train.labels)
    scores, prior_scores = router.predict_proba(queries), prior.predict_proba(queries)
    assert scores.shape == test.labels.shape
    assert scores.min() >= 0 and scores.max() <= 1
    assert mean_auroc(test.labels, scores) > mean_auroc(test.labels, prior_scores) + 0.08
    assert top1_accuracy(test.labels, scores) >= top1_accuracy(test.labels, prior_scores)
    # Tuned on the training data by cross-validation, within the candidate grids.
    assert router.n_clusters_ in router.n_clusters_grid
    assert router.prior_strength_ in router.prior_strength_grid
    assert router.temperature_ in router.temperature_grid
    assert router.cv_losses_.shape == (16,) and np.isfinite(router.cv_losses_).all()


def test_artifact_round_trip_gives_identical_scores_and_sets(fitted, tmp_path):
    _, test, router = fitted
    order = np.random.default_rng(0).permutation(test.n_queries)
    calibration, held_out = test.subset(order[:1000]), test.subset(order[1000:])
    scores = router.predict_proba(list(calibration.queries))
    racer = RACER(alpha=0.2, delta=0.1).fit(
        scores, calibration.labels, model_names=test.model_names
    )
    path = save_artifact(tmp_path / "cluster", router, racer, calibration=calibration)
    artifact = load_artifact(path, model_names=test.model_names)
    queries = list(held_out.queries)
    assert type(artifact.router) is ClusterRouter
    np.testing.assert_array_equal(artifact.predict_proba(queries), router.predict_proba(queries))
    expected = racer.predict(router.predict_proba(queries), include_abstain=True)
    np.testing.assert_array_equal(artifact.predict_sets(queries, include_abstain=True), expected)


def test_tables_ignore_unknown_labels_and_shrink_towards_the_prior():
    labels = np.array([[1, np.nan], [0, 1], [1, np.nan], [np.nan, np.nan]])
    prior = np.array([0.5, 0.25])
    tables = cluster_tables(np.array([0, 0, 1, 1]), labels, 2, prior, prior_strength=2.0)
    expected = [[(1 + 1.0) / (2 + 2), (1 + 0.5) / (1 + 2)], [(1 + 1.0) / (1 + 2), 0.25]]
    np.testing.assert_allclose(tables, expected)
    with pytest.raises(ValueError, match="prior_strength must be positive"):
        cluster_tables(np.array([0, 0, 1, 1]), labels, 2, prior, prior_strength=0.0)


def test_fit_tolerates_unknown_labels(fitted):
    train, test, tuned = fitted
    labels = train.labels.copy()
    labels[np.random.default_rng(0).uniform(size=labels.shape) < 0.3] = np.nan
    labels[:, 0] = np.nan  # a model with no known label keeps the 1/2 prior everywhere
    router = ClusterRouter(
        n_clusters=10, prior_strength=5.0, temperature=0.0, embedder=tuned.embedder_
    )
    scores = router.fit(list(train.queries), labels).predict_proba(list(test.queries))
    assert np.isfinite(scores).all() and scores.shape == test.labels.shape
    np.testing.assert_allclose(scores[:, 0], 0.5)


def test_region_weights_hard_and_soft():
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]])
    features = np.array([[0.9, 0.1], [0.2, 0.8]])
    np.testing.assert_array_equal(region_weights(features, centroids, 0.0), [[1, 0], [0, 1]])
    soft = region_weights(features, centroids, 0.5)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert 0.5 < soft[0, 0] < 1 and 0.5 < soft[1, 1] < 1
