"""Probing media files with PyAV (no ffprobe needed).

:func:`probe` reads the container header, checks that the first packets
really decode (a truncated or corrupt file fails here, with a readable
message), and returns a :class:`ProbeResult`. :func:`keyframe_times` lists
the video keyframes the chunker aligns its segments to.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mpr.errors import ProbeError

log = logging.getLogger(__name__)

# FFmpeg's internal time base for container durations (microseconds)
AV_TIME_BASE = 1_000_000


@dataclass(frozen=True)
class ProbeResult:
    """What a media file contains. ``raw`` is a JSON-safe dump of the format and every stream."""

    kind: str  # "video" or "audio"
    duration: float | None
    container: str
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    bitrate: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result as a dict (JSON-safe)."""
        return asdict(self)

    def asset_fields(self) -> dict[str, Any]:
        """The MediaAsset columns this result fills."""
        data = self.to_dict()
        data["probe"] = data.pop("raw")
        return data


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _is_cover_art(stream: av.stream.Stream) -> bool:
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def _codec_name(stream: av.stream.Stream | None) -> str | None:
    # the codec's canonical name ("mp3"), not the decoder's ("mp3float")
    if stream is None or stream.codec_context is None:
        return None
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def _stream_info(stream: av.stream.Stream) -> dict[str, Any]:
    ctx = stream.codec_context
    info: dict[str, Any] = {
        "index": stream.index,
        "type": stream.type,
        "codec": _codec_name(stream),
        "profile": getattr(stream, "profile", None),
        "bit_rate": ctx.bit_rate if ctx else None,
        "time_base": stream.time_base,
        "duration": _num(stream.duration * stream.time_base) if stream.duration and stream.time_base else None,
        "frames": stream.frames or None,
        "language": stream.metadata.get("language"),
    }
    if stream.type == "video":
        rate = stream.average_rate or stream.guessed_rate
        info.update(
            width=ctx.width,
            height=ctx.height,
            pix_fmt=ctx.pix_fmt,
            fps=round(float(rate), 3) if rate else None,
            cover_art=_is_cover_art(stream),
        )
    elif stream.type == "audio":
        layout = getattr(ctx, "layout", None)
        info.update(
            sample_rate=ctx.sample_rate,
            channels=layout.nb_channels if layout is not None else getattr(ctx, "channels", None),
            channel_layout=layout.name if layout is not None else None,
        )
    return _json_safe(info)


# Demuxer (the first of PyAV's comma-separated names) -> (the file types it reads, the type to
# report when the file's extension is none of them). One demuxer reads several file types: the
# extension tells which one the user has ("matroska" is an .mkv, .mka or .webm).
_FILE_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "mov": (("mp4", "m4v", "m4a", "m4b", "mov", "qt", "3gp", "3g2", "mj2", "f4v", "ismv", "isma"), "mp4"),
    "matroska": (("mkv", "mka", "mks", "mk3d", "webm"), "mkv"),
    "asf": (("wmv", "wma", "asf"), "asf"),
    "mpegts": (("ts", "m2ts", "mts", "m2t"), "ts"),
    "mpeg": (("mpg", "mpeg", "vob", "m2p"), "mpg"),
    "ogg": (("ogg", "oga", "ogv", "opus", "spx", "ogx"), "ogg"),
    "aiff": (("aif", "aiff", "aifc"), "aiff"),
    "aac": (("aac", "adts"), "aac"),
    "wav": (("wav", "wave"), "wav"),
}
# ISO base media files without a known extension: their major brand says what they are
_BRANDS = {"qt": "mov", "m4a": "m4a", "m4b": "m4a", "m4v": "m4v", "m4vh": "m4v", "m4vp": "m4v"}


def _container_name(format_name: str, path: Path, *, brand: str | None = None, video: bool = True) -> str:
    """The file type users know (``mkv``, ``webm``, ``m4a``, ``wmv``...) from the demuxer's name and the
    file's extension; the demuxer's own name stays in ``raw["format"]``."""
    names = format_name.split(",")
    ext = path.suffix.lstrip(".").lower()
    family = _FILE_TYPES.get(names[0])
    if family is None:
        return ext if ext in names else names[0]
    types, default = family
    if ext in types:
        return ext
    if names[0] == "mov" and brand:
        brand = brand.strip().lower()
        return _BRANDS.get(brand) or next((t for t in ("3gp", "3g2") if brand.startswith(t)), default)
    if names[0] == "matroska":
        return default if video else "mka"
    if names[0] == "asf":
        return "wmv" if video else "wma"
    return default


def _check_decodes(container: av.container.InputContainer, streams: list[av.stream.Stream]) -> None:
    """Decode the first frame of each stream, so a file with a valid header but broken data fails."""
    pending = {s.index for s in streams}
    packets = 0
    for packet in container.demux(streams):
        packets += 1
        if packet.stream.index in pending and packet.size:
            for _frame in packet.decode():
                pending.discard(packet.stream.index)
                break
        if not pending or packets > 500:
            break
    if pending and packets == 0:
        raise ProbeError("the file has no readable media data (truncated?)")
    if pending:
        raise ProbeError("no frame could be decoded (corrupt or truncated file)")


