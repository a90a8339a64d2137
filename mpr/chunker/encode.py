"""Encode one chunk's video, or the whole audio track: plain functions, no database.

The local pipeline calls these from its worker threads; cloud executors
(Lambda, Cloud Run) call the same functions on their own machines with a
chunk from :func:`mpr.chunker.plan.plan_chunks`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

from mpr import ffmpeg
from mpr.chunker.plan import Chunk, is_cover_art, seconds_to_us
from mpr.errors import FFmpegError
from mpr.presets import Preset

ProgressCallback = Callable[[ffmpeg.Progress], None]

# ffmpeg's HTTP input: reconnect after a dropped connection (a chunk reads its range of a remote source)
URL_INPUT_ARGS = ["-reconnect", "1", "-reconnect_on_network_error", "1", "-reconnect_delay_max", "10"]
_QUERY = re.compile(r"(https?://[^\s?#'\"]*)\?[^\s#'\"]*")


def is_url(source: str | Path) -> bool:
    """True when ``source`` is an http(s) URL (a presigned object URL) rather than a local file."""
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def redact(text: str) -> str:
    """``text`` with the query string of every http(s) URL in it replaced (presigned URLs carry a signature)."""
    return _QUERY.sub(r"\1?<redacted>", text or "")


def _redacted(exc: FFmpegError) -> FFmpegError:
    # the same exception (its type matters: Cancelled), without signatures in what reaches users and logs
    exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    exc.stderr_tail = redact(exc.stderr_tail)
    return exc


def part_preset(preset: Preset) -> Preset:
    """``preset`` for an intermediate file: no faststart rewrite (only the final mux needs it)."""
    extra = {k: v for k, v in (preset.extra or {}).items() if k != "faststart"}
    return dataclasses.replace(preset, extra=extra)


def _insert_before_output(argv: list[str], out_path: Path, args: list[str]) -> list[str]:
    target = "file:" + os.path.abspath(os.fspath(out_path))
    i = argv.index(target)
    return [*argv[:i], *args, *argv[i:]]


def limit_threads(argv: list[str], out_path: str | Path, threads: int | None) -> list[str]:
    """``argv`` with decoder, filter and encoder threads all capped at ``threads`` (None: unchanged)."""
    if not threads:
        return argv
    n = str(threads)
    argv = _insert_before_output(argv, Path(out_path), ["-threads", n])
    i = argv.index("-i")
    return [argv[0], "-filter_threads", n, *argv[1:i], "-threads", n, *argv[i:]]


def _partial(out_path: Path) -> Path:
    # Same suffix so nothing that looks at the name is surprised; renamed only when complete,
    # so an existing out_path is always a finished file (what chunk reuse on retry relies on).
    return out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")


def _near(value: Fraction) -> int:
    # av_rescale_q's rounding: to nearest, halves away from zero
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


def shift_ticks(source: str | Path, seek: float, origin: float) -> int:
    """How far (in the video stream's time base) ffmpeg's timestamps after ``-ss seek`` lie
    before those after ``-ss origin``: what ``setpts`` adds to put a chunk on the trim's timeline.

    Computed the way ffmpeg offsets the packets (``-(ss + file start)`` rescaled to
    the stream's time base), so the sum is exactly a trimmed single pass's timestamp.
    """
    name = redact(str(source)) if is_url(source) else Path(source).name
    try:
        container = av.open(str(source))
    except (av.FFmpegError, OSError) as exc:
        raise FFmpegError(f"cannot read {name}: {redact(str(exc))}") from None
    with container:
        streams = [s for s in container.streams.video if not is_cover_art(s)]
        if not streams or streams[0].time_base is None:
            raise FFmpegError(f"{name}: no video stream with a time base")
        tb = Fraction(streams[0].time_base)
        file_start = container.start_time or 0
    ticks = Fraction(1, 1_000_000) / tb
    return _near((seconds_to_us(seek) + file_start) * ticks) - _near((seconds_to_us(origin) + file_start) * ticks)


def _build(source: str | Path, out_path: Path, preset: Preset, start: float | None) -> list[str]:
    if not is_url(source):
        return ffmpeg.build_command(source, out_path, preset, start=start, audio=False)
    # build_command writes a local input as file:<absolute path>: put the URL (one argv item) in its place
    placeholder = out_path.with_name(".url-input")
    argv = ffmpeg.build_command(placeholder, out_path, preset, start=start, audio=False)
    i = argv.index("file:" + os.path.abspath(placeholder))
    first = argv.index("-i")
    return [*argv[:first], *URL_INPUT_ARGS, *argv[first:i], str(source), *argv[i + 1 :]]


def _prepend_filter(argv: list[str], out_path: Path, video_filter: str) -> list[str]:
    if "-vf" in argv:
        i = argv.index("-vf") + 1
        return [*argv[:i], f"{video_filter},{argv[i]}", *argv[i + 1 :]]
    return _insert_before_output(argv, out_path, ["-vf", video_filter])


def chunk_command(
    source: str | Path,
    chunk: Chunk,
    preset: Preset,
    out_path: str | Path,
    *,
    threads: int | None = None,
    trim_start: float | None = None,
    trim_end: float | None = None,
) -> list[str]:
    """The ffmpeg argv that encodes exactly the frames of ``chunk`` (video only) into ``out_path``.

    Input seek to the chunk's first keyframe (exact: the plan's times are
    ffmpeg's own microsecond rounding of the keyframe pts), then stop after
    the chunk's frame count, timestamps passed through unchanged so a
    variable-frame-rate source keeps every frame where it was. ``threads``
    caps the decoder's, filters' and encoder's threads (None = ffmpeg's default).

    With a trim (``trim_start``/``trim_end``, the job's, from a plan made with
    them) every chunk's frames are put on the trimmed single pass's timeline
    (``setpts`` by :func:`shift_ticks`), so the encoder rounds their times to
    its time base exactly as that pass does, and the chunk ending at
    ``trim_end`` stops with the same ``-t`` as that pass: the same frames, at
    the same times. Such chunk files start at their place in the trimmed
    output, not at 0 (the concat step reads where each one starts). A preset
    that changes the frame rate (``fps``) is refused with a trim (FFmpegError):
    its fps filter would place frames differently at the cuts than one pass does.

    ``source`` may be an http(s) URL (a presigned object URL): ffmpeg then
    reads only the byte ranges the chunk needs (HTTP Range requests after
    its input seek), with reconnects (:data:`URL_INPUT_ARGS`).
    """
    out_path = Path(out_path)
    trimmed = trim_start is not None or trim_end is not None
    if trimmed and preset.fps:
        raise FFmpegError(f"preset {preset.name} changes the frame rate: encode its trims in one pass, not in chunks")
    argv = _build(source, out_path, part_preset(preset), chunk.start or None)
    extra: list[str] = []
    if trimmed:
        origin = trim_start or 0.0
        shift = shift_ticks(source, chunk.start, origin) if chunk.start > origin else 0
        if shift:
            argv = _prepend_filter(argv, out_path, f"setpts=PTS+{shift}")
        if trim_end is not None and abs(chunk.end - trim_end) < 1e-6:
            # the same stop as the single pass: ffmpeg compares its rounded times with this
            extra += ["-t", f"{trim_end - origin:.6f}"]
        elif not chunk.frames:
            extra += ["-t", f"{chunk.end - origin:.6f}"]
        else:
            extra += ["-frames:v", str(chunk.frames)]
        extra += ["-fps_mode", "passthrough"]
        return limit_threads(_insert_before_output(argv, out_path, extra), out_path, threads)
    if preset.fps:
        # The fps filter makes its own frames; stop by time instead of by source frame count.
        extra += ["-t", f"{chunk.duration:.6f}"]
    else:
        extra += ["-fps_mode", "passthrough"]
        if chunk.frames:
            extra += ["-frames:v", str(chunk.frames)]
        else:
            extra += ["-t", f"{chunk.duration:.6f}"]
    return limit_threads(_insert_before_output(argv, out_path, extra), out_path, threads)


def encode_chunk(
    source: str | Path,
    chunk: Chunk,
    preset: Preset,
    out_path: str | Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    threads: int | None = None,
    trim_start: float | None = None,
    trim_end: float | None = None,
) -> Path:
    """Encode ``chunk`` of ``source`` with ``preset`` (video only) into ``out_path``.

    ``source`` is a local file or an http(s) URL (see :func:`chunk_command`);
    the errors of a URL source carry it without its query string (the
    signature of a presigned URL). ``trim_start``/``trim_end`` are the job's
    trim (the plan must have been made with them; see :func:`chunk_command`).
    The file appears at ``out_path`` only when complete. Raises FFmpegError
    (``ffmpeg.Cancelled`` when ``cancel`` was set).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(out_path)
    try:
        argv = chunk_command(source, chunk, preset, tmp, threads=threads, trim_start=trim_start, trim_end=trim_end)
        ffmpeg.run(argv, duration=chunk.duration, on_progress=on_progress, cancel=cancel)
        os.replace(tmp, out_path)
    except FFmpegError as exc:
        if is_url(source):
            _redacted(exc)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def encode_audio(
    source: str | Path,
    preset: Preset,
    out_path: str | Path,
    *,
    duration: float | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    start: float | None = None,
    end: float | None = None,
) -> Path:
    """Encode the whole audio track of ``source`` once, as one stream, into ``out_path`` (no video).

    ``start``/``end`` trim it exactly as a trimmed single pass does.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(out_path)
    argv = ffmpeg.build_command(source, tmp, part_preset(preset), start=start, end=end, video=False)
    try:
        ffmpeg.run(argv, duration=duration, on_progress=on_progress, cancel=cancel)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
