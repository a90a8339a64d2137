"""The one module that builds and runs ffmpeg commands.

Commands are composed with ffmpeg-python and always run as an argv list (no
shell), in their own process group so a cancel kills ffmpeg and anything it
spawned. Progress comes from ``-progress pipe:1`` (key=value blocks on stdout);
the last stderr lines become the :class:`~mpr.errors.FFmpegError` message.

ffmpeg must not outlive the process that runs it (see :func:`run` and
:func:`kill_orphans` for how a SIGKILLed worker's ffmpeg is stopped).
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg as ffmpeg_python

from mpr.errors import FFmpegError, ValidationError
from mpr.presets import SOURCE_CONTAINER, Preset

log = logging.getLogger(__name__)

# preset container -> (ffmpeg muxer, file extension); "source" keeps the input's container
CONTAINERS: dict[str, tuple[str, str]] = {
    "mp4": ("mp4", "mp4"),
    "mov": ("mov", "mov"),
    "mkv": ("matroska", "mkv"),
    "webm": ("webm", "webm"),
    "m4a": ("ipod", "m4a"),
    "mp3": ("mp3", "mp3"),
    "flac": ("flac", "flac"),
    "ogg": ("ogg", "ogg"),
    "opus": ("opus", "opus"),
    "wav": ("wav", "wav"),
}

# x264-style speed names mapped to each encoder's numeric speed knob
_SPEED_NAMES = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_SPEED_NUMBERS = {
    "libvpx-vp9": dict(zip(_SPEED_NAMES, (8, 7, 6, 5, 4, 3, 2, 1, 0), strict=True)),
    "libvpx": dict(zip(_SPEED_NAMES, (8, 7, 6, 5, 4, 3, 2, 1, 0), strict=True)),
    "libaom-av1": dict(zip(_SPEED_NAMES, (8, 8, 7, 6, 5, 4, 3, 2, 1), strict=True)),
    "libsvtav1": dict(zip(_SPEED_NAMES, (12, 11, 10, 9, 8, 6, 4, 2, 1), strict=True)),
}

STOP_GRACE = 0.3  # seconds between SIGTERM and SIGKILL when cancelling; partial output is deleted anyway
OWNER_ENV = "MPR_FFMPEG_OWNER"  # "<pid>:<start time>" of the MPR process that started this ffmpeg
# environment variables ffmpeg never needs and must not see (/proc/<pid>/environ, a wrapper script's logs):
# MPR's API token, admin password and callback secret, cloud credentials (it reads sources by presigned URL)
_SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|PRIVATE|_KEY$|^AWS_ACCESS_KEY_ID$", re.IGNORECASE)


def child_env() -> dict[str, str]:
    """``os.environ`` without the secrets (:data:`_SECRET_ENV`): the environment ffmpeg runs with."""
    return {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}


class Cancelled(FFmpegError):
    """ffmpeg was stopped because the job was cancelled."""


@dataclass(frozen=True)
class Progress:
    """One ``-progress`` report: media time written, percent of ``duration``, fps, speed (x realtime), ETA (s)."""

    out_time: float
    percent: float
    fps: float
    speed: float
    eta: float | None


def ffmpeg_binary(ffmpeg: str | None = None) -> str:
    """``ffmpeg`` if given, else the configured binary (MPR_FFMPEG, PATH, imageio-ffmpeg)."""
    if ffmpeg:
        return ffmpeg
    from mpr.settings import get_settings

    return get_settings().ffmpeg


@functools.lru_cache(maxsize=8)
def _encoders(binary: str) -> frozenset[str]:
    try:
        out = subprocess.run(
            [binary, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot list ffmpeg encoders of %s: %s", binary, exc)
        return frozenset()
    names = set()
    started = False
    for line in out.splitlines():
        if line.strip().startswith("------"):
            started = True
            continue
        parts = line.split()
        if started and len(parts) >= 2:
            names.add(parts[1])
    return frozenset(names)


def available_encoders(ffmpeg: str | None = None) -> frozenset[str]:
    """The encoder names the ffmpeg build offers (``ffmpeg -encoders``), cached per binary."""
    return _encoders(ffmpeg_binary(ffmpeg))


def output_extension(preset: Preset, source: str | Path) -> str:
    """The file extension (no dot) of an output of ``preset`` made from ``source``."""
    if preset.container == SOURCE_CONTAINER:
        ext = Path(str(source)).suffix.lstrip(".").lower()
        return ext or "mkv"
    if preset.container not in CONTAINERS:
        raise ValidationError(f"unknown container {preset.container!r}")
    return CONTAINERS[preset.container][1]


def _local_arg(path: str | Path) -> str:
    # An absolute path can never be read as an option ("-x.mp4") or a protocol ("rtmp:x");
    # "file:" makes that explicit for ffmpeg.
    return "file:" + os.path.abspath(os.fspath(path))


def _speed_args(codec: str, speed: str | None) -> dict[str, object]:
    if codec in ("libx264", "libx265"):
        return {"preset": speed} if speed else {}
    numbers = _SPEED_NUMBERS.get(codec)
    if numbers is None or not speed:
        return {"deadline": "good", "cpu-used": numbers["medium"]} if codec.startswith("libvpx") else {}
    value = int(speed) if str(speed).lstrip("-").isdigit() else numbers.get(speed, numbers["medium"])
    if codec == "libsvtav1":
        return {"preset": value}
    if codec.startswith("libvpx"):
        return {"deadline": "good", "cpu-used": value, "row-mt": 1}
    return {"cpu-used": value, "row-mt": 1}  # libaom-av1


def _scale_filter(width: int | None, height: int | None) -> str | None:
    # Fit inside the box keeping the aspect ratio, never upscale, even dimensions for yuv420p.
    if width and height:
        return (
            f"scale=w='min({width},iw)':h='min({height},ih)':force_original_aspect_ratio=decrease:force_divisible_by=2"
        )
    if height:
        return f"scale=w=-2:h='min({height},ih)'"
    if width:
        return f"scale=w='min({width},iw)':h=-2"
    return None


def _extra_args(extra: dict, video: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    if video:
        for key, flag in (
            ("pix_fmt", "pix_fmt"),
            ("profile", "profile:v"),
            ("level", "level"),
            ("tune", "tune"),
            ("gop", "g"),
            ("keyint_min", "keyint_min"),
            ("bframes", "bf"),
            ("maxrate", "maxrate"),
            ("bufsize", "bufsize"),
            ("tag", "tag:v"),
        ):
            if extra.get(key) not in (None, ""):
                out[flag] = extra[key]
        if extra.get("closed_gop"):
            out["flags"] = "+cgop"
        if extra.get("scene_cut") is False:
            out["sc_threshold"] = 0
    if extra.get("faststart"):
        out["movflags"] = "+faststart"
    return out


def _copy_codec(preset: Preset, dst: str | Path) -> str:
    """The audio codec that "copies" the audio of a trimmed output: ``copy``, or ``flac`` for a .flac file.

    The flac muxer writes the source's STREAMINFO block as the file header and
    only rewrites it with the encoder's final one, which a stream copy does not
    have: a FLAC trimmed with ``-c:a copy`` announces the *source's* duration
    and sample count (a 3 s cut of a 10 s file reports 10 s; players show the
    wrong length and seek past the end). FLAC is lossless, so encoding it
    again gives the very same samples with a correct header, and a cut exact
    to the sample instead of to the 4096-sample frame.
    """
    if preset.container == "flac" or (
        preset.container == SOURCE_CONTAINER and Path(str(dst)).suffix.lower() == ".flac"
    ):
        return "flac"
    return "copy"


def _exact_audio_copy(src: str | Path, vcodec: str | None) -> bool:
    """Whether copied audio of a trim starting at ``start`` should drop its packets before ``start``.

    Input seeking (``-ss`` before ``-i``) lands on the demuxer's seek point
    before ``start``, and a stream copy keeps everything from there, as
    ffmpeg documents: an Ogg page (up to ~1 s of Vorbis), a Matroska/WebM
    cluster (up to 5 s of audio: a 3 s cut kept 5 s). ``-copypriorss:a 0``
    discards the copied audio packets that start before ``start`` (the
    default, -1, copies them), which makes the cut exact to the packet.
    Only done when video is not copied too (re-encoded, dropped, or absent
    from the source, cover art aside): a copied video keeps starting at the
    keyframe before ``start``, with its audio.
    """
    if vcodec != "copy":
        return True
    from mpr.probe import has_video

    return not has_video(src)


# Samples every decoder drops at the start of an mp3 with a LAME/Info tag on top of the tag's
# "encoder delay" field (the MDCT/filterbank delay of the LAME gapless convention).
_MP3_DECODER_DELAY = 529


@dataclass(frozen=True)
class _Mp3Copy:
    """What a stream copy into the mp3 muxer needs to know about an mp3 source (see :func:`_mp3_copy`)."""

    seek_back: float  # seconds to seek before the start so the first sample decoded is the start
    frame: float  # seconds of one packet
    padded_from: float | None  # where (s) the source's packets with end padding start, if any


def _mp3_copy(src: str | Path) -> _Mp3Copy | None:
    """Timing facts that make a stream copy of the mp3 ``src`` into the mp3 muxer start and end right.

    ffmpeg's mp3 muxer writes a LAME "Info" tag whose delay field is the
    first packet's skip-samples minus 529, floored at 0, and every decoder
    that reads the tag drops field + 529 samples at the start. A cut that
    starts mid-stream (no skip-samples) therefore always loses the first 529
    samples of its first packet: seeking 529 samples earlier makes the first
    sample heard the first one at or after the start (to within a frame).

    The end: ffmpeg 5.1's muxer reads that delay field from *any* packet's
    skip-samples side data while it is still 0, with unsigned arithmetic,
    so the source's last packet(s), whose side data carries the end padding
    (skip 0), set it to -529 and the tag says 3567: decoders then skip 4096
    samples (85 ms at 48 kHz, 93 ms at 44.1 kHz) at the start of any cut
    that runs to the end of the file. Stream copy cannot keep those padded
    packets without that tag (no ffmpeg option strips side data, and
    ``-write_xing 0`` loses the duration and seek table of VBR files), so
    such a cut stops before them: it loses the last frame's real samples
    (up to one frame) instead of 85 ms at its start. Returns None when
    ``src`` cannot be read (ffmpeg then reports the error).
    """
    import av

    try:
        with av.open(os.fspath(src)) as container:
            stream = container.streams.audio[0]
            rate = stream.sample_rate or stream.codec_context.sample_rate
            if not rate:
                return None
            start_time = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            padded_from = None
            if container.duration:
                # the padded packets are the last ones; seek there rather than read the whole file
                container.seek(max(0, container.duration - 2_000_000), any_frame=False)
                for packet in container.demux(stream):
                    if packet.pts is None or not packet.has_sidedata("skip_samples"):
                        continue
                    padding = int.from_bytes(bytes(packet.get_sidedata("skip_samples"))[4:8], "little")
                    if padding:
                        padded_from = float(packet.pts * packet.time_base) - start_time
                        break
    except (av.FFmpegError, IndexError, OSError, ValueError) as exc:
        log.debug("cannot read mp3 timing of %s: %s", src, exc)
        return None
    frame = (stream.codec_context.frame_size or 1152) / rate
    return _Mp3Copy(seek_back=_MP3_DECODER_DELAY / rate, frame=frame, padded_from=padded_from)


def _output_muxer(preset: Preset, dst: str | Path) -> str:
    """The ffmpeg muxer that writes ``dst`` (for a "source" container: the one its extension names)."""
    if preset.container != SOURCE_CONTAINER:
        return CONTAINERS[preset.container][0]
    ext = Path(str(dst)).suffix.lstrip(".").lower()
    return next((muxer for muxer, e in CONTAINERS.values() if e == ext), ext)


# Text subtitle codecs ffmpeg decodes and can write again as another text format.
TEXT_SUBTITLES = frozenset(
    {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text", "microdvd", "subviewer", "subviewer1"}
    | {"jacosub", "sami", "realtext", "mpl2", "pjs", "vplayer", "stl"}
)
# output muxer -> (subtitle codecs it stores as they are, the encoder other text subtitles are converted with);
# any other muxer gets no subtitles
SUBTITLE_MUXERS: dict[str, tuple[frozenset[str], str]] = {
    "mp4": (frozenset({"mov_text"}), "mov_text"),
    "mov": (frozenset({"mov_text"}), "mov_text"),
    "matroska": (
        frozenset({"subrip", "ass", "ssa", "webvtt", "dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle"}),
        "srt",
    ),
    "webm": (frozenset({"webvtt"}), "webvtt"),
}
# muxers that store cover art (an attached picture) beside the audio; elsewhere it is dropped
_COVER_ART_MUXERS = frozenset({"mp4", "mov", "ipod", "matroska", "mp3", "flac"})
# muxers that hold a single audio stream: the first audio track goes there
_ONE_AUDIO_MUXERS = frozenset({"mp3", "flac", "wav", "adts", "aac", "ac3", "eac3", "aiff", "aif", "wv"})
# file extensions of a "source" container -> the muxer ffmpeg picks for them (the tables above use muxer names)
_MUXER_ALIASES = {"mkv": "matroska", "mka": "matroska", "m4v": "mp4", "m4a": "ipod", "3gp": "mp4", "qt": "mov"}

# The channel layouts (ffmpeg's names) of the Vorbis channel order, by channel count (1..8). libopus refuses
# any other layout ("Invalid channel layout 4.0": the whole job fails) and libvorbis writes it under the
# wrong speakers ("4.0 not supported by Vorbis: output stream will have incorrect channel layout"), so a
# track with another layout is converted (ffmpeg's rematrix) to the one with its channel count.
VORBIS_LAYOUTS = ("mono", "stereo", "3.0", "quad", "5.0", "5.1", "6.1", "7.1")
# encoder -> the layouts it takes as they are (ffmpeg 5.1; the other encoders MPR drives take any layout
# of 1-8 channels, or declare theirs and ffmpeg converts: aac, ac3, alac, libmp3lame, flac, pcm; only
# 9+ channels need help, see audio_track_args)
LAYOUT_LIMITED_ENCODERS: dict[str, frozenset[str]] = {
    "libopus": frozenset(VORBIS_LAYOUTS),
    "libvorbis": frozenset(VORBIS_LAYOUTS) | {"quad(side)", "5.0(side)", "5.1(side)"},
}
# encoders that take a track of any channel count as it is (the containers MPR pairs pcm with store 9+ channels)
KEEP_ALL_CHANNELS_ENCODERS = frozenset({"pcm_s16le"})
# the layout ffmpeg 5.1 guesses for a track whose layout the file does not say (PyAV: "4 channels")
_GUESSED_LAYOUTS = ("mono", "stereo", "2.1", "4.0", "5.0", "5.1", "6.1", "7.1")


def _layout_of(stream: dict) -> str | None:
    """The channel layout ffmpeg decodes the audio ``stream`` (a :func:`mpr.probe.stream_list` item) with."""
    name, count = stream.get("channel_layout"), stream.get("channels") or 0
    if name and not name.endswith(("channels", "channel")) and name != "unknown":
        return name
    return _GUESSED_LAYOUTS[count - 1] if 1 <= count <= len(_GUESSED_LAYOUTS) else None


# encoder -> the sample rates ffmpeg 5.1's encoder takes (``ffmpeg -h encoder=X``); the others take any
ENCODER_SAMPLE_RATES: dict[str, tuple[int, ...]] = {
    "aac": (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350),
    "libmp3lame": (48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000),
    "libopus": (48000, 24000, 16000, 12000, 8000),
    "ac3": (48000, 44100, 32000),
}
# loudnorm's true peak ceiling (dBTP) and loudness range target (LU) with every preset's own target: the
# values of the filter author's guide (I=-16:TP=-1.5:LRA=11; ffmpeg's defaults are TP=-2, LRA=7, an LRA
# that compresses more); -1.5 dBTP keeps headroom for lossy encoders' overshoot (EBU R128 allows -1)
LOUDNORM_TRUE_PEAK = -1.5
LOUDNORM_RANGE = 11
_DEFAULT_SAMPLE_RATE = 48000  # a track whose rate cannot be read


def loudnorm_filter(target: int) -> str:
    """The ``loudnorm`` filter (EBU R128, single pass) that brings a track to ``target`` LUFS integrated.

    Single pass means loudnorm's dynamic mode: it measures as it goes (3 s
    window) and adjusts the gain smoothly, with a true-peak limiter at
    :data:`LOUDNORM_TRUE_PEAK`; it works at 192 kHz internally, so
    :func:`audio_track_args` sets each track's output rate.
    """
    return f"loudnorm=I={target}:TP={LOUDNORM_TRUE_PEAK}:LRA={LOUDNORM_RANGE}"


def _output_rate(source_rate: int | None, acodec: str) -> int:
    """The sample rate a loudness-normalised track is written at when the preset sets none: the source's,
    or the one nearest to it that ``acodec`` takes (what ffmpeg picks for that encoder without loudnorm)."""
    rate = source_rate or _DEFAULT_SAMPLE_RATE
    allowed = ENCODER_SAMPLE_RATES.get(acodec)
    if not allowed or rate in allowed:
        return rate
    return min(allowed, key=lambda r: (abs(r - rate), -r))


def audio_track_args(src: str | Path, dst: str | Path, preset: Preset, acodec: str | None) -> list[str]:
    """Per-track arguments for each mapped audio track: a layout ``acodec`` takes, the loudness normalisation.

    Loudness (``extra.loudnorm``, LUFS): every encoded track gets
    ``-filter:a:N`` :func:`loudnorm_filter` and, unless the preset sets
    ``sample_rate`` (``-ar``), ``-ar:a:N`` its source's rate (the nearest one
    the encoder takes, see :func:`_output_rate`): loudnorm would otherwise
    hand 192 kHz to the encoder. A source whose tracks cannot be read gets
    the filter for all its audio (``-filter:a``), written at 48 kHz.

    Layouts (usually nothing): a track of more than 8 channels (ffmpeg 5.1
    knows no rematrix from an unnamed 9+ channel layout, so every encoder
    but pcm and libvorbis fails the whole job on it) keeps its first 8
    channels as 7.1 (``-filter:a:N pan=7.1|c0=c0…``, before loudnorm); pcm
    keeps them all. ffmpeg then converts 7.1 to what the encoder takes,
    as it does for any 1-8 channel track (ac3: 5.1(side), libmp3lame:
    stereo, alac: 6.1(back)) or to the preset's ``channels``. That is the
    only argument a preset with ``channels`` gets here (its count, for an
    encoder in :data:`LAYOUT_LIMITED_ENCODERS` a Vorbis layout, is set in
    :func:`build_command`).

    For an encoder in :data:`LAYOUT_LIMITED_ENCODERS` and a preset that
    leaves the channel count to the source, a track whose layout the
    encoder takes (stereo, 5.1 ...) gets nothing; another up to 8 channels
    gets ``-ch_layout:a:N`` the Vorbis layout with its channel count (4.0
    becomes quad, 5.1(side) 5.1: same channel count, ffmpeg mixes each
    speaker into the nearest ones). The tracks are those
    :func:`stream_maps` maps, numbered as in the output.
    """
    if acodec is None or acodec == "copy":
        return []
    loudness = (preset.extra or {}).get("loudnorm")
    if acodec in KEEP_ALL_CHANNELS_ENCODERS and loudness is None:
        return []
    accepted = LAYOUT_LIMITED_ENCODERS.get(acodec)
    from mpr.probe import stream_list

    muxer = _output_muxer(preset, dst)
    streams = stream_list(src)
    if streams is None and loudness is not None:
        whole = ["-filter:a", loudnorm_filter(loudness)]
        return whole if preset.sample_rate else [*whole, "-ar", str(_output_rate(None, acodec))]
    tracks = [s for s in streams or [] if s.get("type") == "audio"]
    if _MUXER_ALIASES.get(muxer, muxer) in _ONE_AUDIO_MUXERS:
        tracks = tracks[:1]
    args: list[str] = []
    for n, stream in enumerate(tracks):
        count = stream.get("channels") or 0
        filters: list[str] = []
        if count > len(VORBIS_LAYOUTS) and acodec not in KEEP_ALL_CHANNELS_ENCODERS:
            # no rematrix from an unnamed 9+ channel layout exists in ffmpeg: keep the first 8 channels
            keep = "|".join(f"c{i}=c{i}" for i in range(len(VORBIS_LAYOUTS)))
            filters.append(f"pan={VORBIS_LAYOUTS[-1]}|{keep}")
        elif accepted is not None and not preset.channels and count and _layout_of(stream) not in accepted:
            args += [f"-ch_layout:a:{n}", VORBIS_LAYOUTS[count - 1]]
        if loudness is not None:
            filters.append(loudnorm_filter(loudness))
            if not preset.sample_rate:
                args += [f"-ar:a:{n}", str(_output_rate(stream.get("sample_rate"), acodec))]
        if filters:
            args += [f"-filter:a:{n}", ",".join(filters)]
    return args


def _subtitle_streams(src: str | Path, muxer: str) -> list[tuple[dict, str]]:
    """The subtitle streams of ``src`` that ``muxer`` can hold, each with its ``-c:s`` encoder.

    A subtitle the muxer stores as it is gets copied; another text subtitle is
    converted (mp4/mov: mov_text, webm: webvtt, mkv: srt); a bitmap subtitle
    the muxer cannot store is dropped, as are all subtitles for other muxers.
    The streams come from :func:`mpr.probe.stream_list` (none if unreadable).
    """
    if muxer not in SUBTITLE_MUXERS:
        return []
    from mpr.probe import stream_list

    kept, convert_to = SUBTITLE_MUXERS[muxer]
    out: list[tuple[dict, str]] = []
    for stream in stream_list(src) or []:
        if stream.get("type") != "subtitle":
            continue
        codec = stream.get("codec")
        if codec in kept:
            out.append((stream, "copy"))
        elif codec in TEXT_SUBTITLES:
            out.append((stream, convert_to))
    return out


def _subtitle_args(src: str | Path, muxer: str) -> list[str]:
    """``-map``/``-c:s`` arguments that keep the subtitles of ``src`` which ``muxer`` can hold
    (see :func:`_subtitle_streams`)."""
    args: list[str] = []
    for n, (stream, encoder) in enumerate(_subtitle_streams(src, muxer)):
        args += ["-map", f"0:{stream['index']}", f"-c:s:{n}", encoder]
    return args


# A trimmed output's subtitles come from small clipped .ass files (see trimmed_subtitle_inputs):
# the encoder that writes the source's own codec again, for a subtitle the muxer copies untrimmed
_SUBTITLE_ENCODERS = {"subrip": "srt", "srt": "srt", "ass": "ass", "ssa": "ssa", "webvtt": "webvtt"}
_SUBTITLE_ENCODERS["mov_text"] = "mov_text"
# stream dispositions carried over to a trimmed output's subtitle (PyAV flag name = ffmpeg's name)
_SUBTITLE_DISPOSITIONS = (
    "default", "forced", "hearing_impaired", "visual_impaired", "captions", "descriptions", "comment", "original",
    "dub", "lyrics", "karaoke",
)  # fmt: skip
_TEMP_DIRS: set[str] = set()  # made by trimmed_subtitle_inputs; removed by run() (or at exit, never run)
_TEMP_PREFIX = "mpr-subs-"


def _is_url(src: str | Path) -> bool:
    return isinstance(src, str) and src.startswith(("http://", "https://"))


def _input_arg(src: str | Path) -> str:
    return str(src) if _is_url(src) else _local_arg(src)


def _ass_seconds(value: str) -> float:
    h, m, s = value.strip().split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _ass_time(seconds: float) -> str:
    cs = max(0, round(seconds * 100))
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def clip_ass(text: str, start: float, end: float | None) -> str:
    """``text`` (an .ass file whose event times count from the source's start) cut to ``start``..``end``.

    Events that end at or before ``start`` or begin at or after ``end`` go;
    one across ``start`` (``end``) is clipped to it; what is left is moved
    ``start`` earlier, so the times count from the trimmed output's start.
    An event whose times cannot be read (a broken source cue) is dropped.
    """
    lines = text.splitlines()
    fields: list[str] = []
    out: list[str] = []
    in_events = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            in_events = stripped.lower() == "[events]"
        elif in_events and stripped.startswith("Format:"):
            fields = [f.strip().lower() for f in stripped[len("Format:") :].split(",")]
        elif in_events and fields and stripped.startswith("Dialogue:"):
            head, _, rest = line.partition(":")
            values = rest.lstrip().split(",", len(fields) - 1)
            if "start" in fields and "end" in fields and len(values) == len(fields):
                i, j = fields.index("start"), fields.index("end")
                try:
                    a, b = _ass_seconds(values[i]), _ass_seconds(values[j])
                except ValueError:
                    continue  # a cue whose times cannot be read cannot be placed: dropped, not the job
                if end is not None:
                    b = min(b, end)
                a = max(a, start)
                if b <= a:
                    continue
                values[i], values[j] = _ass_time(a - start), _ass_time(b - start)
                line = f"{head}: {','.join(values)}"
        out.append(line)
    return "\n".join(out) + "\n"


def _subtitle_tags(src: str | Path, indexes: list[int]) -> dict[int, tuple[dict[str, str], str]]:
    """Stream index -> (language/title metadata, ``-disposition`` value) of ``src``'s streams ``indexes``."""
    import av

    tags: dict[int, tuple[dict[str, str], str]] = {}
    try:
        with av.open(str(src), mode="r", metadata_errors="ignore") as container:
            for i in indexes:
                stream = container.streams[i]
                meta = {k: v for k, v in stream.metadata.items() if k.lower() in ("language", "title") and v}
                flags = stream.disposition
                names = [n for n in _SUBTITLE_DISPOSITIONS if getattr(av.stream.Disposition, n, 0) & flags]
                tags[i] = ({k.lower(): v for k, v in meta.items()}, "+".join(names))
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        log.debug("cannot read the subtitle tags of %s: %s", src, exc)
    return tags


def trimmed_subtitle_inputs(
    src: str | Path,
    dst: str | Path,
    preset: Preset,
    start: float | None,
    end: float | None,
    *,
    first_input: int,
    ffmpeg_bin: str | None = None,
) -> tuple[list[str], list[str]]:
    """``(inputs, maps)``: the subtitles of a *trimmed* output, as extra ffmpeg inputs and their output options.

    Why not map the source's subtitles after its ``-ss``: ffmpeg seeks to
    the keyframe before the trim start (Matroska even further back, to catch
    subtitles) and hands on the subtitle packets read from there with
    negative times; the muxer then shifts the whole output (Matroska/WebM:
    the video no longer starts at 0) or hides them in an edit list (MP4).
    So one quick ffmpeg run (subtitles only, the same input seek, stopping
    at ``end``) writes each text subtitle the output keeps as an .ass file
    timed from the source's start, :func:`clip_ass` cuts it to the trim, and
    the main command reads those files (inputs ``first_input``, ``+1``...)
    and writes them with the untrimmed output's codec, language, title and
    disposition. Video and audio timing are those of the same command
    without subtitles. Bitmap subtitles cannot be cut so: a trimmed output
    drops them. The .ass files live in a temporary folder that :func:`run`
    removes when this argv has run (or at exit). No subtitles, or a source
    whose subtitles cannot be read: ``([], [])``.
    """
    muxer = _output_muxer(preset, dst)
    muxer = _MUXER_ALIASES.get(muxer, muxer)
    streams = [(s, e) for s, e in _subtitle_streams(src, muxer) if s.get("codec") in TEXT_SUBTITLES]
    if not streams:
        return [], []
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
    _TEMP_DIRS.add(str(folder))
    files = [folder / f"{n}.ass" for n in range(len(streams))]
    argv = [ffmpeg_binary(ffmpeg_bin), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if start:
        # -itsoffset undoes the seek's shift: times count from the source's start (never below 0)
        argv += ["-ss", f"{start:.6f}", "-itsoffset", f"{start:.6f}"]
    if _is_url(src):
        from mpr.chunker.encode import URL_INPUT_ARGS

        argv += URL_INPUT_ARGS
    argv += ["-i", _input_arg(src)]
    for (stream, _), path in zip(streams, files, strict=True):
        argv += ["-map", f"0:{stream['index']}", "-c:s", "ass"]
        if end is not None:
            argv += ["-to", f"{end:.6f}"]  # no cue from there on is kept: stop reading
        argv += ["-f", "ass", _local_arg(path)]
    try:
        run(argv)
        for path in files:
            path.write_text(clip_ass(path.read_text(encoding="utf-8"), start or 0.0, end), encoding="utf-8")
    except (FFmpegError, OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError, an unreadable .ass
        log.warning("trimmed output without subtitles: cannot cut them out of the source: %s", exc)
        _remove_temp_dir(str(folder))
        return [], []
    tags = _subtitle_tags(src, [s["index"] for s, _ in streams])
    inputs: list[str] = []
    maps: list[str] = []
    for n, ((stream, encoder), path) in enumerate(zip(streams, files, strict=True)):
        inputs += ["-i", _local_arg(path)]
        if encoder == "copy":
            encoder = _SUBTITLE_ENCODERS.get(stream.get("codec") or "", "ass")
        maps += ["-map", f"{first_input + n}:0", f"-c:s:{n}", encoder]
        meta, disposition = tags.get(stream["index"], ({}, ""))
        for key, value in meta.items():
            maps += [f"-metadata:s:s:{n}", f"{key}={value}"]
        if disposition:
            # (any -disposition turns off ffmpeg's choice of a default track among several: only when needed)
            maps += [f"-disposition:s:{n}", disposition]
    return inputs, maps


def _remove_temp_dir(folder: str) -> None:
    _TEMP_DIRS.discard(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _remove_temp_inputs(argv: list[str]) -> None:
    # the folders of trimmed_subtitle_inputs whose files this argv read (not the run that writes them)
    inputs = [b for a, b in zip(argv, argv[1:], strict=False) if a == "-i"]
    for folder in list(_TEMP_DIRS):
        if any(i.startswith("file:" + folder + os.sep) for i in inputs):
            _remove_temp_dir(folder)


@atexit.register
def _remove_all_temp_dirs() -> None:
    for folder in list(_TEMP_DIRS):
        _remove_temp_dir(folder)


def stream_maps(
    src: str | Path,
    dst: str | Path,
    preset: Preset,
    *,
    video: bool = True,
    audio: bool = True,
    subtitles: bool | None = None,
) -> list[str]:
    """The ``-map`` arguments (and per-subtitle ``-c:s:N``) of :func:`build_command`.

    Stream copy (the ``copy`` preset, or any preset that re-encodes nothing)
    keeps every video stream (cover art only where the container stores it),
    every audio track and the subtitles the container can hold. A transcode
    keeps the first video stream (never cover art), every audio track (each
    encoded with the preset's audio settings) and the subtitles (see
    :func:`_subtitle_args`). A container that holds one audio stream (mp3,
    flac, wav...) gets the first track. Data and attachment streams are never
    mapped. Every map of a whole stream type is optional (``?``), so a source
    without it is not an error. ``video=False``/``audio=False`` (the chunker's
    parts) map no subtitles unless ``subtitles=True`` (the chunker's audio
    file carries them to the final mux); ``subtitles=False`` maps none.
    """
    muxer = _output_muxer(preset, dst)
    muxer = _MUXER_ALIASES.get(muxer, muxer)
    args: list[str] = []
    if video and preset.video_codec is not None:
        if not preset.is_copy:
            args += ["-map", "0:V:0?"]
        else:
            args += ["-map", "0:v?" if muxer in _COVER_ART_MUXERS else "0:V?"]
    if audio and preset.audio_codec is not None:
        args += ["-map", "0:a:0?" if muxer in _ONE_AUDIO_MUXERS else "0:a?"]
    if subtitles if subtitles is not None else (video and audio):
        args += _subtitle_args(src, muxer)
    return args


def build_command(
    src: str | Path,
    dst: str | Path,
    preset: Preset,
    *,
    start: float | None = None,
    end: float | None = None,
    ffmpeg: str | None = None,
    video: bool = True,
    audio: bool = True,
    subtitles: bool | None = None,
) -> list[str]:
    """The ffmpeg argv that turns local file ``src`` into ``dst`` with ``preset``.

    ``start``/``end`` (seconds) trim the source: with re-encoding the cut is
    frame-accurate (input seek, then decode from the previous keyframe); with
    the ``copy`` preset it snaps to the keyframe before ``start``. Copied
    audio without copied video starts at the first packet at or after
    ``start`` (see :func:`_exact_audio_copy`); an mp3 copied into an .mp3
    is seeked and ended so decoders' LAME-tag skip lands on it (see
    :func:`_mp3_copy`). A trimmed FLAC file is the exception to stream copy
    (see :func:`_copy_codec`).
    Which streams go in is :func:`stream_maps`'s choice (all audio tracks,
    subtitles the container holds, no data or attachment streams); a track
    whose channel layout the audio encoder refuses is converted to one it
    takes, and ``extra.loudnorm`` normalises every encoded track's loudness
    (see :func:`audio_track_args`).
    ``video=False``/``audio=False`` drop that stream (the chunker encodes
    them separately); ``subtitles`` is :func:`stream_maps`'s. Progress goes
    to stdout (``-progress pipe:1``).
    """
    if start is not None and start < 0:
        raise ValidationError("trim start must be >= 0")
    if start is not None and end is not None and end <= start:
        raise ValidationError(f"trim end ({end}) must be after trim start ({start})")
    vcodec = preset.video_codec if video else None
    acodec = preset.audio_codec if audio else None
    if acodec == "copy" and (start or end is not None):
        acodec = _copy_codec(preset, dst)
    exact_audio = bool(start) and acodec == "copy" and _exact_audio_copy(src, vcodec)
    seek, length = start, (end - (start or 0.0) if end is not None else None)
    mp3 = _mp3_copy(src) if exact_audio and _output_muxer(preset, dst) == "mp3" else None
    if mp3 is not None:
        seek = max(0.0, start - mp3.seek_back)
        if length is not None:
            length += start - seek  # the same end
        if mp3.padded_from is not None:
            # stop half a frame before the first packet with end padding (see _mp3_copy)
            limit = mp3.padded_from - seek - mp3.frame / 2
            if limit > 0 and (length is None or length > limit):
                length = limit
    in_kwargs: dict[str, object] = {}
    if seek or start:
        in_kwargs["ss"] = f"{seek:.6f}"
    stream = ffmpeg_python.input(_local_arg(src), **in_kwargs)

    out: dict[str, object] = {}
    if length is not None:
        out["t"] = f"{length:.6f}"
    extra = dict(preset.extra or {})

    if vcodec is None:
        out["vn"] = None
    elif vcodec == "copy":
        out["c:v"] = "copy"
    else:
        out["c:v"] = vcodec
        if preset.crf is not None:
            out["crf"] = preset.crf
            if vcodec in ("libvpx-vp9", "libvpx", "libaom-av1") and not preset.video_bitrate:
                out["b:v"] = 0  # constant-quality mode for libvpx/libaom
        if preset.video_bitrate:
            out["b:v"] = preset.video_bitrate
        out.update(_speed_args(vcodec, preset.speed_preset))
        filters = [f for f in (_scale_filter(preset.width, preset.height),) if f]
        if preset.fps:
            filters.append(f"fps={preset.fps:g}")
        else:
            # keep the source's timestamps: mp4 would otherwise force a constant rate and
            # duplicate frames of a variable-frame-rate source (or of a video that starts late)
            out["fps_mode"] = "passthrough"
        if filters:
            out["vf"] = ",".join(filters)
    if acodec is None:
        out["an"] = None
    elif acodec == "copy":
        out["c:a"] = "copy"
    else:
        out["c:a"] = acodec
        if preset.audio_bitrate and acodec != "flac":
            out["b:a"] = preset.audio_bitrate
        if preset.sample_rate:
            out["ar"] = preset.sample_rate
        if preset.channels:
            if acodec in LAYOUT_LIMITED_ENCODERS and preset.channels in (3, 4):
                # -ac's layout for 3/4 channels is 2.1/4.0, which libopus refuses (see VORBIS_LAYOUTS)
                out["ch_layout"] = VORBIS_LAYOUTS[preset.channels - 1]
            else:
                out["ac"] = preset.channels
    out.update(_extra_args(extra, video=vcodec not in (None, "copy")))
    keep_subtitles = subtitles if subtitles is not None else (video and audio)
    trimmed = bool(start) or end is not None
    maps = stream_maps(src, dst, preset, video=video, audio=audio, subtitles=keep_subtitles and not trimmed)
    maps += audio_track_args(src, dst, preset, acodec)
    subtitle_inputs: list[str] = []
    if keep_subtitles and trimmed:
        # not the source's own subtitle packets after its -ss (see trimmed_subtitle_inputs)
        subtitle_inputs, subtitle_maps = trimmed_subtitle_inputs(
            src, dst, preset, start, end, first_input=1, ffmpeg_bin=ffmpeg
        )
        maps += subtitle_maps
    if "-c:s:0" not in maps:
        out["sn"] = None
    out["dn"] = None
    if start and (vcodec == "copy" or acodec == "copy"):
        # Only a seek makes copied packets start below 0. Without one the source's own
        # negative timestamps are its encoder priming (AAC's first 1024 samples), which the
        # muxer keeps out of the timeline (an mp4 edit list); make_zero would shift the whole
        # track by the priming instead, so players would play it (21 ms at 48 kHz).
        out["avoid_negative_ts"] = "make_zero"
    if exact_audio:
        out["copypriorss:a"] = 0
    if preset.container != SOURCE_CONTAINER:
        out["f"] = CONTAINERS[preset.container][0]
    else:
        # stream copy keeps the source container, chosen by ffmpeg from the output extension
        pass

    stream = ffmpeg_python.output(stream, _local_arg(dst), **out).global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-nostats"
    )
    argv = stream.compile(cmd=ffmpeg_binary(ffmpeg), overwrite_output=True)
    # ffmpeg-python cannot repeat an option: the maps go in as a list, just before the output file
    i = argv.index(_local_arg(dst))
    argv = [*argv[:i], *maps, *argv[i:]]
    j = argv.index("-i") + 2  # the trimmed subtitles' inputs come after the source (input 0)
    return [*argv[:j], *subtitle_inputs, *argv[j:]]


def _seconds(value: str) -> float | None:
    try:
        return int(value) / 1_000_000
    except ValueError:
        return None


def parse_progress(block: dict[str, str], duration: float | None, started: float) -> Progress:
    """Turn one ``-progress`` key=value block into a :class:`Progress`."""
    out_time = None
    for key in ("out_time_us", "out_time_ms"):  # out_time_ms is microseconds too (an old ffmpeg quirk)
        if key in block:
            out_time = _seconds(block[key])
            if out_time is not None:
                break
    if out_time is None and ":" in block.get("out_time", ""):
        h, m, s = block["out_time"].split(":")
        try:
            out_time = int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            out_time = None
    out_time = max(0.0, out_time or 0.0)
    try:
        fps = float(block.get("fps", "0") or 0)
    except ValueError:
        fps = 0.0
    if fps <= 0:
        # ffmpeg reports fps=0 during its first second (all of it, for a short chunk): frames / wall time
        frame = block.get("frame", "")
        elapsed = time.monotonic() - started
        if frame.isdigit() and int(frame) > 0 and elapsed > 0:
            fps = round(int(frame) / elapsed, 2)
    speed_raw = block.get("speed", "").strip().rstrip("x")
    try:
        speed = float(speed_raw)
    except ValueError:
        elapsed = time.monotonic() - started
        speed = out_time / elapsed if elapsed > 0 else 0.0
    percent = 0.0
    eta = None
    if duration and duration > 0:
        percent = max(0.0, min(100.0, out_time / duration * 100))
        if block.get("progress") == "end":
            percent, eta = 100.0, 0.0
        elif speed > 0:
            eta = max(0.0, (duration - out_time) / speed)
    return Progress(out_time=out_time, percent=percent, fps=fps, speed=speed, eta=eta)


def _lower_priority(pid: int) -> None:
    """Run ffmpeg at MPR_FFMPEG_NICE so the API, the UIs and the event streams stay responsive
    while transcodes use every core (ffmpeg's encoder threads, created later, inherit it)."""
    from mpr.settings import get_settings

    nice = get_settings().ffmpeg_nice
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        except OSError:  # the process may already be gone; priority is a courtesy, not a requirement
            log.debug("could not renice ffmpeg %s", pid, exc_info=True)


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22), None if
    it is gone or dead (a zombie not yet waited for by its parent).

    With the pid it names one process for the life of the machine: a pid can be reused, a
    (pid, start time) pair cannot.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) <= 19 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def owner_token() -> str:
    """This process as ``<pid>:<start time>``, put in every ffmpeg's environment as ``MPR_FFMPEG_OWNER``."""
    return _owner_token(os.getpid())


@functools.lru_cache(maxsize=4)
def _owner_token(pid: int) -> str:
    return f"{pid}:{_start_time(pid) or 0}"


_SETPRIV = shutil.which("setpriv")  # util-linux: present on every Debian/Ubuntu system


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """``argv`` run under ``setpriv --pdeathsig KILL``: the kernel SIGKILLs ffmpeg when the thread that started it dies.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits,
    not the process. That is what MPR needs: :func:`run` starts ffmpeg and
    waits for it in the same thread (a job's consumer thread, a chunker
    worker), which only returns once ffmpeg has ended, so the signal can
    come only from the worker process dying (SIGKILL, out-of-memory killer,
    a crash). ``setpriv`` sets it and execs ffmpeg in the same process (same
    pid, the setting survives exec). It is not set from a ``preexec_fn``:
    Python code between fork and exec in a process with other threads can
    crash or deadlock the child (a CI run saw ffmpeg "exit -11" that way).
    Without setpriv, or when the binary is not found (Popen then reports it
    as usual), ffmpeg runs as it is and :func:`kill_orphans` is the safety net.
    """
    exe = shutil.which(argv[0]) if _SETPRIV else None
    if exe is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "KILL", "--", exe, *argv[1:]]


