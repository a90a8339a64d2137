"""Meta-tests (like datasette's): every hook is documented in docs/plugins.md and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mpr import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "mpr_spec")]


def test_there_are_hooks():
    assert {
        "register_executors",
        "register_storage_backends",
        "register_presets",
        "register_event_sinks",
        "register_commands",
        "startup",
    } <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str):
    doc = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### {hook}\n" in doc, f"docs/plugins.md has no section for {hook}"
    assert inspect.getdoc(getattr(hookspecs, hook)), f"{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_an_implementation_under_test(hook: str):
    """Some plugin implements the hook, and some test file names that plugin or the hook."""
    sources = list((ROOT / "mpr").rglob("*.py")) + list((ROOT / "plugins").rglob("*.py"))
    sources += list((ROOT / "docs" / "examples").rglob("*.py"))
    impls = [p for p in sources if f"def {hook}(" in p.read_text() and "hookspecs.py" not in p.name]
    assert impls, f"no plugin implements {hook}"
    tests = list((ROOT / "tests").rglob("test_*.py")) + list((ROOT / "plugins").rglob("tests/test_*.py"))
    assert any(hook in t.read_text() for t in tests if t.name != Path(__file__).name), f"no test mentions {hook}"
