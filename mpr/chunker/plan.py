"""Chunk planning: cut a video into time segments at its own keyframes.

A cut is only ever placed on a source keyframe, so each chunk decodes on
its own from its first packet: ffmpeg's input seek lands exactly on that
keyframe and no frame is decoded twice or lost. Times are seconds relative
to the file's start (what ``ffmpeg -ss`` means), rounded to microseconds
the same way ffmpeg rounds them, and each chunk carries its exact frame
count so an encode can stop at the frame before the next cut.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mpr.errors import ProbeError

# A trailing chunk shorter than this share of chunk_seconds is merged into the one before.
MIN_TAIL_SHARE = 0.25

_QUERY = re.compile(r"(https?://[^\s?#'\"]*)\?[^\s#'\"]*")


def is_url(source: str | Path) -> bool:
    """True when ``source`` is an http(s) URL (a presigned object URL) rather than a local file."""
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def redact(text: str) -> str:
    """``text`` with the query string of every http(s) URL in it replaced (presigned URLs carry a signature)."""
    return _QUERY.sub(r"\1?<redacted>", text or "")


def source_name(source: str | Path) -> str:
    """How errors name ``source``: a file's name, or a URL without its query string."""
    return redact(str(source)) if is_url(source) else Path(source).name


@dataclass(frozen=True)
class Chunk:
    """One time segment ``[start, end)`` of the source (seconds from the file's start).

    ``frames`` is the number of video frames in the segment (0 = unknown: the
    encode stops by time instead). ``end`` of the last chunk is the end of
    the video.
    """

    index: int
    start: float
    end: float
    frames: int = 0

    @property
    def duration(self) -> float:
        """Length of the segment in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (what cloud executors send to their workers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunk:
        """Inverse of :meth:`to_dict`."""
        return cls(
            index=int(data["index"]),
            start=float(data["start"]),
            end=float(data["end"]),
            frames=int(data.get("frames", 0)),
        )


@dataclass(frozen=True)
class VideoIndex:
    """The video packets of a file: sorted pts (µs from the file's start) and keyframe pts."""

    frame_us: list[int]
    keyframe_us: list[int]
    end_us: int


def _us(pts: int, time_base: Fraction) -> int:
    # av_rescale_q rounds to nearest, halves away from zero; keep the same convention.
    value = Fraction(pts) * time_base * 1_000_000
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


def index_video(source: str | Path) -> VideoIndex | None:
    """Demux (no decoding) the first video stream; None when the file has no video.

    ``source`` is a local file or an http(s) URL; errors name a URL without its query (signature).
    """
    name = source_name(source)
    try:
        container = av.open(str(source))
    except (av.FFmpegError, OSError) as exc:
        raise ProbeError(f"cannot read {name}: {redact(str(exc))}") from None
    with container:
        streams = [s for s in container.streams.video if not is_cover_art(s)]
        if not streams:
            return None
        stream = streams[0]
        tb = stream.time_base
        if tb is None:
            raise ProbeError(f"{name}: video stream has no time base")
        origin = container.start_time or 0  # µs; ffmpeg's -ss is relative to this
        frames: list[int] = []
        keys: list[int] = []
        end = 0
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.is_discard:
                    continue
                t = _us(packet.pts, tb) - origin
                frames.append(t)
                if packet.is_keyframe:
                    keys.append(t)
                dur = _us(packet.duration or 0, tb)
                end = max(end, t + dur)
        except av.FFmpegError as exc:
            raise ProbeError(f"cannot read {name}: {redact(str(exc))}") from None
    frames.sort()
    keys.sort()
    if not frames:
        return None
    end = max(end, frames[-1] + 1)
    return VideoIndex(frame_us=frames, keyframe_us=keys, end_us=end)


def is_cover_art(stream: Any) -> bool:
    disposition = getattr(stream, "disposition", None)
    try:
        return bool(disposition and disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def seconds_to_us(seconds: float) -> int:
    """``seconds`` as ffmpeg reads ``-ss``/``-t`` written with 6 decimals: whole microseconds."""
    return round(float(f"{seconds:.6f}") * 1_000_000)


def plan_from_index(
    idx: VideoIndex, chunk_seconds: float, *, start: float | None = None, end: float | None = None
) -> list[Chunk]:
    """Greedy plan: the next cut is the first keyframe at least ``chunk_seconds`` after the last cut.

    ``start``/``end`` (seconds, a job's trim) limit the plan to ``[start, end)``:
    the first chunk starts at ``start`` itself (ffmpeg decodes from the
    keyframe before it and drops the frames before ``start``, as a trimmed
    single pass does), later cuts are keyframes inside the range and the last
    chunk ends at ``end``. Raises ValueError when the range holds no frame.
    """
    if chunk_seconds <= 0:
        raise ValueError("chunk_seconds must be > 0")
    target = round(chunk_seconds * 1_000_000)
    frames = idx.frame_us
    start_us = seconds_to_us(start) if start else None
    end_us = seconds_to_us(end) if end is not None else None
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise ValueError(f"trim end ({end:g} s) must be after trim start ({start:g} s)")
    stop = idx.end_us if end_us is None else min(end_us, idx.end_us)
    if start_us is not None:
        frames = [t for t in frames if t >= start_us]
    if end_us is not None:
        frames = [t for t in frames if t < end_us]
    if not frames:
        raise ValueError(
            f"the trim {start or 0:g}-{end if end is not None else idx.end_us / 1e6:g} s holds no video frame"
        )
    cuts = [start_us if start_us is not None else min(frames[0], 0)]
    for key in idx.keyframe_us:
        if key - cuts[-1] >= target and key < stop:
            cuts.append(key)
    if len(cuts) > 1 and stop - cuts[-1] < target * MIN_TAIL_SHARE:
        cuts.pop()
    bounds = [*cuts, stop]
    chunks = []
    pos = 0
    for i in range(len(cuts)):
        count = 0
        while pos < len(frames) and (i == len(cuts) - 1 or frames[pos] < bounds[i + 1]):
            pos += 1
            count += 1
        chunks.append(Chunk(index=i, start=max(bounds[i], 0) / 1_000_000, end=bounds[i + 1] / 1_000_000, frames=count))
    return chunks


def plan_chunks(
    source_path: str | Path, chunk_seconds: float, *, start: float | None = None, end: float | None = None
) -> list[Chunk]:
    """Plan keyframe-aligned chunks of about ``chunk_seconds`` for ``source_path``.

    A video shorter than one chunk (or with no keyframe after the first)
    gives one chunk; a file without video gives ``[]`` (nothing to chunk:
    encode it in one pass). ``start``/``end`` plan only that trim of the
    source (see :func:`plan_from_index`). Raises ProbeError when the file
    cannot be read, ValueError when the trim holds no video frame.
    """
    idx = index_video(source_path)
    if idx is None:
        return []
    return plan_from_index(idx, chunk_seconds, start=start, end=end)
