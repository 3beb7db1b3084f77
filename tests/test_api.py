"""The public namespace: every name of ``rk.__all__`` is there, loaded on first use where it is lazy,
and what type checkers read (the ``TYPE_CHECKING`` block) is what runs."""

from __future__ import annotations

import ast
import subprocess

import pytest

import replaykit as rk

from conftest import PYTHON, ROOT


def _type_checking_imports() -> dict[str, str]:
    """name -> module, as the ``if TYPE_CHECKING:`` block of replaykit/__init__.py imports it."""
    tree = ast.parse((ROOT / "replaykit" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.asname or alias.name: "." * node.level + (node.module or "")
            for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_the_lazy_names_are_the_ones_type_checkers_read() -> None:
    assert _type_checking_imports() == rk._WHERE


@pytest.mark.parametrize("name", rk.__all__)
def test_every_public_name_is_the_object_its_module_defines(name: str) -> None:
    value = getattr(rk, name)
    assert name in dir(rk)
    if name in rk._WHERE:
        module = __import__("replaykit" + rk._WHERE[name], fromlist=[name])
        assert value is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Enginee'"):
        rk.Enginee  # type: ignore[attr-defined]  # noqa: B018


def test_import_replaykit_loads_no_engine_and_first_use_loads_it(child_env: dict[str, str]) -> None:
    code = ("import sys, replaykit as rk\n"
            "print('replaykit.runtime' in sys.modules, 'replaykit.store' in sys.modules)\n"
            "import replaykit.restarting\n"  # a submodule loaded first does not hide the function of its name
            "print(rk.Engine.__name__, rk.restart.__module__, 'replaykit.runtime' in sys.modules)\n")
    done = subprocess.run([PYTHON, "-c", code], env=child_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False False", "Engine replaykit.restarting True"]
