"""Join encoded chunks with the concat demuxer (stream copy) and mux the audio file (every audio track in it)
and the source's subtitles."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import av

from mpr import ffmpeg
from mpr.chunker.encode import URL_INPUT_ARGS, ProgressCallback, _partial
from mpr.chunker.plan import is_url
from mpr.errors import FFmpegError
from mpr.presets import SOURCE_CONTAINER, Preset


def _quote(path: Path) -> str:
    # concat list syntax: single-quoted, a quote written as '\''
    return "'" + str(path).replace("'", "'\\''") + "'"


def write_list(chunk_paths: Sequence[str | Path], list_path: Path, durations: Sequence[float] | None = None) -> Path:
    """Write a concat demuxer list; ``durations`` pins each file's length so timestamps stay exact."""
    lines = ["ffconcat version 1.0"]
    for i, path in enumerate(chunk_paths):
        lines.append(f"file {_quote(Path(os.path.abspath(path)))}")
        if durations is not None and i < len(durations) and i < len(chunk_paths) - 1:
            lines.append(f"duration {durations[i]:.6f}")
    list_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list_path


def concat_command(
    list_path: Path,
    audio_path: str | Path | None,
    output: str | Path,
    preset: Preset,
    *,
    video_start: float = 0.0,
    ffmpeg_bin: str | None = None,
    source: str | Path | None = None,
    trim_start: float | None = None,
    trim_end: float | None = None,
) -> list[str]:
    """The ffmpeg argv that stream-copies the listed chunks (and every track of the audio file) into ``output``.

    With ``source`` (a local file or an http(s) URL) it also reads the
    subtitles the output container holds from there, converted as the single
    pass (:func:`mpr.ffmpeg.build_command`) does (the same maps and subtitle
    codecs, :func:`mpr.ffmpeg.stream_maps`). Trimmed (``trim_start``/``trim_end``),
    they are the single pass's too: cut out of the source into small files
    first (:func:`mpr.ffmpeg.trimmed_subtitle_inputs`, which runs ffmpeg
    once; :func:`mpr.ffmpeg.run` removes them), never shifting the video or audio.
    """
    subtitles: list[str] = []
    trimmed = bool(trim_start) or trim_end is not None
    if source is not None and not trimmed:
        subtitles = ffmpeg.stream_maps(source, output, preset, video=False, audio=False, subtitles=True)
    subtitle_inputs: list[str] = []
    subtitle_maps: list[str] = []
    if source is not None and trimmed:
        # the trimmed single pass's subtitles: cut out of the source beforehand (see trimmed_subtitle_inputs)
        subtitle_inputs, subtitle_maps = ffmpeg.trimmed_subtitle_inputs(
            source,
            output,
            preset,
            trim_start,
            trim_end,
            first_input=2 if audio_path is not None else 1,
            ffmpeg_bin=ffmpeg_bin,
        )
    argv = [
        ffmpeg.ffmpeg_binary(ffmpeg_bin),
        *("-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-nostats"),
    ]
    if video_start:
        argv += ["-itsoffset", f"{video_start:.6f}"]
    argv += ["-f", "concat", "-safe", "0", "-i", "file:" + os.path.abspath(list_path)]
    if audio_path is not None:
        argv += ["-i", "file:" + os.path.abspath(audio_path)]
    if subtitles:
        assert source is not None
        argv += [*(URL_INPUT_ARGS if is_url(source) else []), "-i", _input_arg(source)]
    argv += subtitle_inputs
    argv += ["-map", "0:v:0"]
    if audio_path is not None:
        argv += ["-map", "1:a"]  # every track: encode_audio keeps all of the source's
    argv += ["-c", "copy"]
    if subtitles:
        # stream_maps names the source input 0: here it is the last one; its -c:s:N come after -c copy
        n = 2 if audio_path is not None else 1
        argv += [f"{n}:{a[2:]}" if a.startswith("0:") else a for a in subtitles]
    argv += subtitle_maps
    if (preset.extra or {}).get("faststart"):
        argv += ["-movflags", "+faststart"]
    if preset.container != SOURCE_CONTAINER and preset.container in ffmpeg.CONTAINERS:
        argv += ["-f", ffmpeg.CONTAINERS[preset.container][0]]
    argv += ["-y", "file:" + os.path.abspath(output)]
    return argv


def _input_arg(source: str | Path) -> str:
    return str(source) if is_url(source) else "file:" + os.path.abspath(source)


def _file_start(path: Path) -> float:
    try:
        with av.open(str(path)) as container:
            return (container.start_time or 0) / 1_000_000
    except (av.FFmpegError, OSError) as exc:
        raise FFmpegError(f"cannot read the encoded chunk {path.name}: {exc}") from exc


def placement(chunk_paths: Sequence[str | Path]) -> tuple[list[float], float]:
    """``(durations, video_start)`` for :func:`concat` of the chunks of a *trimmed* job.

    Those chunk files already start at their place in the trimmed output
    (see :func:`mpr.chunker.encode.chunk_command`) and the concat demuxer
    measures each from its own start, so the lengths are the gaps between the
    files' starts (the first counted from 0; :func:`concat` takes
    ``video_start``, the first file's start, off it).
    """
    starts = [_file_start(Path(p)) for p in chunk_paths]
    if not starts:
        raise FFmpegError("nothing to concatenate: no chunks")
    durations = [starts[1] if len(starts) > 1 else 0.0]
    durations += [b - a for a, b in zip(starts[1:], starts[2:], strict=False)]
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        raise FFmpegError(f"the encoded chunks do not follow each other (their starts: {starts})")
    return durations, starts[0]


def concat(
    chunk_paths: Sequence[str | Path],
    audio_path: str | Path | None,
    output: str | Path,
    preset: Preset,
    *,
    durations: Sequence[float] | None = None,
    video_start: float = 0.0,
    total: float | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    source: str | Path | None = None,
    trim_start: float | None = None,
    trim_end: float | None = None,
) -> Path:
    """Concatenate encoded video chunks (in order) and mux ``audio_path`` (if any) into ``output``.

    ``durations`` are the chunks' planned lengths (``Chunk.duration``): the
    concat demuxer then places every frame at its source timestamp even for
    variable frame rate. ``video_start`` shifts the video when the source's
    first frame is not at 0, keeping A/V sync. No re-encoding, but for the
    subtitles of ``source`` (the job's source, local or an http(s) URL;
    None: no subtitles), trimmed by the job's ``trim_start``/``trim_end``
    and converted as the single pass does (see :func:`concat_command`).
    """
    if not chunk_paths:
        raise FFmpegError("nothing to concatenate: no chunks")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    first = Path(chunk_paths[0])
    if durations is not None and video_start:
        # the demuxer measures the first file from its own first frame, which is video_start into the chunk
        durations = [durations[0] - video_start, *durations[1:]]
    list_path = write_list(chunk_paths, first.with_name(f".concat-{output.stem}.txt"), durations)
    tmp = _partial(output)
    try:
        argv = concat_command(
            list_path,
            audio_path,
            tmp,
            preset,
            video_start=video_start,
            source=source,
            trim_start=trim_start,
            trim_end=trim_end,
        )
        ffmpeg.run(argv, duration=total, on_progress=on_progress, cancel=cancel)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
        list_path.unlink(missing_ok=True)
    return output
