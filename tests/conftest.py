"""Shared fixtures: the real routing data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests explore the same examples on every run, so CI cannot flake on a new draw.
settings.register_profile("racer", derandomize=True, deadline=None)
settings.load_profile("racer")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RACER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder; a missing folder fails the test, never skips it."""
    if not (SHARED_DATA / "routerdc").is_dir() or not (SHARED_DATA / "routerbench").is_dir():
        pytest.fail(
            f"Real routing data not found at {SHARED_DATA}. The tests need ../shared/data "
            "beside the checkout (or RACER_SHARED_DATA pointing at it)."
        )
    return SHARED_DATA


@pytest.fixture(scope="module")
def routerdc_pool(shared_data):
    """RouterDC MMLU test pool scored by the independent router trained on its train file."""
    from real_data import logistic_scores

    from racer.data import load_dataset

    train = load_dataset(shared_data / "routerdc" / "mmlu_train.json")
    test = load_dataset(shared_data / "routerdc" / "mmlu_test.json")
    return logistic_scores(train, test), test.labels


@pytest.fixture(scope="module")
def routerbench_pool(shared_data):
    """RouterBench ARC-Challenge test pool (queries with a missing label dropped), scored
    by the independent router trained on its train file."""
    from real_data import logistic_scores

    from racer.data import load_dataset

    with pytest.warns(UserWarning):
        train = load_dataset(shared_data / "routerbench" / "arc_challenge_train.csv",
                             missing="drop_queries")
        test = load_dataset(shared_data / "routerbench" / "arc_challenge_test.csv",
                            missing="drop_queries")
    return logistic_scores(train, test), test.labels
