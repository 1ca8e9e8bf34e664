"""Scores from outside RACER: CSV / Parquet / numpy files and Python callables."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from racer.routers import ExternalScoresRouter, make_router, router_from_state

QUERIES = ["What is 2 + 2?", "Capital of France?", "Name a prime."]
SCORES = np.array([[0.9, 0.1], [0.2, 0.7], [0.5, 0.5]])


def write_csv(path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def scores_csv(tmp_path):
    rows = [[q, s[1], s[0]] for q, s in zip(QUERIES, SCORES, strict=True)]
    return write_csv(tmp_path / "scores.csv", ["query", "model_b", "model_a"], rows)


def test_table_columns_are_aligned_to_the_model_order(scores_csv):
    router = make_router("external", source=scores_csv)
    router.fit(QUERIES, model_names=["model_a", "model_b"])
    np.testing.assert_array_equal(router.predict_proba(QUERIES[::-1]), SCORES[::-1])
    assert router.model_names_ == ["model_a", "model_b"]


def test_parquet_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": ["q1", "q2", "q3"], "a": SCORES[:, 0], "b": SCORES[:, 1]})
    pq.write_table(table, tmp_path / "scores.parquet")
    router = ExternalScoresRouter(tmp_path / "scores.parquet", query_column="id").fit()
    np.testing.assert_array_equal(router.predict_proba(["q2"]), SCORES[1:2])
    assert router.model_names_ == ["a", "b"]


def test_npz_and_npy_files(tmp_path):
    np.savez(tmp_path / "s.npz", queries=np.array(QUERIES), scores=SCORES)
    router = ExternalScoresRouter(tmp_path / "s.npz").fit(model_names=["a", "b"])
    np.testing.assert_array_equal(router.predict_proba(QUERIES[1:]), SCORES[1:])
    np.save(tmp_path / "s.npy", SCORES)
    by_row = ExternalScoresRouter(tmp_path / "s.npy").fit(labels=np.ones((3, 2)))
    np.testing.assert_array_equal(by_row.predict_proba(["2", "0"]), SCORES[[2, 0]])


def test_missing_model_or_query_is_explained(scores_csv):
    with pytest.raises(ValueError, match=r"has no scores for \['model_c'\]"):
        ExternalScoresRouter(scores_csv).fit(model_names=["model_a", "model_c"])
    router = ExternalScoresRouter(scores_csv).fit()
    with pytest.raises(KeyError, match="No external score for 1 of 2 queries"):
        router.predict_proba([QUERIES[0], "unseen query"])


def test_scores_outside_unit_interval_are_refused(tmp_path):
    path = write_csv(tmp_path / "logits.csv", ["query", "a"], [["q", 2.5]])
    with pytest.raises(ValueError, match=r"must be finite numbers in \[0, 1\]"):
        ExternalScoresRouter(path).fit()


def test_callable_source_is_checked_and_cannot_be_saved():
    def hosted_router(texts):
        return np.tile([0.3, 0.6], (len(texts), 1))

    router = ExternalScoresRouter(hosted_router).fit(QUERIES, np.ones((3, 2)), ["a", "b"])
    np.testing.assert_array_equal(router.predict_proba(QUERIES[:1]), [[0.3, 0.6]])
    with pytest.raises(TypeError, match="callable cannot be saved"):
        router.get_state()
    broken = ExternalScoresRouter(hosted_router).fit(model_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"returned shape \(1, 2\); expected \(1, 3\)"):
        broken.predict_proba(["q"])


def test_file_router_state_round_trips_without_the_file(scores_csv):
    router = ExternalScoresRouter(scores_csv).fit(model_names=["model_a", "model_b"])
    state = router.get_state()
    scores_csv.unlink()
    rebuilt = router_from_state(state)
    np.testing.assert_array_equal(rebuilt.predict_proba(QUERIES), SCORES)
