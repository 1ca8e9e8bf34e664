"""Query embeddings: the TF-IDF default, the on-disk cache, the progress bar."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from racer.routers import (
    EMBEDDER_NAMES,
    EmbeddingCache,
    TfidfEmbedder,
    default_cache_dir,
    make_embedder,
)
from racer.routers.embeddings import base, embedder_from_state, shared_prefix

TEXTS = [
    f"{subject} question number {i}: what is the {kind} of {i}?"
    for i in range(60)
    for subject, kind in [("math", "square"), ("history", "date"), ("中文", "汉字意思")]
]


@pytest.fixture(scope="module")
def embedder():
    return TfidfEmbedder(n_components=16, batch_size=32, progress=False).fit(TEXTS)


def test_tfidf_rows_have_unit_norm_and_fixed_size(embedder):
    vectors = embedder.transform(TEXTS[:5])
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_tfidf_covers_chinese_text_through_character_ngrams(embedder):
    chinese = embedder.transform(["中文 问题: 汉字意思 是什么?"])
    assert np.abs(chinese).sum() > 0
    similarity = embedder.transform(TEXTS[2::3]) @ chinese[0]
    others = embedder.transform(TEXTS[0::3]) @ chinese[0]
    assert similarity.mean() > others.mean() + 0.2


def test_tfidf_is_deterministic_and_rebuilds_from_its_state(embedder):
    again = TfidfEmbedder(n_components=16, progress=False).fit(TEXTS)
    np.testing.assert_array_equal(again.transform(TEXTS), embedder.transform(TEXTS))
    state = embedder.get_state()
    assert all(not a.dtype.hasobject for a in state["arrays"].values())
    rebuilt = embedder_from_state(state)
    np.testing.assert_array_equal(rebuilt.transform(TEXTS), embedder.transform(TEXTS))
    assert rebuilt.fingerprint() == embedder.fingerprint()


def test_transform_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="Call fit"):
        TfidfEmbedder().transform(["q"])


def test_too_few_texts_for_the_dimension_is_explained():
    with pytest.raises(ValueError, match="lower n_components"):
        TfidfEmbedder(n_components=500).fit(["a b", "a c", "b c"])


def test_registry_of_embedders():
    assert EMBEDDER_NAMES == ("tfidf", "minilm", "hybrid")
    assert isinstance(make_embedder("tfidf", n_components=4), TfidfEmbedder)
    with pytest.raises(ValueError, match="Unknown embedder"):
        make_embedder("word2vec")


def test_a_saved_sentence_transformers_embedder_is_refused_with_the_replacement():
    state = {"name": "sentence-transformers", "params": {"model": "all-MiniLM-L6-v2"}}
    with pytest.raises(ValueError, match="refit the router with embedder='minilm'"):
        embedder_from_state(state)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RACER_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("RACER_CACHE_DIR")
    assert default_cache_dir().parts[-2:] == (".cache", "racer")


def test_cache_returns_stored_vectors_without_recomputing(embedder, monkeypatch, tmp_path):
    monkeypatch.setenv("RACER_CACHE_DIR", str(tmp_path))
    cached = embedder_from_state(embedder.get_state()).set_params(cache=True, batch_size=32)
    first = cached.transform(TEXTS[:100])
    assert len(list(tmp_path.glob("embeddings/*/*.npz"))) == 1
    calls = []
    original = cached._embed
    monkeypatch.setattr(cached, "_embed", lambda texts: calls.append(len(texts)) or original(texts))
    second = cached.transform(TEXTS[:100] + TEXTS[100:140])
    np.testing.assert_array_equal(second[:100], first)
    assert sum(calls) == 40  # only the new texts were embedded
    fresh = EmbeddingCache(tmp_path, cached.fingerprint())
    found, _ = fresh.lookup(np.array(["0" * 64]))
    assert not found.any()


def test_cache_is_keyed_by_fitted_state(embedder, tmp_path):
    other = TfidfEmbedder(n_components=16, progress=False, cache=tmp_path).fit(TEXTS[:120])
    assert other.fingerprint() != embedder.fingerprint()


def test_progress_bar_shows_for_batches_on_a_terminal_only(embedder, monkeypatch):
    advanced = []

    class RecordingProgress(base.Progress):
        def advance(self, task, advance=1):
            advanced.append(advance)
            super().advance(task, advance)

    monkeypatch.setattr(base, "Progress", RecordingProgress)
    shown = embedder_from_state(embedder.get_state()).set_params(batch_size=16, progress=True)
    monkeypatch.setattr(base, "_stderr_is_terminal", lambda: False)
    assert shown.transform(TEXTS).shape == (180, 16)
    assert advanced == []  # CI logs and pipes get no bar (and no stray blank lines)
    monkeypatch.setattr(base, "_stderr_is_terminal", lambda: True)
    assert shown.transform(TEXTS).shape == (180, 16)
    assert len(advanced) == 12 and sum(advanced) == 180  # one step per batch of 16
    shown.set_params(progress=False).transform(TEXTS)
    assert len(advanced) == 12


def test_a_preamble_shared_by_every_query_is_not_embedded():
    preamble = "Example: what is 1 + 1?\nAnswer: 2\n\n"
    with_preamble = TfidfEmbedder(n_components=16, progress=False).fit(
        [preamble + text for text in TEXTS]
    )
    assert with_preamble.shared_prefix_ == preamble
    plain = TfidfEmbedder(n_components=16, progress=False).fit(TEXTS)
    assert plain.shared_prefix_ == ""
    np.testing.assert_allclose(
        with_preamble.transform([preamble + TEXTS[0]]), plain.transform(TEXTS[:1]), atol=1e-6
    )
    rebuilt = embedder_from_state(with_preamble.get_state())
    assert rebuilt.shared_prefix_ == preamble
    assert rebuilt.fingerprint() == with_preamble.fingerprint() != plain.fingerprint()
    kept = TfidfEmbedder(n_components=16, progress=False, strip_shared_prefix=False)
    assert kept.fit([preamble + text for text in TEXTS]).shared_prefix_ == ""


def test_shared_prefix_keeps_whole_lines_and_never_a_whole_text():
    assert shared_prefix(["Q: 1\nQ: 2\nfoo", "Q: 1\nQ: 2\nfar"]) == "Q: 1\nQ: 2\n"
    assert shared_prefix(["same\n", "same\nmore"]) == ""
    assert shared_prefix(["only one\ntext"]) == ""
