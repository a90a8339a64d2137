"""What a trimmed output's subtitles must be: the source's cues clipped to the trim and counted from its start,
without moving the video or audio (shared by the single pass and the chunker tests; real ffmpeg)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from testkit import ffmpeg_bin

FRAME = 1 / 25
# cues before, across and after the trims of the tests; keyframes every second (gop 25 at 25 fps)
SRT = "1\n00:00:00,200 --> 00:00:00,900\nOne\n\n2\n00:00:01,200 --> 00:00:02,300\nTwo\n\n3\n00:00:02,500 --> 00:00:03,600\nThree\n"
# (start, end) of the trims: start on a keyframe (1.0) and off one (1.3), start only, end only, both
TRIMS = [(1.0, None), (1.3, None), (None, 2.0), (1.0, 3.0), (1.3, 3.2)]
TRIM_IDS = ["start-on-keyframe", "start-off-keyframe", "end-only", "both-on-keyframe", "both-off-keyframe"]


def make_subtitled(base: Path, container: str = "mkv") -> Path:
    """4 s of 160x120 H.264 + AAC with a text subtitle track (three cues; srt in mkv, mov_text in mp4) in ``base``,
    its language and title set and marked forced."""
    (base / "s.srt").write_text(SRT)
    path = base / f"subs.{container}"
    args = [
        ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
        "-i", str(base / "s.srt"),
        "-map", "0", "-map", "1", "-map", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-c:s", "srt" if container == "mkv" else "mov_text",
        "-metadata:s:s:0", "language=fra", "-metadata:s:s:0", "title=French", "-disposition:s:0", "forced",
        str(path),
    ]  # fmt: skip
    subprocess.run(args, check=True)
    return path


def cues(path: Path) -> list[tuple[str, float, float]]:
    """(text, start s, end s) of every non-empty subtitle packet of ``path``, as stored."""
    out = []
    with av.open(str(path)) as c:
        for stream in c.streams.subtitles:
            codec = stream.codec_context.name
            for packet in c.demux(stream):
                if packet.pts is None:
                    continue
                raw = bytes(packet)
                text = (raw[2:] if codec == "mov_text" else raw).decode().strip()
                if text:
                    start = float(packet.pts * packet.time_base)
                    out.append((text, start, start + float((packet.duration or 0) * packet.time_base)))
    return out


def expected_cues(source: Path, start: float | None, end: float | None, shift: float = 0.0) -> list:
    """The source's cues cut to ``start``..``end`` and counted from ``start`` (plus ``shift``)."""
    s = start or 0.0
    out = []
    for text, a, b in cues(source):
        if end is not None:
            b = min(b, end)
        a = max(a, s)
        if b > a:
            out.append((text, a - s + shift, b - s + shift))
    return out


def assert_same_cues(got: list, want: list) -> None:
    """Same texts, each start and end within one frame."""
    assert [t for t, _, _ in got] == [t for t, _, _ in want]
    for (text, start, end), (_, want_start, want_end) in zip(got, want, strict=True):
        assert start == pytest.approx(want_start, abs=FRAME), (text, got, want)
        assert end == pytest.approx(want_end, abs=FRAME), (text, got, want)


def timing(path: Path) -> dict[str, list[tuple[float, float]]]:
    """(pts, duration) in seconds of every video and audio packet of ``path``, by stream type (``video``, ``audio``)."""
    out: dict[str, list] = {"video": [], "audio": []}
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type in out]
        for packet in c.demux(streams):
            if packet.size:
                tb = packet.time_base
                out[packet.stream.type].append((float(packet.pts * tb), float((packet.duration or 0) * tb)))
    return out


def keyframe_before(source: Path, t: float) -> float:
    """Time of the source's last video keyframe at or before ``t`` (where a stream copy's -ss starts)."""
    with av.open(str(source)) as c:
        stream = c.streams.video[0]
        times = [float(p.pts * p.time_base) for p in c.demux(stream) if p.pts is not None and p.is_keyframe]
    return max(k for k in times if k <= t + 1e-6)


def subtitle_tags(path: Path) -> list[tuple[str | None, str | None, bool]]:
    """(language, title, forced) of every subtitle stream of ``path``."""
    with av.open(str(path)) as c:
        return [
            (s.metadata.get("language"), s.metadata.get("title"), bool(s.disposition & av.stream.Disposition.forced))
            for s in c.streams.subtitles
        ]
