"""Saved artifacts: identical sets after reloading; tampered or mismatched ones refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from racer.artifact import (
    METADATA_FILE,
    ArtifactError,
    calibration_sha256,
    load_artifact,
    save_artifact,
)
from racer.data.load import load_dataset
from racer.estimator import RACER
from racer.routers import AbstentionHead, KNNRouter, LogisticRouter, TfidfEmbedder


@pytest.fixture(scope="module")
def fitted(shared_data):
    train = load_dataset(shared_data / "routerdc" / "arc_challenge_train.json")
    held_out = load_dataset(shared_data / "routerdc" / "arc_challenge_test.json")
    calibration, test = held_out.subset(np.arange(250)), held_out.subset(np.arange(250, 352))
    embedder = TfidfEmbedder(n_components=64, progress=False).fit(list(train.queries))
    router = LogisticRouter(C=0.3, embedder=embedder)
    router.fit(list(train.queries), train.labels, model_names=train.model_names)
    scores = router.predict_proba(list(calibration.queries))
    racer = RACER(alpha=0.25, delta=0.1).fit(
        scores, calibration.labels, model_names=train.model_names
    )
    return train, calibration, test, embedder, router, racer


@pytest.fixture
def saved(fitted, tmp_path):
    _, calibration, _, _, router, racer = fitted
    return save_artifact(tmp_path / "artifact", router, racer, calibration=calibration)


def test_reloaded_artifact_gives_identical_sets(fitted, saved):
    _, calibration, test, _, router, racer = fitted
    artifact = load_artifact(saved, model_names=calibration.model_names)
    queries = list(test.queries)
    expected = racer.predict(router.predict_proba(queries), include_abstain=True)
    np.testing.assert_array_equal(artifact.predict_sets(queries, include_abstain=True), expected)
    np.testing.assert_array_equal(artifact.predict_proba(queries), router.predict_proba(queries))
    assert artifact.racer.threshold_ == racer.threshold_
    assert 0 < expected[:, 1:].sum(axis=1).mean() < 7  # non-trivial sets


def test_metadata_records_the_calibration(fitted, saved):
    _, calibration, _, _, router, racer = fitted
    metadata = json.loads((saved / METADATA_FILE).read_text())
    assert metadata["format_version"] == 2
    assert metadata["model_names"] == list(calibration.model_names)
    assert (metadata["alpha"], metadata["delta"], metadata["bound"]) == (0.25, 0.1, "binomial")
    assert metadata["n_calibration"] == 250
    assert metadata["calibration_sha256"] == calibration_sha256(
        list(calibration.queries), calibration.labels
    )
    assert set(metadata["files"]) == {"router.npz", "racer.npz"}


def test_array_files_hold_no_pickled_objects(saved):
    for path in saved.glob("*.npz"):
        with np.load(path, allow_pickle=False) as data:
            assert all(not data[key].dtype.hasobject for key in data.files)


def test_tampered_array_file_is_refused(saved):
    with np.load(saved / "router.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    key = next(k for k, v in arrays.items() if v.dtype.kind == "f" and v.size)
    arrays[key] = arrays[key] + 0.01
    np.savez(saved / "router.npz", **arrays)
    with pytest.raises(ArtifactError, match="router.npz fails its sha256 check"):
        load_artifact(saved)


def test_edited_metadata_is_refused(saved):
    path = saved / METADATA_FILE
    path.write_text(path.read_text().replace('"alpha": 0.25', '"alpha": 0.5'))
    with pytest.raises(ArtifactError, match="metadata was edited or corrupted"):
        load_artifact(saved)


def test_unknown_format_version_is_refused(saved):
    path = saved / METADATA_FILE
    path.write_text(path.read_text().replace('"format_version": 2', '"format_version": 99'))
    with pytest.raises(ArtifactError, match=r"version 99 .* reads versions \(1, 2\)"):
        load_artifact(saved)


def test_other_model_names_are_refused(fitted, saved):
    names = list(fitted[1].model_names)
    with pytest.raises(ArtifactError, match="Model names and their order must match"):
        load_artifact(saved, model_names=names[::-1])


def test_missing_artifact_and_overwrite(fitted, saved, tmp_path):
    with pytest.raises(ArtifactError, match="racer_artifact.json is missing"):
        load_artifact(tmp_path / "nowhere")
    _, _, _, _, router, racer = fitted
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_artifact(saved, router, racer)
    assert save_artifact(saved, router, racer, overwrite=True) == saved


def test_router_and_calibration_must_share_models(fitted, tmp_path):
    _, calibration, _, _, router, _ = fitted
    other = RACER(alpha=0.25).fit(
        router.predict_proba(list(calibration.queries)), calibration.labels,
        model_names=[f"m{j}" for j in range(7)],
    )
    with pytest.raises(ArtifactError, match="RACER was calibrated on"):
        save_artifact(tmp_path / "a", router, other)


def test_learned_abstain_score_travels_with_the_artifact(fitted, tmp_path):
    train, calibration, test, embedder, _, _ = fitted
    router = KNNRouter(k=30, embedder=embedder)
    router.fit(list(train.queries), train.labels, model_names=train.model_names)
    head = AbstentionHead(C=0.3, embedder=embedder).fit(list(train.queries), train.labels)
    cal_queries = list(calibration.queries)
    racer = RACER(alpha=0.25, abstain_score="given").fit(
        router.predict_proba(cal_queries), calibration.labels,
        abstain_scores=head.abstain_score(cal_queries),
    )
    with pytest.raises(ArtifactError, match="Pass abstention="):
        save_artifact(tmp_path / "no_head", router, racer)
    path = save_artifact(tmp_path / "with_head", router, racer, abstention=head)
    artifact = load_artifact(path)
    queries = list(test.queries)
    expected = racer.predict(
        router.predict_proba(queries), include_abstain=True,
        abstain_scores=head.abstain_score(queries),
    )
    np.testing.assert_array_equal(artifact.predict_sets(queries, include_abstain=True), expected)
