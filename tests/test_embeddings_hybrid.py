"""The hybrid embedder: TF-IDF and MiniLM concatenated so that cosines mix by a fixed weight."""

from __future__ import annotations

import numpy as np
import pytest

from racer.routers import HybridEmbedder, MiniLMEmbedder, make_router
from racer.routers.embeddings import embedder_from_state

TEXTS = [
    f"{subject} question {i}: what is the {kind} of {i}?"
    for i in range(40)
    for subject, kind in [("math", "square root"), ("history", "founding date"), ("art", "colour")]
]


@pytest.fixture(scope="module")
def hybrid():
    return HybridEmbedder(0.3, n_components=16, cache=False, progress=False).fit(TEXTS)


def test_cosine_is_the_weighted_mix_of_the_two_cosines(hybrid):
    vectors = hybrid.transform(TEXTS[:9])
    assert vectors.shape == (9, 16 + 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    tfidf, dense = hybrid.tfidf_.transform(TEXTS[:9]), hybrid.minilm_.transform(TEXTS[:9])
    expected = 0.3 * tfidf @ tfidf.T + 0.7 * dense @ dense.T
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-5)


def test_the_weight_must_be_a_share(hybrid):
    for weight in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match=r"tfidf_weight must be a number in \[0, 1\]"):
            HybridEmbedder(weight, n_components=16, cache=False).fit(TEXTS)


def test_state_rebuilds_the_same_vectors_without_object_arrays(hybrid):
    state = hybrid.get_state()
    assert state["params"] == {"tfidf_weight": 0.3, "n_components": 16}
    assert all(not array.dtype.hasobject for array in state["tfidf"]["arrays"].values())
    rebuilt = embedder_from_state(state)
    assert rebuilt.fingerprint() == hybrid.fingerprint()
    np.testing.assert_array_equal(rebuilt.transform(TEXTS), hybrid.transform(TEXTS))
    other_weight = HybridEmbedder(0.5, n_components=16, cache=False).fit(TEXTS)
    assert other_weight.fingerprint() != hybrid.fingerprint()


def test_minilm_vectors_cached_once_serve_every_hybrid(monkeypatch, tmp_path):
    MiniLMEmbedder(batch_size=8, cache=tmp_path, progress=False).fit([]).transform(TEXTS)
    hybrid = HybridEmbedder(n_components=16, batch_size=8, cache=tmp_path, progress=False)
    hybrid.fit(TEXTS)
    monkeypatch.setattr(hybrid.minilm_, "_embed", lambda texts: pytest.fail("recomputed"))
    assert hybrid.transform(TEXTS).shape == (120, 400)


def test_a_shared_preamble_is_dropped_before_both_parts(hybrid):
    preamble = "Answer the question below.\n\n"
    prefixed = HybridEmbedder(0.3, n_components=16, cache=False, progress=False)
    prefixed.fit([preamble + text for text in TEXTS])
    assert prefixed.shared_prefix_ == preamble
    np.testing.assert_allclose(
        prefixed.transform([preamble + TEXTS[0]]), hybrid.transform(TEXTS[:1]), atol=1e-5
    )


def test_a_logistic_router_fits_on_hybrid_vectors(hybrid):
    labels = np.array([[i % 3 == 0, i % 3 != 0] for i in range(len(TEXTS))], dtype=float)
    router = make_router("logistic", embedder=hybrid, C=10.0).fit(TEXTS, labels)
    scores = router.predict_proba(["math question 99: what is the square root of 99?"])
    assert scores[0, 0] > 0.8 > 0.2 > scores[0, 1]
