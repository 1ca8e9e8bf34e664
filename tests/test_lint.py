"""The code base stays ruff clean (part of the test suite so CI enforces it)."""

import shutil
import subprocess

import pytest
from conftest import REPO_ROOT


def test_ruff_reports_no_problem():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed; install the test extra: pip install -e '.[test]'")
    result = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks", "examples"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
