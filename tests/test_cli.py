"""The `mpr` command line as a user runs it (in-process `main()`, and once as a real process)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import av
import pytest

from mpr.cli import main
from mpr.probe import probe

FRAME = 1 / 25


@pytest.fixture
def cli(media, capsys):
    """Run ``mpr ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    EXECUTOR_CACHE.clear()  # a PostgreSQL test before may have cached its SQL dialect

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def frames_decoded(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_sample_then_transcode_gives_a_playable_file_of_the_same_duration(cli, media) -> None:
    code, out, _ = cli("sample", "--seconds", "3")
    assert code == 0 and (media["in"] / "sample.mp4").exists()
    code, out, _ = cli("sample")
    assert code == 0 and "already has media" in out

    code, out, err = cli("transcode", str(media["in"] / "sample.mp4"), "--preset", "h264-720p", "--no-progress")
    assert code == 0, err
    output = Path(out.strip().splitlines()[-1])
    assert output == media["out"] / "sample_h264-720p.mp4" and output.is_file()
    src, dst = probe(media["in"] / "sample.mp4"), probe(output)
    assert abs(dst.duration - src.duration) <= FRAME
    assert frames_decoded(output) == 75  # every frame decodes: 3 s at 25 fps
    assert (dst.video_codec, dst.audio_codec) == ("h264", "aac")

    code, out, _ = cli("jobs")
    assert code == 0 and "completed" in out and "sample_h264-720p.mp4" in out
    # SIZE: the output's change against the source, in percent
    change = round((output.stat().st_size / (media["in"] / "sample.mp4").stat().st_size - 1) * 100)
    assert f" {change:+d}% {output.relative_to(media['out'])}" in out, out


def test_trim_by_key_with_progress_bar(cli, media, clips) -> None:
    shutil.copyfile(clips["video"], media["in"] / "clip.mp4")
    code, out, err = cli("transcode", "clip.mp4", "--preset", "copy", "--start", "0", "--end", "2")
    assert code == 0, err
    assert probe(Path(out.strip())).duration == pytest.approx(2.0, abs=0.1)
    assert "100%" in err  # the tqdm bar
    assert "% ," not in err and "100%, " in err  # speed after the percentage, no stray separator


def test_scan_and_presets(cli, media, clips) -> None:
    shutil.copyfile(clips["video"], media["in"] / "a.mp4")
    shutil.copyfile(clips["garbage"], media["in"] / "b.mkv")
    code, out, err = cli("scan")
    assert code == 0 and "found 2, registered 2, skipped 0" in out and "b.mkv" in err
    code, out, _ = cli("scan")
    assert "found 2, registered 0, skipped 2" in out
    code, out, _ = cli("presets")
    assert code == 0 and all(name in out for name in ("h264-720p", "vp9-webm", "flac-audio", "copy"))


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["transcode", "/etc/hostname", "--preset", "copy"], "is not under MEDIA_IN"),
        (None, ["transcode", "nope.mp4", "--preset", "copy"], "does not exist"),
        (None, ["transcode", "../etc/passwd", "--preset", "copy"], "does not exist"),
        ("clip.mp4", ["transcode", "clip.mp4", "--preset", "nope"], "preset nope does not exist"),
        ("clip.mp4", ["transcode", "clip.mp4", "--preset", "copy", "--start", "2", "--end", "1"], "must be after"),
        ("clip.mp4", ["transcode", "clip.mp4", "--preset", "copy", "--end", "99"], "past the end"),
        ("notes.txt", ["transcode", "notes.txt", "--preset", "copy"], "not a supported media file"),
        ("bad.mp4", ["transcode", "bad.mp4", "--preset", "copy"], "cannot be processed"),
        (None, ["cancel", "xyz"], "not a valid job id"),
        (None, ["retry", str(uuid.UUID(int=1))], "does not exist"),
    ],
)
def test_bad_input_gives_a_clean_error(cli, media, clips, setup, args, message) -> None:
    if setup == "clip.mp4":
        shutil.copyfile(clips["video"], media["in"] / setup)
    elif setup == "bad.mp4":
        shutil.copyfile(clips["truncated"], media["in"] / setup)
    elif setup:
        (media["in"] / setup).write_text("hello")
    code, out, err = cli(*args)
    assert code == 1
    assert message in err and "Traceback" not in err


def test_copy_in_imports_a_file_from_elsewhere(cli, media, clips) -> None:
    code, out, err = cli("transcode", str(clips["audio"]), "--preset", "mp3-audio", "--copy-in", "--no-progress")
    assert code == 0, err
    assert (media["in"] / "imports" / "tone.mp3").exists()
    assert Path(out.strip()).name == "tone_mp3-audio.mp3"


def test_queue_submits_to_the_configured_executor(cli, media, clips) -> None:
    shutil.copyfile(clips["video"], media["in"] / "clip.mp4")
    code, out, err = cli("transcode", "clip.mp4", "--preset", "copy", "--queue")
    assert code == 0, err
    job_id = out.strip()
    uuid.UUID(job_id)
    code, out, _ = cli("jobs", "--status", "pending")
    assert job_id in out
    code, out, _ = cli("cancel", job_id)
    assert code == 0 and "cancelled" in out


def test_real_console_script_exit_status(media) -> None:
    mpr = Path(shutil.which("mpr") or Path(__file__).parents[1] / ".venv/bin/mpr")
    proc = subprocess.run(
        [str(mpr), "transcode", "/nonexistent.mp4", "--preset", "copy"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error:") or "\nError:" in proc.stderr
    assert "Traceback" not in proc.stderr
