"""The example plugins in docs/examples/ install with pip and work through the entry-point group."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """pip-install the example plugins into a private target dir and put it on sys.path."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLES / "mpr-preset-example"),
            str(EXAMPLES / "mpr-sink-jsonl"),
        ],
        check=True,
    )
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    from mpr.plugins import reset_plugins

    reset_plugins()
    yield target
    for mod in ("mpr_preset_example", "mpr_sink_jsonl"):
        sys.modules.pop(mod, None)
    reset_plugins()


async def test_example_preset_plugin_adds_presets_to_the_database(installed, sqlite_db):
    from mpr.models import TranscodePreset
    from mpr.plugins import load_plugins
    from mpr.presets import sync_presets

    registry = load_plugins()
    assert "example-square-480" in registry.presets
    assert registry.owners[("preset", "example-square-480")] == "mpr-preset-example"
    await sync_presets()
    row = await TranscodePreset.get(name="example-square-480")
    assert (row.width, row.height, row.source) == (480, 480, "mpr-preset-example")
    assert await TranscodePreset.filter(name="example-voice-opus", channels=1).exists()


async def test_example_sink_plugin_receives_job_events(installed, media, monkeypatch, tmp_path):
    """A sink registered through an installed plugin's register_event_sinks hook gets every JobEvent."""
    from mpr import events
    from mpr.plugins import load_plugins

    out = tmp_path / "events.jsonl"
    monkeypatch.setenv("MPR_JSONL_EVENTS", str(out))
    load_plugins()
    await events.emit(events.JobEvent(job_id="j-1", type=events.STATUS, status="processing"))
    await events.emit(events.JobEvent(job_id="j-1", type=events.PROGRESS, progress=42.0))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["type"], e["progress"]) for e in lines] == [("status", 0.0), ("progress", 42.0)]
