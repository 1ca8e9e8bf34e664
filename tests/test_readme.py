"""The README runs as written: its Python example keeps its promise, and CI runs its test
command."""

import os
import re
import subprocess

import pytest
from conftest import REPO_ROOT


def test_readme_python_example_runs(shared_data):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    example = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    namespace: dict = {}
    exec(example.replace("../shared/data", str(shared_data)), namespace)  # noqa: S102
    racer = namespace["racer"]
    assert racer.risk_bound_ <= 0.1
    assert namespace["sets"].shape == (len(namespace["test"]), 7)


@pytest.mark.parametrize("pytest_status", [0, 1])
def test_ci_runs_the_readmes_test_command_and_exits_with_its_status(tmp_path, pytest_status):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    test_line = re.search(r"```bash\n.*?\n(.*?)\n", readme).group(1)
    test_command = test_line.split("#")[0].strip()
    assert test_command == 'python3 -m pip install -e ".[test]" && python3 -m pytest'
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "python3"  # records each call; "pytest" exits with pytest_status
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'case "$*" in *pytest*) exit {pytest_status};; esac\nexit 0\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
           "RACER_TEST_POSTGRES_URL": "postgresql://racer@127.0.0.1:1/unused"}  # fmt: skip
    done = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "run")], env=env, capture_output=True)
    assert done.returncode == pytest_status, done.stderr
    assert calls.read_text().splitlines() == [
        "-m pip install -e .[ci]",
        "-m pip install -e .[test]",
        "-m pytest",
    ]
