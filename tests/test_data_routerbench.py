"""RouterBench CSV: figures of the data README, missing cells, merged rows, costs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from racer.data import (
    DuplicateQueriesWarning,
    MissingLabelsWarning,
    load_dataset,
    load_routerbench,
)
from racer.data.routerbench import parse_text_list

GPT4 = "gpt-4-1106-preview"
MISTRAL = "mistralai/mistral-7b-chat"


def _quiet_load(path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingLabelsWarning)
        warnings.simplefilter("ignore", DuplicateQueriesWarning)
        return load_routerbench(path, **options)


@pytest.fixture(scope="module")
def as_in_file(shared_data):
    """Each file with its rows as stored (no merging of repeated sample ids)."""
    names = ("arc_challenge_train", "arc_challenge_test", "mbpp_train", "mbpp_test")
    return {
        n: _quiet_load(shared_data / "routerbench" / f"{n}.csv", merge_duplicates=False)
        for n in names
    }


# file, rows, best model, its accuracy, any model correct (README table).
README_TABLE = [
    ("arc_challenge_train", 1039, GPT4, 0.946, 0.986),
    ("arc_challenge_test", 445, GPT4, 0.944, 0.984),
    ("mbpp_train", 299, GPT4, 0.686, 0.866),
    ("mbpp_test", 128, "gpt-3.5-turbo-1106", 0.688, 0.867),
]


@pytest.mark.parametrize(("stem", "rows", "best_model", "best", "any_correct"), README_TABLE)
def test_reference_figures_match_the_readme(as_in_file, stem, rows, best_model, best, any_correct):
    data = as_in_file[stem]
    # The README divides by every row of the file: a missing cell counts as not correct.
    accuracy = np.nan_to_num(data.labels, nan=0.0).mean(axis=0)
    assert data.n_queries == rows
    assert data.n_models == 11
    assert data.model_names[int(accuracy.argmax())] == best_model
    assert round(float(accuracy.max()), 3) == best
    assert round(float(np.nanmax(data.labels, axis=1).mean()), 3) == any_correct


def test_best_accuracy_over_known_cells_is_higher_than_the_readme_figure(as_in_file):
    # gpt-4 is unknown on 8 (train) and 6 (test) rows; over known cells it scores higher.
    for stem, expected in (("arc_challenge_train", 0.953), ("arc_challenge_test", 0.957)):
        data = as_in_file[stem]
        gpt4 = data.labels[:, data.model_names.index(GPT4)]
        assert round(float(np.nanmean(gpt4)), 3) == expected


def test_missing_cells_are_counted_per_model_not_read_as_wrong(shared_data):
    path = shared_data / "routerbench" / "arc_challenge_train.csv"
    with pytest.warns(MissingLabelsWarning, match=r"92 of 11429 .*gpt-3.5-turbo-1106: 12"):
        data = load_routerbench(path, merge_duplicates=False)
    assert np.isnan(data.labels).sum() == 92


def test_drop_queries_removes_every_incomplete_query(shared_data):
    path = shared_data / "routerbench" / "arc_challenge_train.csv"
    with pytest.warns(MissingLabelsWarning, match="in 20 of 1039 queries; dropped"):
        data = load_routerbench(path, merge_duplicates=False, missing="drop_queries")
    assert data.n_queries == 1039 - 20
    assert not np.isnan(data.labels).any()


def test_rows_repeating_a_sample_id_are_merged_by_default(shared_data):
    path = shared_data / "routerbench" / "arc_challenge_train.csv"
    with (
        pytest.warns(DuplicateQueriesWarning, match="merged 7 row"),
        pytest.warns(MissingLabelsWarning, match="15 of 11352"),  # twins in the test file
    ):
        data = load_routerbench(path)
    assert data.n_queries == 1032
    assert len(set(data.query_ids)) == 1032
    row = int(np.flatnonzero(data.query_ids == "arc-challenge.val.208")[0])
    labels = dict(zip(data.model_names, data.labels[row], strict=True))
    assert labels["gpt-3.5-turbo-1106"] == 0.0  # from the row holding only gpt-3.5
    assert labels[GPT4] == 1.0  # from the row holding the other ten models
    assert not np.isnan(data.labels[row]).any()


def test_train_and_test_share_six_queries_that_pooling_merges(shared_data):
    files = [shared_data / "routerbench" / f"arc_challenge_{s}.csv" for s in ("train", "test")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateQueriesWarning)
        pooled = load_dataset(files)
    assert pooled.n_queries == 1032 + 444 - 6
    assert not np.isnan(pooled.labels).any()


def test_cheapest_model_is_about_fifty_times_cheaper_than_gpt4(as_in_file):
    for stem, low, high in (("arc_challenge_train", 45, 55), ("mbpp_test", 150, 250)):
        data = as_in_file[stem]
        mean = dict(zip(data.model_names, data.mean_costs(), strict=True))
        assert min(mean, key=mean.get) == MISTRAL
        assert low < mean[GPT4] / mean[MISTRAL] < high
        assert not np.isnan(data.costs).any()


def test_prompts_and_responses_are_plain_strings(as_in_file):
    data = as_in_file["mbpp_test"]
    assert data.queries[0] == "Write a python function to identify non-prime numbers."
    assert data.responses.shape == (128, 11)
    assert all(isinstance(r, str) and not r.startswith("['") for r in data.responses.ravel())
    assert data.query_ids[0] == "mbpp.dev.1"
    assert set(data.sources) == {"mbpp"}


def test_responses_can_be_skipped(shared_data):
    data = _quiet_load(shared_data / "routerbench" / "mbpp_test.csv", read_responses=False)
    assert data.responses is None
    assert data.costs is not None


@pytest.mark.parametrize(
    ("cell", "text"),
    [
        ("['What is 2 + 2?']", "What is 2 + 2?"),
        ("['same', 'same']", "same"),
        ("['turn one', 'turn two']", "turn one\n\nturn two"),
        ("plain text", "plain text"),
        ("", None),
    ],
)
def test_text_cells_become_one_string(cell, text):
    assert parse_text_list(cell, "test") == text


@pytest.mark.parametrize("cell", ["['unterminated", "[__import__('os').getcwd()]", "[1, 2]"])
def test_text_cells_that_are_not_string_lists_raise(cell):
    with pytest.raises(ValueError, match="Python list literal of strings"):
        parse_text_list(cell, "file.csv, row 3")


def test_other_csv_files_are_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("query,gpt-4\nhello,1\n")
    with pytest.raises(ValueError, match="not a RouterBench CSV"):
        load_routerbench(path)
