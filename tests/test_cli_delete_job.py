"""`mpr delete ID [--output]`: a finished job goes, its output only when asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mpr.cli import main


@pytest.fixture
def cli(media, capsys):
    """Run ``mpr ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    EXECUTOR_CACHE.clear()

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _job_id(cli, output: Path) -> str:
    code, out, _ = cli("jobs")
    assert code == 0
    line = next(line for line in out.splitlines() if line.rstrip().endswith(output.name))
    return line.split()[0]


def test_delete_keeps_or_removes_the_output(cli, media, clips) -> None:
    shutil.copyfile(clips["video"], media["in"] / "clip.mp4")
    outputs = []
    for name in ("kept", "dropped"):
        code, out, err = cli("transcode", "clip.mp4", "--preset", "copy", "-o", name, "--no-progress")
        assert code == 0, err
        outputs.append(Path(out.strip().splitlines()[-1]))
    kept, dropped = outputs
    kept_id, dropped_id = _job_id(cli, kept), _job_id(cli, dropped)

    code, out, err = cli("delete", kept_id)
    assert code == 0, err
    assert f"job {kept_id} deleted" in out and kept.is_file()
    code, out, err = cli("delete", dropped_id, "--output")
    assert code == 0 and "with its output" in out and not dropped.exists()
    code, out, _ = cli("jobs")
    assert kept_id not in out and dropped_id not in out

    code, _, err = cli("delete", kept_id)
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    code, _, err = cli("delete", "xyz", "--output")
    assert code == 1 and "not a valid job id" in err
