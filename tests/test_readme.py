"""The README's Python blocks run, in order and in one namespace, so they stay true."""

from __future__ import annotations

import re
import shutil

from tests.conftest import REPO


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run(reverse_run_dir, tmp_path, monkeypatch):
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    shutil.copytree(reverse_run_dir, tmp_path / "runs" / "reverse")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)
