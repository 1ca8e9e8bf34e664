"""Free-text agreement by MiniLM sentence embeddings: the answer kind "similarity-dense"."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from racer.artifact import load_artifact
from racer.cli import app
from racer.data.routerbench import load_routerbench
from racer.evaluation.certified import answer_kind, policy_data
from racer.policies import Cascade
from racer.routers.embeddings.minilm import MiniLMEmbedder
from racer.serve.answering.certified_policy import policy_row
from racer.serve.served_policy import served_policy
from racer.similarity import (
    DENSE_AGREEMENT_THRESHOLD,
    SIMILARITY,
    SIMILARITY_DENSE,
    agreement_function,
    dense_installed,
    dense_pairwise_agreement,
    free_text_kind,
)

runner = CliRunner()
MODELS = ("cheap-a", "cheap-b", "cheap-c", "frontier")
REFERENCE = "frontier"
TEXTS = [
    "def add_one(x):\n    return x + 1",
    "The function adds one: def inc(n): return n + 1",
    "def reverse(s):\n    return s[::-1]",
    "To reverse a string in Python, slice it backwards: s[::-1].",
    "SELECT name FROM users WHERE age > 30;",
    "I cannot help with that request.",
]
# Per task: two spellings of the right program; wrong answers are no program.
RIGHT = [
    ("def is_even(n):\n    return n % 2 == 0", "def is_even(n): return n%2 == 0"),
    ("def square(x):\n    return x * x", "def square(x): return x*x"),
    ("def first(items):\n    return items[0]", "def first(items): return items[0]  # head"),
    ("def total(values):\n    return sum(values)", "def total(values): return sum(values)"),
]
WRONG = [
    "I am not sure what the question asks.",
    "Sorry, I cannot write code for this.",
    "The weather today is sunny with light wind.",
    "Please provide more details about the input format.",
]


@pytest.fixture(scope="module")
def encoder():
    return MiniLMEmbedder(cache=False, progress=False, strip_shared_prefix=False).fit([])


def _responses(rows: list[list[str | None]]) -> np.ndarray:
    responses = np.empty((len(rows), len(rows[0])), dtype=object)
    responses[:, :] = rows
    return responses


def test_the_dense_extra_is_installed_here():
    # CI installs it (the test extra): the tests below must run, never skip.
    assert dense_installed()
    assert free_text_kind("auto") == SIMILARITY_DENSE


def test_dense_agreement_is_the_cosine_of_minilm_vectors_at_the_threshold(encoder):
    vectors = encoder.transform(TEXTS).astype(np.float64)
    cosine = vectors @ vectors.T
    off = np.sort(cosine[np.triu_indices(len(TEXTS), 1)])
    # a threshold halfway between two cosines: some pairs agree, some do not, none is a tie
    middle = len(off) // 2
    threshold = float((off[middle - 1] + off[middle]) / 2)
    responses = _responses([[*TEXTS[:4], None], [*TEXTS[2:], "   "]])
    agree = dense_pairwise_agreement(responses, threshold)
    for row, columns in ((0, [0, 1, 2, 3]), (1, [2, 3, 4, 5])):
        expected = np.zeros((5, 5), dtype=bool)
        expected[np.ix_(range(4), range(4))] = cosine[np.ix_(columns, columns)] >= threshold
        assert np.array_equal(agree[row], expected)  # no answer (None, blank) agrees with none
    assert agree[:, :4, :4][:, ~np.eye(4, dtype=bool)].any()
    assert not agree[:, :4, :4][:, ~np.eye(4, dtype=bool)].all()
    # the kind without a threshold is the default one, with one the one it names
    default = agreement_function(SIMILARITY_DENSE)(responses)
    assert np.array_equal(default, dense_pairwise_agreement(responses, DENSE_AGREEMENT_THRESHOLD))
    assert np.array_equal(agreement_function(f"{SIMILARITY_DENSE}:{threshold!r}")(responses), agree)


def test_a_text_has_the_same_vector_alone_as_among_others(encoder):
    # The gateway embeds one query's answers; the simulation embeds thousands at once.
    together = encoder.transform(TEXTS)
    alone = np.stack([encoder.transform([text])[0] for text in TEXTS])
    assert np.array_equal(together, alone)


def _task_csv(path, n_queries: int, seed: int) -> None:
    """A RouterBench-format CSV of code answers: cheap models right about 80 % of the time."""
    import csv

    rng = np.random.default_rng(seed)
    header = ["", "sample_id", "prompt", "eval_name"]
    for model in MODELS:
        header += [model, f"{model}|model_response", f"{model}|total_cost"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "oracle_model_to_route_to"])
        for i in range(n_queries):
            task = rng.integers(len(RIGHT))
            row = [i, f"q{seed}-{i}", repr([f"Task {task}, case {i}"]), "synthetic-code"]
            for column, cost in enumerate((0.001, 0.002, 0.003, 0.03)):
                right = rng.random() < (0.95 if column == 3 else 0.8)
                text = RIGHT[task][rng.integers(2)] if right else WRONG[rng.integers(len(WRONG))]
                row += [float(right), repr([text]), cost]
            writer.writerow([*row, REFERENCE])


def test_the_answer_kind_round_trips_through_calibrate_and_the_gateway_computes_the_same(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("RACER_CACHE_DIR", str(tmp_path / "cache"))
    train, calibration = tmp_path / "train.csv", tmp_path / "calibration.csv"
    _task_csv(train, 300, 1)
    _task_csv(calibration, 300, 2)
    kinds = {}
    for agreement in ("auto", "dense", "char"):
        out = tmp_path / f"artifact-{agreement}"
        result = runner.invoke(
            app,
            [
                "calibrate", "--train", str(train), "--calibration", str(calibration),
                "--router", "prior", "--alpha", "0.2", "--objective", "regret",
                "--reference", REFERENCE, "--agreement", agreement, "--out", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        state = load_artifact(out).policy
        kinds[agreement] = state["answer_kind"]
        assert served_policy(state, MODELS).answer_kind == state["answer_kind"]
    assert kinds == {"auto": SIMILARITY_DENSE, "dense": SIMILARITY_DENSE, "char": SIMILARITY}

    data = load_routerbench(calibration)
    # Character n-grams by default (they certified more on MBPP); dense on request.
    assert answer_kind(data) == SIMILARITY and answer_kind(data, "dense") == SIMILARITY_DENSE
    simulated = policy_data(data, None, SIMILARITY_DENSE)
    chain = [0, 2, 1]
    for row in range(data.n_queries):
        texts = list(data.responses[row])
        one = policy_row(texts, np.zeros(len(MODELS)), SIMILARITY_DENSE)
        assert np.array_equal(one.codes[0], simulated.codes[row])
        assert np.array_equal(one.agree[0], simulated.agree[row])
        # the gateway after two tiers: the later tiers have not answered yet
        called = [t if c in chain[:2] else None for c, t in enumerate(texts)]
        early = policy_row(called, np.zeros(len(MODELS)), SIMILARITY_DENSE).agree[0]
        assert np.array_equal(early[np.ix_(chain[:2], chain[:2])],
                              simulated.agree[row][np.ix_(chain[:2], chain[:2])])
    # Two cheap answers that agree are mostly right here: the cascade stops on some queries.
    agree02 = simulated.agree[:, 0, 2]
    assert 0.2 < agree02.mean() < 0.9 and data.labels[agree02, 0].mean() > 0.9
    cascade = Cascade(chain=tuple(chain), threshold=1.5, fallback=3, weights=(1.0, 1.0, 1.0))
    rows = [policy_row(list(t), np.zeros(4), SIMILARITY_DENSE) for t in data.responses[:40]]
    served = [cascade.simulate(r).served[0] for r in rows]
    assert served == cascade.simulate(simulated.take(np.arange(40))).served.tolist()
    assert 3 in served and set(served) - {3}  # some queries stop early, some escalate


def test_evaluate_certifies_with_the_agreement_it_is_asked_for(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("RACER_CACHE_DIR", str(tmp_path / "cache"))
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _task_csv(train, 200, 3)
    _task_csv(test, 200, 4)
    for agreement, kind in (("char", SIMILARITY), ("dense", SIMILARITY_DENSE)):
        out = tmp_path / f"report-{agreement}"
        result = runner.invoke(
            app,
            [
                "evaluate", "--train", str(train), "--test", str(test), "--router", "prior",
                "--alpha", "0.2", "--trials", "5", "--bounds", "binomial",
                "--families", "threshold", "--objective", "regret", "--reference", REFERENCE,
                "--agreement", agreement, "--out", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        records = json.loads((out / "results.json").read_text())["certified"]
        assert [r["answer_kind"] for r in records] == [kind]


def test_without_the_dense_extra_the_errors_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert not dense_installed()
    assert free_text_kind("auto") == SIMILARITY  # auto falls back to character n-grams
    hint = r'pip install "racer-routing\[dense\]"'
    with pytest.raises(ImportError, match=hint):
        agreement_function(SIMILARITY_DENSE)
    with pytest.raises(ImportError, match=hint):
        free_text_kind("dense")
    # an artifact certified with dense agreement is refused at load, not at the first request
    state = {
        "certificate": {"policy": Cascade((0, 1), 1.5, 2, (1.0, 1.0)).state(), "alpha": 0.1},
        "answer_kind": SIMILARITY_DENSE,
    }
    with pytest.raises(ValueError, match=hint):
        served_policy(state, MODELS[:3])
    assert served_policy(state | {"answer_kind": SIMILARITY}, MODELS[:3]).answer_kind == SIMILARITY


def test_a_wrong_agreement_option_is_a_user_error():
    result = runner.invoke(
        app,
        [
            "evaluate", "--train", "t.csv", "--test", "t.csv", "--objective", "regret",
            "--reference", REFERENCE, "--agreement", "semantic",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "agreement must be one of ['auto', 'char', 'dense']" in " ".join(result.output.split())
    with pytest.raises(ValueError, match="must be a number in"):
        agreement_function("similarity-dense:1.5")
    with pytest.raises(ValueError, match="Unknown free-text answer kind"):
        agreement_function("choice")
