"""EBU R128 loudness normalisation (``extra.loudnorm``) on every encode path, measured with ffmpeg's ebur128.

The sources are a 440 Hz tone 30 dB below the sine source's level (about
-52 LUFS) at 44.1 kHz, so an output at the target loudness and at 44.1 kHz
shows both that loudnorm ran and that its 192 kHz working rate was not kept.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from mpr import ffmpeg
from mpr.chunker.encode import encode_audio
from mpr.chunker.pipeline import Pipeline
from mpr.errors import ValidationError
from mpr.presets import Preset, validate_preset
from mpr.probe import stream_list
from testkit import ffmpeg_bin

RATE = 44100
TOLERANCE = 1.5  # LU
QUIET = f"sine=f=440:d=4:sample_rate={RATE},volume=-30dB"
LOUDER = f"sine=f=880:d=4:sample_rate={RATE},volume=-10dB"

VIDEO = Preset(
    name="ln-video",
    container="mp4",
    video_codec="libx264",
    crf=30,
    speed_preset="ultrafast",
    audio_codec="aac",
    audio_bitrate="96k",
    extra={"pix_fmt": "yuv420p", "loudnorm": -23},
)


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("loudnorm")
    video, tracks, tone = base / "quiet.mp4", base / "two-tracks.mkv", base / "quiet.wav"
    _ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-f", "lavfi", "-i", QUIET),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        str(video),
    )
    # two tracks 20 dB apart: each one is brought to the target on its own
    _ffmpeg(
        "-f", "lavfi", "-i", QUIET, "-f", "lavfi", "-i", LOUDER, "-map", "0", "-map", "1", "-c:a", "flac", str(tracks)
    )
    _ffmpeg("-f", "lavfi", "-i", QUIET, "-c:a", "pcm_s16le", str(tone))
    return {"video": video, "tracks": tracks, "tone": tone}


def loudness(path: Path, track: int = 0) -> float:
    """The integrated loudness (LUFS) of audio track ``track`` of ``path``: ffmpeg's ebur128 summary."""
    argv = [ffmpeg_bin(), "-hide_banner", "-nostats", "-i", str(path), "-map", f"0:a:{track}"]
    err = subprocess.run([*argv, "-af", "ebur128", "-f", "null", "-"], capture_output=True, text=True).stderr
    found = re.search(r"Integrated loudness:\s+I:\s+(-?[0-9.]+) LUFS", err)
    assert found, err[-500:]
    return float(found.group(1))


def audio(path: Path) -> list[dict]:
    return [s for s in stream_list(path) or [] if s["type"] == "audio"]


def test_source_is_quiet(sources) -> None:
    assert loudness(sources["video"]) < -45
    assert loudness(sources["tracks"], 1) - loudness(sources["tracks"], 0) > 15


@pytest.mark.parametrize("target", [-23, -16])
def test_single_pass_reaches_the_target_and_keeps_the_sample_rate(sources, tmp_path, target) -> None:
    preset = validate_preset(
        {"name": "ln", "container": "m4a", "audio_codec": "aac", "audio_bitrate": "96k", "extra": {"loudnorm": target}}
    )
    out = tmp_path / "o.m4a"
    ffmpeg.run(ffmpeg.build_command(sources["tone"], out, preset))
    assert abs(loudness(out) - target) <= TOLERANCE, loudness(out)
    assert [s["sample_rate"] for s in audio(out)] == [RATE]


def test_every_audio_track_is_normalised(sources, tmp_path) -> None:
    preset = validate_preset({"name": "ln", "container": "mkv", "audio_codec": "flac", "extra": {"loudnorm": -20}})
    out = tmp_path / "o.mkv"
    ffmpeg.run(ffmpeg.build_command(sources["tracks"], out, preset))
    levels = [loudness(out, n) for n in (0, 1)]
    assert all(abs(level + 20) <= TOLERANCE for level in levels), levels
    assert [s["sample_rate"] for s in audio(out)] == [RATE, RATE]


