"""Fixtures for the chunker tests: small generated sources, a fast preset, a PROCESSING job, a sink."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest

from testkit import ffmpeg_bin, make_clip
from mpr import hookimpl
from mpr.presets import Preset

FAST = Preset(
    name="chunk-test",
    container="mp4",
    video_codec="libx264",
    crf=23,
    speed_preset="ultrafast",
    audio_codec="aac",
    audio_bitrate="96k",
    extra={"pix_fmt": "yuv420p", "faststart": True},
)


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


@dataclass
class Media:
    """What PyAV sees in a file: video frame times (s), thumbnails, audio start/length."""

    pts: list[float]
    thumbs: list[bytes]
    duration: float
    audio_start: float | None
    audio_seconds: float | None
    video_start: float | None


def _thumb(frame: av.VideoFrame) -> bytes:
    small = frame.reformat(width=48, height=36, format="gray")
    plane = small.planes[0]
    raw = bytes(plane)
    return b"".join(raw[r * plane.line_size : r * plane.line_size + 48] for r in range(36))


def inspect(path: Path, thumbs: bool = True) -> Media:
    """Decode ``path`` and describe it."""
    pts: list[float] = []
    pics: list[bytes] = []
    audio_start = audio_seconds = video_start = None
    with av.open(str(path)) as c:
        origin = (c.start_time or 0) / 1e6
        duration = (c.duration or 0) / 1e6
        if c.streams.video:
            v = c.streams.video[0]
            for f in c.decode(v):
                pts.append(float(f.pts * Fraction(f.time_base)) - origin)
                if thumbs:
                    pics.append(_thumb(f))
            video_start = pts[0] if pts else None
            if v.duration:
                duration = float(v.duration * v.time_base)
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = 0
            first = None
            rate = a.rate
            for f in c.decode(a):
                if first is None and f.pts is not None:
                    first = float(f.pts * Fraction(f.time_base))
                samples += f.samples
            audio_start = first
            audio_seconds = samples / rate if rate else None
    return Media(pts, pics, duration, audio_start, audio_seconds, video_start)


def diff(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two thumbnails."""
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def assert_same_frames(out: Media, src: Media) -> None:
    """Same count, same timestamps, and frame i of the output shows frame i of the source."""
    assert len(out.pts) == len(src.pts), f"{len(out.pts)} frames, source has {len(src.pts)}"
    for i, (a, b) in enumerate(zip(out.pts, src.pts, strict=True)):
        assert abs(a - b) < 1e-3, f"frame {i} at {a:.4f}s, source frame at {b:.4f}s"
    for i, pic in enumerate(out.thumbs):
        here = diff(pic, src.thumbs[i])
        for j in (i - 1, i + 1):
            # a neighbour that shows the same picture (a duplicated frame) cannot tell them apart
            if 0 <= j < len(src.thumbs) and diff(src.thumbs[j], src.thumbs[i]) > 1.0:
                assert here < diff(pic, src.thumbs[j]), f"output frame {i} looks like source frame {j}"


class RecordingSink:
    """An event sink (registered through the real plugin hook) that keeps what it receives."""

    def __init__(self) -> None:
        self.events: list = []

    async def emit(self, event) -> None:
        self.events.append(event)

    def of(self, job_id: str) -> list:
        return [e for e in self.events if e.job_id == job_id]


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
