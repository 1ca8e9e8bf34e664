"""Shared fixtures: the real routing data beside the checkout, and a clean working folder."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import settings

# Property tests explore the same examples on every run, so CI cannot flake on a new draw.
settings.register_profile("racer", derandomize=True, deadline=None)
settings.load_profile("racer")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RACER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    """Under ``pytest -n`` each worker gets a PostgreSQL database of its own.

    The PostgreSQL tests drop and recreate the tables of RACER_TEST_POSTGRES_URL's
    database; two workers doing so at once break each other's tests.
    """
    worker, url = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("RACER_TEST_POSTGRES_URL")
    if not worker or not url:
        return
    try:
        import psycopg
    except ImportError:
        return  # the PostgreSQL tests skip themselves
    name = f"racer_test_{worker}"
    if url.rsplit("/", 1)[-1] == name:  # configured already (a pytest run inside this one)
        return
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.execute(f"CREATE DATABASE {name}")
    os.environ["RACER_TEST_POSTGRES_URL"] = f"{url.rsplit('/', 1)[0]}/{name}"


def import_or_skip(module: str, extra: str) -> ModuleType:
    """``module``, or a skip that names the extra installing it (the lean test extra leaves
    out Ray, psycopg and schemathesis). With ``RACER_TEST_ALL_EXTRAS=1`` (set by .ci/run)
    a missing module fails the test instead, so CI cannot skip the heavy parts."""
    if os.environ.get("RACER_TEST_ALL_EXTRAS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(
        module, reason=f'needs the {extra} extra: pip install -e ".[{extra}]" (as .ci/run does)'
    )


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own empty folder: default outputs (``racer-out/``) land there,
    and what an earlier ``racer demo`` left in the checkout cannot change a result."""
    monkeypatch.chdir(tmp_path)


class _NoPyarrow:
    """An import hook under which ``import pyarrow`` fails as on an install without it."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] == "pyarrow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture
def without_pyarrow(monkeypatch):
    """pyarrow made unimportable, with racer's batch modules imported afresh without it
    (all restored after the test). A hook, not ``sys.modules["pyarrow"] = None``, which
    scikit-learn would take for a loaded pyarrow."""
    if "racer.batch" in sys.modules:  # the package attribute is rebound by the fresh import
        monkeypatch.setattr(sys.modules["racer"], "batch", sys.modules["racer.batch"])
    loaded = [n for n in sys.modules if n.split(".")[0] == "pyarrow" or n.startswith("racer.batch")]
    for name in loaded:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoPyarrow(), *sys.meta_path])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder; a missing folder fails the test, never skips it."""
    if not (SHARED_DATA / "routerdc").is_dir() or not (SHARED_DATA / "routerbench").is_dir():
        pytest.fail(
            f"Real routing data not found at {SHARED_DATA}. The tests need ../shared/data "
            "beside the checkout (or RACER_SHARED_DATA pointing at it)."
        )
    return SHARED_DATA


def _read_only(*arrays):
    """The arrays, made read-only: a session fixture shared by several modules."""
    for array in arrays:
        array.setflags(write=False)
    return arrays


@pytest.fixture(scope="session")
def routerdc_pool(shared_data):
    """RouterDC MMLU test pool scored by the independent router trained on its train file
    (trained once per session; read-only arrays)."""
    from real_data import logistic_scores

    from racer.data import load_dataset

    train = load_dataset(shared_data / "routerdc" / "mmlu_train.json")
    test = load_dataset(shared_data / "routerdc" / "mmlu_test.json")
    return _read_only(logistic_scores(train, test), test.labels.copy())


@pytest.fixture(scope="session")
def routerbench_pool(shared_data):
    """RouterBench ARC-Challenge test pool (queries with a missing label dropped), scored
    by the independent router trained on its train file (once per session; read-only)."""
    from real_data import logistic_scores

    from racer.data import load_dataset

    with pytest.warns(UserWarning):
        train = load_dataset(shared_data / "routerbench" / "arc_challenge_train.csv",
                             missing="drop_queries")
        test = load_dataset(shared_data / "routerbench" / "arc_challenge_test.csv",
                            missing="drop_queries")
    return _read_only(logistic_scores(train, test), test.labels.copy())