@pytest.mark.parametrize(
    ("container", "codec", "sample_rate", "expected"),
    [
        ("m4a", "aac", 48000, 48000),  # the preset's rate
        ("mp3", "libmp3lame", 22050, 22050),
        ("opus", "libopus", None, 48000),  # libopus takes no 44.1 kHz: the nearest rate it takes, as without loudnorm
        ("wav", "pcm_s16le", None, RATE),
    ],
)
def test_output_sample_rate(sources, tmp_path, container, codec, sample_rate, expected) -> None:
    data = {"name": "ln", "container": container, "audio_codec": codec, "extra": {"loudnorm": -16}}
    if sample_rate:
        data["sample_rate"] = sample_rate
    out = tmp_path / f"o.{container}"
    ffmpeg.run(ffmpeg.build_command(sources["tone"], out, validate_preset(data)))
    assert [s["sample_rate"] for s in audio(out)] == [expected]
    assert abs(loudness(out) + 16) <= TOLERANCE, loudness(out)


def test_trimmed_single_pass(sources, tmp_path) -> None:
    out = tmp_path / "o.mp4"
    ffmpeg.run(ffmpeg.build_command(sources["video"], out, VIDEO, start=0.5, end=3.5))
    assert abs(loudness(out) + 23) <= TOLERANCE, loudness(out)
    (track,) = audio(out)
    assert track["sample_rate"] == RATE
    assert track["duration"] == pytest.approx(3.0, abs=0.05)


def test_trimmed_audio_step_of_a_cloud_job(sources, tmp_path) -> None:
    # Lambda and Cloud Run encode a chunked job's audio with this same function
    out = encode_audio(sources["video"], VIDEO, tmp_path / "audio.mp4", start=1.0, end=3.5)
    assert abs(loudness(out) + 23) <= TOLERANCE, loudness(out)
    (track,) = audio(out)
    assert track["sample_rate"] == RATE
    assert track["duration"] == pytest.approx(2.5, abs=0.05)


async def test_chunked_job_normalises_its_one_audio_encode(sources, sqlite_db, tmp_path) -> None:
    from mpr import jobs
    from mpr.models import JobChunk, JobStatus, TranscodeJob

    job = await TranscodeJob.create(output_path="o.mp4", chunked=True, status=JobStatus.PENDING)
    await jobs.transition(job.id, JobStatus.PROCESSING)
    out = tmp_path / "o.mp4"
    await asyncio.to_thread(Pipeline(str(job.id), sources["video"], out, VIDEO, chunk_seconds=1, workers=2).run)
    assert await JobChunk.filter(job_id=job.id).count() >= 2  # really chunked, not one pass
    assert abs(loudness(out) + 23) <= TOLERANCE, loudness(out)
    assert [s["sample_rate"] for s in audio(out)] == [RATE]


def test_argv_has_the_documented_filter() -> None:
    assert ffmpeg.loudnorm_filter(-23) == "loudnorm=I=-23:TP=-1.5:LRA=11"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"video_codec": "libx264", "audio_codec": "copy"}, "audio_codec 'copy' keeps it"),
        ({"video_codec": "libx264", "audio_codec": None}, "loudnorm needs audio"),
        ({"container": "source", "video_codec": "copy", "audio_codec": "copy"}, "audio_codec 'copy'"),
        ({"container": "m4a", "audio_codec": "aac", "loudnorm": -4}, "integer from -70 to -5"),
        ({"container": "m4a", "audio_codec": "aac", "loudnorm": -71}, "integer from -70 to -5"),
        ({"container": "m4a", "audio_codec": "aac", "loudnorm": -23.5}, "integer from -70 to -5"),
        ({"container": "m4a", "audio_codec": "aac", "loudnorm": "-23"}, "integer from -70 to -5"),
        ({"container": "m4a", "audio_codec": "aac", "loudnorm": True}, "integer from -70 to -5"),
    ],
)
def test_refused(data, message) -> None:
    data = {"name": "ln", "container": "mp4", "loudnorm": -23, **data}
    target = data.pop("loudnorm")
    with pytest.raises(ValidationError, match=re.escape(message)):
        validate_preset({**data, "extra": {"loudnorm": target}})


def test_allowed_on_audio_only_presets() -> None:
    preset = validate_preset(
        {"name": "ln", "container": "mp3", "audio_codec": "libmp3lame", "extra": {"loudnorm": -16}}
    )
    assert preset.extra == {"loudnorm": -16}
    # with video-only options it is still those that are refused
    with pytest.raises(ValidationError, match="gop only apply when encoding video"):
        validate_preset({"name": "ln", "container": "m4a", "audio_codec": "aac", "extra": {"loudnorm": -16, "gop": 5}})
