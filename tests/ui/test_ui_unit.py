"""The UIs' JavaScript unit tests (vitest, ui/src/**/*.test.ts), run as part of the Python suite.

They cover the pure logic the browser tests only reach through the DOM: the chunk pipeline
reducer, the timeline's trim math, the formatters, GraphQL error handling and the resumable
gRPC-Web stream (against a real gRPC-Web server in Node). ``ui_build`` (tests/ui/conftest.py)
has installed ui/node_modules, generated the protobuf code and type-checked the tests, once per
session; this only runs vitest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit import require

UI = Path(__file__).resolve().parents[2] / "ui"


def test_vitest_unit_tests_pass(request: pytest.FixtureRequest) -> None:
    # checked here, not only in the fixture, so a missing Node.js is this test's failure
    require("node", shutil.which("node") is not None, "Node.js runs the UI unit tests")
    require("npm", shutil.which("npm") is not None, "npm installs the UI's packages")
    request.getfixturevalue("ui_build")
    vitest = UI / "node_modules" / ".bin" / "vitest"
    assert vitest.exists(), f"{vitest} is missing: ui/package-lock.json should install vitest"
    env = {**os.environ, "NO_COLOR": "1", "CI": "1"}
    result = subprocess.run(
        [str(vitest), "run"], cwd=UI, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"vitest failed (exit {result.returncode}):\n{output}"
    # vitest exits 0 with "No test files found" only if told to; make sure tests really ran
    counts = re.search(r"Tests\s+(\d+) passed \((\d+)\)", output)
    assert counts, f"no vitest summary in its output:\n{output}"
    assert int(counts.group(1)) == int(counts.group(2)) >= 50, output
