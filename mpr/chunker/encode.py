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
from pathlib import Path

from mpr import ffmpeg
from mpr.chunker.plan import Chunk
from mpr.presets import Preset

ProgressCallback = Callable[[ffmpeg.Progress], None]


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


def chunk_command(
    source: str | Path, chunk: Chunk, preset: Preset, out_path: str | Path, *, threads: int | None = None
) -> list[str]:
    """The ffmpeg argv that encodes exactly the frames of ``chunk`` (video only) into ``out_path``.

    Input seek to the chunk's first keyframe (exact: the plan's times are
    ffmpeg's own microsecond rounding of the keyframe pts), then stop after
    the chunk's frame count, timestamps passed through unchanged so a
    variable-frame-rate source keeps every frame where it was. ``threads``
    caps the decoder's, filters' and encoder's threads (None = ffmpeg's default).
    """
    out_path = Path(out_path)
    argv = ffmpeg.build_command(source, out_path, part_preset(preset), start=chunk.start or None, audio=False)
    extra: list[str] = []
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
) -> Path:
    """Encode ``chunk`` of local file ``source`` with ``preset`` (video only) into ``out_path``.

    The file appears at ``out_path`` only when complete. Raises FFmpegError
    (``ffmpeg.Cancelled`` when ``cancel`` was set).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(out_path)
    argv = chunk_command(source, chunk, preset, tmp, threads=threads)
    try:
        ffmpeg.run(argv, duration=chunk.duration, on_progress=on_progress, cancel=cancel)
        os.replace(tmp, out_path)
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
) -> Path:
    """Encode the whole audio track of ``source`` once, as one stream, into ``out_path`` (no video)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(out_path)
    argv = ffmpeg.build_command(source, tmp, part_preset(preset), video=False)
    try:
        ffmpeg.run(argv, duration=duration, on_progress=on_progress, cancel=cancel)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