def _check_tail(container: av.container.InputContainer, stream: av.stream.Stream, duration: float | None) -> None:
    """Read a packet near the stated end: a file cut short (its index intact) has no data there."""
    if not duration or duration < 0.5 or not stream.time_base:
        return
    try:
        target = int((duration - 0.25 + (container.start_time or 0) / AV_TIME_BASE) / stream.time_base)
        container.seek(target, stream=stream, backward=True, any_frame=True)
    except (av.error.FFmpegError, OverflowError, ValueError):
        return  # not seekable: nothing more to check cheaply
    try:
        for packet in container.demux(stream):
            if packet.size:
                return
            break
    except av.error.FFmpegError as exc:
        raise ProbeError(f"the file is truncated or corrupt near its end: {_av_message(exc)}") from exc
    raise ProbeError("the file is truncated: its data ends before its stated duration")


def probe(path: str | os.PathLike[str]) -> ProbeResult:
    """Probe the media file at ``path``; raise ProbeError with a readable message if it is not usable."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ProbeError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if size == 0:
        raise ProbeError(f"{path.name} is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise ProbeError(f"{path.name} is not a readable media file: {_av_message(exc)}") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ProbeError(f"{path.name} is not a readable media file: {exc}") from exc
    try:
        with container:
            videos = [s for s in container.streams.video if not _is_cover_art(s)]
            audios = list(container.streams.audio)
            if not videos and not audios:
                raise ProbeError(f"{path.name} has no audio or video stream")
            video = videos[0] if videos else None
            audio = audios[0] if audios else None
            duration = _num(container.duration / AV_TIME_BASE) if container.duration else None
            if duration is None:
                for s in (video, audio):
                    if s is not None and s.duration and s.time_base:
                        duration = _num(s.duration * s.time_base)
                        break
            raw = {
                "format": container.format.name,
                "format_long_name": container.format.long_name,
                "duration": duration,
                "bit_rate": container.bit_rate or None,
                "size": size,
                "metadata": _json_safe(dict(container.metadata)),
                "streams": [_stream_info(s) for s in container.streams],
            }
            try:
                _check_decodes(container, [s for s in (video, audio) if s is not None])
                _check_tail(container, video or audio, duration)
            except av.error.FFmpegError as exc:
                raise ProbeError(f"{path.name} is corrupt: {_av_message(exc)}") from exc
            except ProbeError as exc:
                raise ProbeError(f"{path.name}: {exc}") from exc
            bitrate = container.bit_rate or None
            if not bitrate and duration:
                bitrate = int(size * 8 / duration)
            rate = (video.average_rate or video.guessed_rate) if video else None
            actx = audio.codec_context if audio else None
            layout = getattr(actx, "layout", None) if actx else None
            return ProbeResult(
                kind="video" if video else "audio",
                duration=round(duration, 6) if duration is not None else None,
                container=_container_name(
                    container.format.name, path, brand=container.metadata.get("major_brand"), video=bool(video)
                ),
                video_codec=_codec_name(video),
                audio_codec=_codec_name(audio),
                width=video.codec_context.width if video else None,
                height=video.codec_context.height if video else None,
                fps=round(float(rate), 3) if rate else None,
                bitrate=int(bitrate) if bitrate else None,
                sample_rate=actx.sample_rate if actx else None,
                channels=(layout.nb_channels if layout is not None else None) if actx else None,
                raw=raw,
            )
    except av.error.FFmpegError as exc:
        raise ProbeError(f"{path.name} is not a readable media file: {_av_message(exc)}") from exc


def _av_message(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0].strip() or exc.__class__.__name__


def has_video(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` has a video stream other than cover art (True if it cannot be read:
    the caller then keeps the behaviour for video)."""
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            return any(not _is_cover_art(s) for s in container.streams.video)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return True


def stream_list(source: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """Every stream of ``source`` (a file or an http(s) URL) as :func:`probe` stores it in ``raw["streams"]``
    (index, type, codec, cover_art, ...), read from the header only; None when it cannot be read."""
    try:
        with av.open(str(source), mode="r", metadata_errors="ignore") as container:
            return [_stream_info(s) for s in container.streams]
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        log.debug("cannot list the streams of %s: %s", source, exc)
        return None


def keyframe_times(path: str | os.PathLike[str]) -> list[float]:
    """Presentation times (seconds, ascending, from the file's start) of the first video stream's keyframes.

    Reads packets only (no decoding). Raises ProbeError for unreadable files
    or files without video.
    """
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ProbeError(f"{Path(path).name} is not a readable media file: {exc}") from exc
    with container:
        videos = [s for s in container.streams.video if not _is_cover_art(s)]
        if not videos:
            raise ProbeError(f"{Path(path).name} has no video stream")
        stream = videos[0]
        # relative to the container's start, which is what ffmpeg's -ss counts from
        offset = (container.start_time or 0) / AV_TIME_BASE
        tb = stream.time_base
        times: set[float] = set()
        try:
            for packet in container.demux(stream):
                if packet.pts is None or not packet.is_keyframe:
                    continue
                times.add(round(float(packet.pts * tb) - offset, 6))
        except av.error.FFmpegError as exc:
            log.warning("stopped reading keyframes of %s: %s", path, exc)
    return sorted(t for t in times if t >= 0)