def find_orphans(owner_pids: set[int] | None = None) -> list[int]:
    """Pids of this machine's processes started by :func:`run` whose MPR process is gone.

    A process qualifies when its environment names an owner (``MPR_FFMPEG_OWNER``)
    that no longer runs (no such pid, or the pid now belongs to a process
    started later). ``owner_pids`` limits the search to those owners. Only
    processes of this user are visible; an empty list off Linux.
    """
    marker = f"{OWNER_ENV}=".encode()
    found = []
    alive: dict[int, str | None] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if not var.startswith(marker):
                continue
            pid_text, _, started = var[len(marker) :].decode(errors="replace").partition(":")
            if not pid_text.isdigit():
                break
            owner = int(pid_text)
            if owner_pids is not None and owner not in owner_pids:
                break
            if owner not in alive:
                alive[owner] = _start_time(owner)
            if alive[owner] != started:
                found.append(int(entry))
            break
    return found


def kill_orphans(owner_pids: set[int] | None = None) -> list[int]:
    """SIGKILL the process groups of :func:`find_orphans`; returns the pids found.

    The fallback behind ``PR_SET_PDEATHSIG``: the death signal reaches only
    the process the worker forked, so when ``MPR_FFMPEG`` is a wrapper
    script (``nice``, a shell script, ``docker run`` ...) the real ffmpeg
    under it would keep running. The whole group goes, as on a cancel, and
    the environment marker (inherited by everything ffmpeg or the wrapper
    starts) is checked first, so a reused pid is never killed by mistake.
    """
    pids = find_orphans(owner_pids)
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            continue
        except PermissionError:
            log.warning("cannot kill orphaned ffmpeg %s: permission denied", pid)
            continue
        log.warning("killed orphaned ffmpeg process group %s (its MPR process is gone)", pid)
    return pids


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop ffmpeg's whole process group: SIGTERM, then SIGKILL after a short grace."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    argv: list[str],
    *,
    duration: float | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Run ffmpeg (``argv`` from :func:`build_command`) to the end.

    Calls ``on_progress`` (from a reader thread) for each ``-progress`` block.
    Setting ``cancel`` kills the process group within 2 s and raises
    :class:`Cancelled`. A non-zero exit raises FFmpegError carrying the last
    stderr lines. Ctrl-C (or any exception) also kills the process group.

    If this process is killed outright (SIGKILL: nothing runs to clean up),
    ffmpeg would go on to the end: it ignores SIGPIPE and keeps encoding
    after its progress pipe breaks. On Linux the kernel kills it at once
    (``PR_SET_PDEATHSIG``, see :func:`_with_parent_death_signal`); the environment
    marker ``MPR_FFMPEG_OWNER`` lets the local reaper find and kill whatever
    the death signal did not reach (:func:`kill_orphans`).
    """
    if not argv or not isinstance(argv, list):
        raise FFmpegError("empty ffmpeg command")
    try:
        proc = subprocess.Popen(
            _with_parent_death_signal(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**child_env(), OWNER_ENV: owner_token()},
        )
    except OSError as exc:
        _remove_temp_inputs(argv)
        raise FFmpegError(f"cannot start ffmpeg ({argv[0]}): {exc.strerror or exc}") from exc
    _lower_priority(proc.pid)

    tail: collections.deque[str] = collections.deque(maxlen=30)
    started = time.monotonic()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                tail.append(line)

    def read_progress() -> None:
        assert proc.stdout is not None
        block: dict[str, str] = {}
        for raw in proc.stdout:
            key, _, value = raw.decode("utf-8", "replace").strip().partition("=")
            if not key:
                continue
            block[key] = value.strip()
            if key == "progress":
                if on_progress is not None:
                    try:
                        on_progress(parse_progress(block, duration, started))
                    except Exception:  # a broken callback must not wedge ffmpeg's pipe
                        log.exception("progress callback failed")
                block = {}

    readers = [
        threading.Thread(target=read_stderr, name="ffmpeg-stderr", daemon=True),
        threading.Thread(target=read_progress, name="ffmpeg-progress", daemon=True),
    ]
    for t in readers:
        t.start()
    cancelled = False
    try:
        while proc.poll() is None:
            if cancel is not None:
                if cancel.wait(0.1):
                    cancelled = True
                    _kill_group(proc)
                    break
            else:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        for t in readers:
            t.join(timeout=2)
        _remove_temp_inputs(argv)
    if cancelled:
        raise Cancelled("cancelled", proc.returncode, "\n".join(tail))
    if proc.returncode != 0:
        text = "\n".join(tail)
        last = tail[-1] if tail else f"exit status {proc.returncode}"
        raise FFmpegError(f"ffmpeg failed: {last}", proc.returncode, text)
    # ffmpeg exits 0 when only writing the trailer / closing the output fails (e.g. a full disk)
    failed_write = [line for line in tail if "Error writing trailer" in line or "Error closing file" in line]
    if failed_write:
        reason = "no space left on device" if "No space left" in failed_write[-1] else failed_write[-1]
        raise FFmpegError(f"ffmpeg could not write the output: {reason}", proc.returncode, "\n".join(tail))
