"""Fixtures for the chunker tests: small generated sources, a fast preset, a PROCESSING job, a sink."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from mpr import hookimpl
from mpr.presets import Preset
from testkit import ffmpeg_bin, make_clip
from tests.chunker.chunkcheck import FAST, RecordingSink


@pytest.fixture
def preset() -> Preset:
    """An ultrafast H.264 + AAC preset (fast enough for many small encodes)."""
    return FAST


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated sources: normal (keyframe every 1 s), sparse keyframes, VFR, short, audio-only."""
    base = tmp_path_factory.mktemp("chunk-src")
    return {
        "normal": make_clip(base / "normal.mp4", seconds=4.0, gop=25),
        # keyframes only every 2.4 s although chunks are asked for every 1 s
        "sparse": make_clip(base / "sparse.mp4", seconds=5.0, gop=60),
        # variable frame rate: every 7th frame dropped, timestamps kept (gaps of 80 ms between some frames)
        "vfr": make_clip(
            base / "vfr.mp4",
            seconds=4.0,
            gop=15,
            extra=["-vf", "select='not(eq(mod(n\\,7)\\,3))'", "-fps_mode", "vfr"],
        ),
        "short": make_clip(base / "short.mp4", seconds=0.6, gop=12),
        "audio": make_clip(base / "tone.m4a", seconds=2.0, video=False),
        "late_video": _late_video(base / "late.mp4"),
    }


def _late_video(path: Path) -> Path:
    # the picture starts 0.2 s after the sound (video pts start at 0.2, audio at 0)
    args = [
        ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y",
        "-itsoffset", "0.2", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3.2",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-fps_mode", "passthrough",
        "-c:a", "aac", str(path),
    ]  # fmt: skip
    subprocess.run(args, check=True)
    return path


@pytest.fixture
def sink(media):
    """A RecordingSink plugged in via ``register_event_sinks``; removed afterwards."""
    from mpr.plugins import register_plugin, unregister_plugin

    recorder = RecordingSink()

    class Plugin:
        @hookimpl
        def register_event_sinks(self, register, settings):
            register(recorder)

    plugin = Plugin()
    register_plugin(plugin, name=f"chunk-test-sink-{uuid.uuid4().hex[:6]}")
    try:
        yield recorder
    finally:
        unregister_plugin(plugin)


@pytest.fixture
def new_job():
    """Create a PROCESSING chunked TranscodeJob and return its id (str)."""
    from mpr import jobs
    from mpr.models import JobStatus, TranscodeJob

    async def create(**fields) -> str:
        job = await TranscodeJob.create(
            output_path=f"out-{uuid.uuid4().hex[:8]}.mp4", chunked=True, status=JobStatus.PENDING, **fields
        )
        await jobs.transition(job.id, JobStatus.PROCESSING)
        return str(job.id)

    return create
