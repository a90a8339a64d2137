"""``mpr worker``, ``mpr serve --no-worker`` and ``mpr grpc`` warn at start-up when MPR_REDIS_URL is unset.

Each command runs as a real subprocess, set up to stop right after start-up (an unreachable database,
an executor that is not installed) or, for ``mpr grpc``, stopped with SIGTERM once it listens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

MPR = str(Path(sys.executable).parent / "mpr")
NO_DB = "postgres://nobody@127.0.0.1:1/none"  # refused at once: the command stops after its start-up checks
WARNING = "without MPR_REDIS_URL"

CASES = {
    "worker": (["worker"], {"MPR_DATABASE_URL": NO_DB}),
    "grpc": (["grpc"], {"MPR_GRPC_PORT": "0"}),
    "serve --no-worker": (["serve", "--no-worker"], {"MPR_EXECUTOR": "not-installed"}),
}


def run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MPR_", "MEDIA_"))}
    base.update(MEDIA_IN=str(tmp_path / "in"), MEDIA_OUT=str(tmp_path / "out"), MPR_VAR_DIR=str(tmp_path / "var"))
    base.update(env)
    if args != ["grpc"]:
        return subprocess.run([MPR, *args], env=base, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    # mpr grpc serves until stopped: read its start-up output up to "listening", then SIGTERM
    proc = subprocess.Popen([MPR, *args], env=base, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        for line in proc.stderr:  # ends at EOF if it exits early
            lines.append(line)
            if "listening on" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stderr.close()
    assert any("listening on" in x for x in lines), "".join(lines)
    return subprocess.CompletedProcess(proc.args, 1, "", "".join(lines) + "Error: stopped by the test\n")


@pytest.mark.parametrize("case", list(CASES))
def test_a_process_whose_events_others_need_warns_once_without_redis(case, tmp_path) -> None:
    args, env = CASES[case]
    result = run(args, env, tmp_path)
    assert result.returncode != 0  # stopped by the set-up error, after start-up printed the warning
    assert result.stderr.count(WARNING) == 1, result.stderr
    line = next(x for x in result.stderr.splitlines() if WARNING in x)
    assert line.startswith(f"Warning: mpr {case} without MPR_REDIS_URL") and "live progress" in line


@pytest.mark.parametrize("case", list(CASES))
def test_no_warning_with_redis(case, tmp_path) -> None:
    args, env = CASES[case]
    result = run(args, {**env, "MPR_REDIS_URL": "redis://127.0.0.1:6379/15"}, tmp_path)
    assert result.returncode != 0 and "Error" in result.stderr, result.stderr  # it got as far as before
    assert WARNING not in result.stderr


def test_serve_with_its_embedded_worker_does_not_warn(tmp_path) -> None:
    result = run(["serve"], {"MPR_EXECUTOR": "not-installed"}, tmp_path)
    assert result.returncode != 0 and "not-installed" in result.stderr, result.stderr
    assert WARNING not in result.stderr
