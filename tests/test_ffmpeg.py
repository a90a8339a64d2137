"""Command building and running ffmpeg: presets, trims, progress, errors, cancel."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from mpr import ffmpeg
from mpr.builtin_presets import STATIC_PRESETS, av1_preset
from mpr.errors import FFmpegError, ValidationError
from mpr.presets import Preset
from mpr.probe import probe
from testkit import make_clip

PRESETS = {p.name: p for p in STATIC_PRESETS}
FRAME = 1 / 25


def encode(src: Path, dst: Path, preset: Preset, **kw) -> list[ffmpeg.Progress]:
    seen: list[ffmpeg.Progress] = []
    argv = ffmpeg.build_command(src, dst, preset, **kw)
    ffmpeg.run(argv, duration=3.0, on_progress=seen.append)
    return seen


def test_argv_is_a_list_with_progress_and_no_shell(clips, tmp_path: Path) -> None:
    argv = ffmpeg.build_command(clips["video"], tmp_path / "o.mp4", PRESETS["h264-720p"])
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert argv[argv.index("-progress") + 1] == "pipe:1" and "-nostats" in argv
    assert argv[argv.index("-c:v") + 1] == "libx264" and argv[argv.index("-crf") + 1] == "23"
    assert argv[argv.index("-f") + 1] == "mp4"


def test_paths_starting_with_a_dash_are_not_options(clips, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = Path("-i.mp4")
    src.write_bytes(clips["video"].read_bytes())
    argv = ffmpeg.build_command(src, Path("-y.mp4"), PRESETS["copy"])
    assert not any(a in ("-i.mp4", "-y.mp4") for a in argv)
    assert f"file:{tmp_path / '-i.mp4'}" in argv
    ffmpeg.run(argv)
    assert probe(tmp_path / "-y.mp4").duration == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize(
    ("name", "ext", "vcodec", "acodec"),
    [
        ("h264-720p", "mp4", "h264", "aac"),
        ("vp9-webm", "webm", "vp9", "opus"),
        ("aac-audio", "m4a", None, "aac"),
        ("mp3-audio", "mp3", None, "mp3"),
        ("flac-audio", "flac", None, "flac"),
    ],
)
def test_presets_produce_the_promised_streams(clips, tmp_path: Path, name, ext, vcodec, acodec) -> None:
    preset = PRESETS[name]
    assert ffmpeg.output_extension(preset, "x.mp4") == ext
    out = tmp_path / f"o.{ext}"
    progress = encode(clips["video"], out, preset)
    r = probe(out)
    assert (r.video_codec, r.audio_codec) == (vcodec, acodec)
    assert r.duration == pytest.approx(3.0, abs=0.1)
    assert progress and progress[-1].percent == 100.0 and progress[-1].eta == 0.0


def test_height_preset_never_upscales_and_keeps_aspect(tmp_path: Path) -> None:
    big = make_clip(tmp_path / "big.mp4", seconds=0.2, size="1440x900", audio=False)
    out = tmp_path / "o.mp4"
    ffmpeg.run(ffmpeg.build_command(big, out, PRESETS["h264-720p"]))
    r = probe(out)
    assert r.height == 720 and r.width == 1152  # 1440x900 scaled to height 720, aspect kept
    small = make_clip(tmp_path / "small.mp4", seconds=0.2, size="320x240", audio=False)
    ffmpeg.run(ffmpeg.build_command(small, out, PRESETS["h264-720p"]))
    assert (probe(out).width, probe(out).height) == (320, 240)


def test_accurate_trim_when_reencoding(clips, tmp_path: Path) -> None:
    out = tmp_path / "trim.mp4"
    encode(clips["video"], out, PRESETS["h264-720p"], start=0.52, end=2.0)
    assert probe(out).duration == pytest.approx(1.48, abs=FRAME + 0.03)


def test_copy_preset_keeps_the_container_and_codecs(clips, tmp_path: Path) -> None:
    copy = PRESETS["copy"]
    assert ffmpeg.output_extension(copy, "dir/x.MKV") == "mkv"
    out = tmp_path / "o.mp4"
    argv = ffmpeg.build_command(clips["video"], out, copy, start=1.0)
    assert argv[argv.index("-c:v") + 1] == "copy" and "-f" not in argv
    ffmpeg.run(argv)
    r = probe(out)
    assert (r.video_codec, r.audio_codec) == ("h264", "aac")


def test_audio_and_video_can_be_dropped(clips, tmp_path: Path) -> None:
    argv = ffmpeg.build_command(clips["video"], tmp_path / "v.mp4", PRESETS["h264-720p"], audio=False)
    assert "-an" in argv and "-c:a" not in argv
    argv = ffmpeg.build_command(clips["video"], tmp_path / "a.m4a", PRESETS["aac-audio"])
    assert "-vn" in argv


def test_bad_trims_are_refused(clips, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="after"):
        ffmpeg.build_command(clips["video"], tmp_path / "o.mp4", PRESETS["copy"], start=2.0, end=1.0)
    with pytest.raises(ValidationError):
        ffmpeg.build_command(clips["video"], tmp_path / "o.mp4", PRESETS["copy"], start=-1.0)


def test_av1_preset_only_with_an_encoder() -> None:
    assert av1_preset(frozenset()) is None
    assert av1_preset(frozenset({"libaom-av1"})).video_codec == "libaom-av1"
    assert av1_preset(frozenset({"libaom-av1", "libsvtav1"})).video_codec == "libsvtav1"
    assert "libx264" in ffmpeg.available_encoders()


def test_failure_raises_with_the_stderr_tail(clips, tmp_path: Path) -> None:
    with pytest.raises(FFmpegError) as info:
        ffmpeg.run(ffmpeg.build_command(clips["garbage"], tmp_path / "o.mp4", PRESETS["h264-720p"]))
    assert info.value.returncode not in (0, None)
    assert "Invalid data" in str(info.value) or "Invalid data" in info.value.stderr_tail


def test_missing_binary_is_an_ffmpeg_error(clips, tmp_path: Path) -> None:
    argv = ffmpeg.build_command(clips["video"], tmp_path / "o.mp4", PRESETS["copy"], ffmpeg="/nonexistent/ffmpeg")
    with pytest.raises(FFmpegError, match="cannot start ffmpeg"):
        ffmpeg.run(argv)


def test_cancel_kills_ffmpeg(clips, tmp_path: Path) -> None:
    # a slow endless encode of a looped source, so it is surely running when cancelled
    slow = Preset(name="slow", container="mkv", video_codec="libx264", speed_preset="veryslow", crf=10)
    argv = ffmpeg.build_command(clips["video"], tmp_path / "o.mkv", slow)
    argv[1:1] = ["-stream_loop", "-1", "-re"]
    cancel = threading.Event()
    progress: list[ffmpeg.Progress] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            ffmpeg.run(argv, duration=1000, on_progress=progress.append, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    deadline = time.monotonic() + 15
    while not progress and time.monotonic() < deadline:
        time.sleep(0.05)
    assert progress, "ffmpeg reported no progress"
    cancel.set()
    # the encode is endless: only the kill ends it (about 0.3 s when idle; generous for a busy CI machine)
    t.join(30)
    assert not t.is_alive()
    assert isinstance(errors[0], ffmpeg.Cancelled)
    # the process group is gone: no ffmpeg of ours writing o.mkv remains
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert str(tmp_path / "o.mkv").encode() not in cmdline


def test_parse_progress() -> None:
    block = {"out_time_us": "1500000", "fps": "50.0", "speed": "2.5x", "progress": "continue"}
    p = ffmpeg.parse_progress(block, 3.0, time.monotonic())
    assert (p.out_time, p.percent, p.fps, p.speed) == (1.5, 50.0, 50.0, 2.5)
    assert p.eta == pytest.approx(0.6)
    end = ffmpeg.parse_progress({"out_time": "00:00:03.000000", "speed": "N/A", "progress": "end"}, 3.0, 0.0)
    assert (end.percent, end.eta) == (100.0, 0.0)


def test_parse_progress_measures_fps_when_ffmpeg_reports_zero() -> None:
    """ffmpeg prints fps=0.00 for its first second; a short chunk never gets past it."""
    started = time.monotonic() - 0.5
    p = ffmpeg.parse_progress({"out_time_us": "1000000", "frame": "25", "fps": "0.00", "speed": "2x"}, 4.0, started)
    assert 25 < p.fps <= 50  # 25 frames in a bit more than 0.5 s
    for frame in ("0", "", "N/A"):
        assert ffmpeg.parse_progress({"frame": frame, "fps": "0.00"}, 4.0, started).fps == 0.0
    assert ffmpeg.parse_progress({"frame": "25", "fps": "30.5"}, 4.0, started).fps == 30.5  # ffmpeg's own wins


def test_ffmpeg_runs_at_a_lower_priority_so_the_api_stays_responsive(tmp_path, monkeypatch):
    """MPR_FFMPEG_NICE (default 10) is applied to the ffmpeg process; 0 leaves it alone."""
    import threading

    from mpr import ffmpeg
    from mpr.settings import get_settings

    seen: dict[str, int] = {}
    real_lower = ffmpeg._lower_priority

    def spy(pid: int) -> None:
        real_lower(pid)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, pid)

    monkeypatch.setattr(ffmpeg, "_lower_priority", spy)
    argv = [ffmpeg.ffmpeg_binary(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5:duration=0.4",
            "-f", "null", "-"]  # fmt: skip
    for value, expected in (("7", 7), ("0", os.getpriority(os.PRIO_PROCESS, 0))):
        monkeypatch.setenv("MPR_FFMPEG_NICE", value)
        get_settings.cache_clear()
        ffmpeg.run(list(argv), cancel=threading.Event())
        assert seen["nice"] == expected
    get_settings.cache_clear()


def test_ffmpeg_runs_without_the_secrets_in_its_environment(tmp_path, monkeypatch):
    """ffmpeg (and a wrapper script in its place) never sees MPR's token, passwords or cloud credentials."""
    secrets = {
        "MPR_API_TOKEN": "tok",
        "MPR_ADMIN_PASSWORD": "pw",
        "MPR_CALLBACK_SECRET": "cb",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "AWS_SESSION_TOKEN": "sess",
        "AWS_ACCESS_KEY_ID": "AKIA",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MPR_LOG_LEVEL", "INFO")
    dump = tmp_path / "env.txt"
    ffmpeg.run(["/bin/sh", "-c", 'env > "$0"', str(dump)])  # any program: run() starts argv as given
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert not set(secrets) & set(seen), sorted(set(secrets) & set(seen))
    assert seen["MPR_LOG_LEVEL"] == "INFO" and seen[ffmpeg.OWNER_ENV] == ffmpeg.owner_token()
