"""The README's Python example runs as written."""

from __future__ import annotations

import re

from dcutmix.config import REPO_ROOT


def test_readme_mixing_example_runs():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README shows the mixing API in a python block"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["mixed"].shape == namespace["images"].shape
    assert float(namespace["loss"]) > 0
