"""Checks for chunked outputs: decode with PyAV and compare frames, timestamps and audio with the source."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from mpr import ffmpeg
from mpr.chunker.pipeline import run_chunked
from mpr.presets import Preset

AAC_FRAME = 1024 / 48000  # seconds of one AAC frame at 48 kHz

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


def source_index(src: Media, t: float) -> int:
    """Index of the first source frame at or after ``t`` seconds."""
    return next(i for i, p in enumerate(src.pts) if p >= t - 1e-6)


def assert_shows(pic: bytes, src: Media, k: int) -> None:
    """``pic`` looks more like source frame ``k`` than like its neighbours."""
    here = diff(pic, src.thumbs[k])
    for j in (k - 1, k + 1):
        if 0 <= j < len(src.thumbs) and diff(src.thumbs[j], src.thumbs[k]) > 1.0:
            assert here < diff(pic, src.thumbs[j]), f"frame looks like source frame {j}, not {k}"


def assert_like_single_pass(got: Media, ref: Media, src: Media, start: float | None, frame: float) -> None:
    """Same frame count and times as the single pass, each frame its picture, the trim's first frame first."""
    assert_same_frames(got, ref)
    first = source_index(src, start or 0.0)
    assert_shows(got.thumbs[0], src, first)  # starts at the trim start, not at the keyframe before it
    assert_shows(got.thumbs[-1], src, first + len(got.pts) - 1)  # no frame lost or repeated on the way
    assert abs(got.duration - ref.duration) <= frame + 1e-6, (got.duration, ref.duration)
    assert ref.audio_seconds is not None and got.audio_seconds is not None
    assert abs(got.audio_seconds - ref.audio_seconds) <= AAC_FRAME + 1e-6
    # in sync: the picture starts where the single pass's does, relative to the sound
    assert abs((got.video_start - got.audio_start) - (ref.video_start - ref.audio_start)) < 1e-3


def single_pass(source: Path, out: Path, preset: Preset, start: float | None = None, end: float | None = None) -> Path:
    """The reference: ``mpr.ffmpeg.build_command`` (with the trim, if any), one ffmpeg run."""
    ffmpeg.run(ffmpeg.build_command(source, out, preset, start=start, end=end))
    return out


async def chunked(
    job_id: str,
    source: Path,
    out: Path,
    preset: Preset,
    chunk_seconds: float = 1.0,
    workers: int = 2,
    start: float | None = None,
    end: float | None = None,
) -> Path:
    """``out`` encoded by the chunk pipeline (trimmed to ``start``/``end`` if given)."""
    await asyncio.to_thread(
        run_chunked,
        job_id,
        source,
        out,
        preset,
        chunk_seconds=chunk_seconds,
        workers=workers,
        cancel=threading.Event(),
        trim_start=start,
        trim_end=end,
    )
    return out


class RecordingSink:
    """An event sink (registered through the real plugin hook) that keeps what it receives."""

    def __init__(self) -> None:
        self.events: list = []

    async def emit(self, event) -> None:
        self.events.append(event)

    def of(self, job_id: str) -> list:
        return [e for e in self.events if e.job_id == job_id]
