"""The README's Python example runs as written and keeps its promise."""

import re

from conftest import REPO_ROOT


def test_readme_python_example_runs(shared_data):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    example = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    namespace: dict = {}
    exec(example.replace("../shared/data", str(shared_data)), namespace)  # noqa: S102
    racer = namespace["racer"]
    assert racer.risk_bound_ <= 0.1
    assert namespace["sets"].shape == (len(namespace["test"]), 7)
