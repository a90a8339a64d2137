"""Encode one chunk's video, or the whole audio track: plain functions, no database.

The local pipeline calls these from its worker threads; cloud executors
(Lambda, Cloud Run) call the same functions on their own machines with a
chunk from :func:`mpr.chunker.plan.plan_chunks`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mpr import ffmpeg
from mpr.chunker.plan import Chunk, is_cover_art, is_url, redact, seconds_to_us, source_name
from mpr.errors import FFmpegError
from mpr.presets import Preset

ProgressCallback = Callable[[ffmpeg.Progress], None]

# ffmpeg's HTTP input: reconnect after a dropped connection (a chunk reads its range of a remote source)
URL_INPUT_ARGS = ["-reconnect", "1", "-reconnect_on_network_error", "1", "-reconnect_delay_max", "10"]


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
    name = source_name(source)
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


def source_command(source: str | Path, out_path: str | Path, preset: Preset, **kwargs: Any) -> list[str]:
    """:func:`mpr.ffmpeg.build_command` (same keyword arguments) for a local file or an http(s) URL ``source``.

    A URL is read with reconnects (:data:`URL_INPUT_ARGS`); ffmpeg seeks in
    it with HTTP Range requests, so nothing is downloaded first.
    """
    argv = ffmpeg.build_command(source, out_path, preset, **kwargs)
    if not is_url(source):
        return argv
    # build_command writes its input as file:<absolute path>: put the URL (one argv item) in its place
    i = argv.index("-i")
    return [*argv[:i], *URL_INPUT_ARGS, "-i", str(source), *argv[i + 2 :]]


def _run(source: str | Path, argv: list[str], **kwargs: Any) -> None:
    # ffmpeg.run, and the errors of a URL source without its query string (the presigned URL's signature)
    try:
        ffmpeg.run(argv, **kwargs)
    except FFmpegError as exc:
        if is_url(source):
            _redacted(exc)
        raise


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
    argv = source_command(source, out_path, part_preset(preset), start=chunk.start or None, audio=False)
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
        _run(source, argv, duration=chunk.duration, on_progress=on_progress, cancel=cancel)
        os.replace(tmp, out_path)
    except FFmpegError as exc:
        if is_url(source):  # chunk_command reads a trimmed URL source with PyAV too
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
    """Encode every audio track of ``source`` once, whole, into ``out_path`` (no video; see :func:`mpr.ffmpeg.stream_maps`).

    ``start``/``end`` trim it exactly as a trimmed single pass does. ``source``
    is a local file or an http(s) URL (read as :func:`source_command` does,
    errors without its query string). The subtitles are not in it: the
    concat step reads them from the source (see :func:`mpr.chunker.concat.concat`).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(out_path)
    argv = source_command(source, tmp, part_preset(preset), start=start, end=end, video=False)
    try:
        _run(source, argv, duration=duration, on_progress=on_progress, cancel=cancel)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def encode_whole(
    source: str | Path,
    preset: Preset,
    out_path: str | Path,
    *,
    start: float | None = None,
    end: float | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Encode ``source`` in one pass (video and audio, the job's trim) into ``out_path``: a remote single-pass job.

    ``source`` is a local file or an http(s) URL (read as :func:`source_command`
    does, errors without its query string); the argv is ``build_command``'s.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _run(source, source_command(source, out_path, preset, start=start, end=end), cancel=cancel)
    return out_path
