"""Every ```python block in README.md and docs/*.md runs, in order, per file."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"doc_{doc.stem}")  # a real module, as user code would be (freezegun patches those)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in BLOCK.findall(doc.read_text()):
        exec(compile(block, str(doc), "exec"), module.__dict__)
        printed = capsys.readouterr().out.splitlines()
        expected = [line.split("# -> ", 1)[1].strip() for line in block.splitlines() if "# -> " in line]
        if expected:  # lines marked "# -> text" must print exactly that text
            assert [line.strip() for line in printed[-len(expected):]] == expected
