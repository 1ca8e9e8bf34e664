"""The group classifier: it names the task of a query, and an artifact calibrated on its
predicted groups routes identically after saving and loading (JSON and arrays only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from racer.artifact import METADATA_FILE, ArtifactError, load_artifact, save_artifact
from racer.estimator import RACER
from racer.routers import KNNRouter, TfidfEmbedder
from racer.routers.group_classifier import GroupClassifier

CODE = ["def {0}(a, b): return a {1} b", "write a python function {0} that loops over a list"]
SCIENCE = ["Which gas do plants absorb during {0}?", "What force keeps the {0} in orbit?"]
WORDS = ["add", "mul", "photosynthesis", "moon", "sort", "energy", "merge", "planet"]


def _queries(n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    groups = np.where(rng.uniform(size=n) < 0.5, "code", "science")
    texts = []
    for i, group in enumerate(groups):
        templates = CODE if group == "code" else SCIENCE
        texts.append(templates[i % 2].format(WORDS[i % len(WORDS)], "+*"[i % 2]) + f" #{i}")
    return texts, groups


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    train, train_groups = _queries(300, rng)
    calibration, _ = _queries(600, rng)
    classifier = GroupClassifier().fit(train, train_groups)
    labels = (rng.uniform(size=(900, 3)) < [0.8, 0.6, 0.3]).astype(float)
    router = KNNRouter(20, embedder=TfidfEmbedder(n_components=8, progress=False))
    router.fit(train, labels[:300], model_names=["a", "b", "c"])
    scores = router.predict_proba(calibration)
    racer = RACER(0.2, 0.1).fit(
        scores, labels[300:], groups=classifier.predict(calibration), model_names=["a", "b", "c"]
    )
    return classifier, router, racer, calibration, train_groups


def test_the_classifier_names_the_training_groups():
    rng = np.random.default_rng(1)
    train, groups = _queries(200, rng)
    test, test_groups = _queries(100, rng)
    classifier = GroupClassifier().fit(train, groups)
    assert classifier.classes_ == ("code", "science")
    assert np.mean(classifier.predict(test) == test_groups) == 1.0


def test_a_single_group_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="at least two groups"):
        GroupClassifier().fit(["a", "b"], ["x", "x"])


def test_artifact_with_a_group_classifier_routes_identically_after_loading(fitted, tmp_path):
    classifier, router, racer, calibration, _ = fitted
    assert sorted(racer.groups_) == ["code", "science"]
    directory = save_artifact(
        tmp_path / "art", router, racer, group_column="eval_name", group_classifier=classifier
    )
    artifact = load_artifact(directory)
    queries = calibration[:200]
    groups = classifier.predict(queries)
    expected = racer.predict(router.predict_proba(queries), groups=groups, include_abstain=True)
    np.testing.assert_array_equal(artifact.group_classifier.predict(queries), groups)
    np.testing.assert_array_equal(artifact.predict_sets(queries, include_abstain=True), expected)
    assert artifact.group_column == "eval_name"
    assert {g.name: g.threshold for g in artifact.racer.groups_.values()} == {
        g.name: g.threshold for g in racer.groups_.values()
    }
    metadata = json.loads((directory / METADATA_FILE).read_text())
    assert metadata["format_version"] == 2
    assert metadata["groups"] == {
        "column": "eval_name",
        "classifier": True,
        "names": ["code", "science"],
    }
    with np.load(directory / "group_classifier.npz", allow_pickle=False) as arrays:
        assert sorted(a.dtype.kind for a in arrays.values()) == ["f", "f", "f"]


def test_a_per_group_artifact_without_classifier_needs_the_groups(fitted, tmp_path):
    classifier, router, racer, calibration, _ = fitted
    artifact = load_artifact(save_artifact(tmp_path / "art", router, racer))
    with pytest.raises(ValueError, match="calibrated per group .* give each query's group"):
        artifact.predict_sets(calibration[:3])
    given = artifact.predict_sets(calibration[:3], groups=["code", "science", "code"])
    scores = router.predict_proba(calibration[:3])
    np.testing.assert_array_equal(
        given, racer.predict(scores, groups=["code", "science", "code"])
    )


def test_a_group_classifier_with_a_marginal_calibration_is_refused(fitted, tmp_path):
    classifier, router, _, calibration, _ = fitted
    marginal = RACER(0.2, 0.1).fit(
        router.predict_proba(calibration), np.ones((600, 3)), model_names=["a", "b", "c"]
    )
    with pytest.raises(ArtifactError, match="calibrated marginally"):
        save_artifact(tmp_path / "art", router, marginal, group_classifier=classifier)
