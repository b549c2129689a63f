"""The README's usage example runs as written."""

import re
from pathlib import Path


def test_readme_python_example_runs():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 — our own README
    assert namespace["samples"].shape == (10, 1, 32, 8, 8)
    assert not any("dropkit" in name for name, _ in namespace["model"].named_modules())
