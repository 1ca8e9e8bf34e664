"""The suite's own promise: a test's result never depends on the working directory."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO_ROOT

pytest_plugins = ["pytester"]

INNER_TEST = '''
from typer.testing import CliRunner

from racer.cli import app


def test_a_default_out_command_sees_no_earlier_report():
    args = ["evaluate", "--test", "nowhere.csv", "--train", "x.csv", "--alpha", "0.1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "does not" in result.output and "already holds" not in result.output
'''


def test_each_test_runs_in_its_own_empty_folder(tmp_path):
    assert Path.cwd() == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_racer_out_left_by_racer_demo_in_the_checkout_changes_no_result(pytester, monkeypatch):
    monkeypatch.delenv("RACER_TEST_POSTGRES_URL", raising=False)  # the inner run needs none
    # pytester's folder plays the checkout after the README's first command (racer demo)
    pytester.makeconftest((REPO_ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    (pytester.path / "racer-out").mkdir()
    (pytester.path / "racer-out" / "report.md").write_text("an earlier racer demo\n")
    pytester.makepyfile(test_inner=INNER_TEST)
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)
