"""Presets: the value type plugins register, validation, and syncing into the database.

Every field is validated (:func:`validate_preset`); extra encoder options come
only from the :data:`EXTRA_OPTIONS` whitelist, so a user can never smuggle raw
ffmpeg arguments into a command.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mpr.errors import ValidationError

if TYPE_CHECKING:
    from mpr.models import TranscodePreset

log = logging.getLogger(__name__)

SOURCE_CONTAINER = "source"  # output keeps the source's container (stream copy presets)
BUILTIN_SOURCE = "builtin"
USER_SOURCE = "user"


@dataclass(frozen=True)
class Preset:
    """An encoding recipe as shipped by a plugin (and as snapshotted into a job).

    ``video_codec``/``audio_codec``: an ffmpeg encoder name, ``"copy"``, or
    None to drop that stream. ``extra`` holds only whitelisted options
    (see :data:`EXTRA_OPTIONS`), never raw ffmpeg arguments.
    """

    name: str
    container: str
    description: str = ""
    video_codec: str | None = None
    video_bitrate: str | None = None
    crf: int | None = None
    speed_preset: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_codec: str | None = None
    audio_bitrate: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The preset as a JSON-safe dict (what ``TranscodeJob.preset_snapshot`` stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """Build from a dict (a snapshot or a model's values); unknown keys are ignored."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def is_copy(self) -> bool:
        """True when no stream is re-encoded (trim/remux only)."""
        return self.video_codec in (None, "copy") and self.audio_codec in (None, "copy")

    @property
    def has_video(self) -> bool:
        """True when the output has a video stream."""
        return self.video_codec is not None


PRESET_FIELDS = tuple(Preset.__dataclass_fields__)

# Encoders MPR knows how to drive: name -> (CRF range or None)
VIDEO_CODECS: dict[str, tuple[int, int] | None] = {
    "libx264": (0, 51),
    "libx265": (0, 51),
    "libvpx-vp9": (0, 63),
    "libvpx": (4, 63),
    "libsvtav1": (0, 63),
    "libaom-av1": (0, 63),
    "mpeg4": None,
}
AUDIO_CODECS = ("aac", "libmp3lame", "libopus", "libvorbis", "flac", "alac", "pcm_s16le", "ac3")

# container -> (allowed video codecs, allowed audio codecs); "copy" is checked separately. Every pair
# is encoded by tests/test_preset_pairs.py. No flac in mp4: ffmpeg 5.1's mp4 muxer calls it experimental
# and refuses it without -strict experimental, and few players read it (mkv, flac, ogg hold FLAC).
CONTAINER_CODECS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "mp4": (
        frozenset({"libx264", "libx265", "libsvtav1", "libaom-av1", "libvpx-vp9", "mpeg4"}),
        frozenset({"aac", "libmp3lame", "libopus", "alac", "ac3"}),
    ),
    "mov": (
        frozenset({"libx264", "libx265", "mpeg4"}),
        frozenset({"aac", "libmp3lame", "alac", "pcm_s16le", "ac3"}),
    ),
    "mkv": (frozenset(VIDEO_CODECS), frozenset(AUDIO_CODECS)),
    "webm": (frozenset({"libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1"}), frozenset({"libopus", "libvorbis"})),
    "m4a": (frozenset(), frozenset({"aac", "alac"})),
    "mp3": (frozenset(), frozenset({"libmp3lame"})),
    "flac": (frozenset(), frozenset({"flac"})),
    "ogg": (frozenset(), frozenset({"libopus", "libvorbis", "flac"})),
    "opus": (frozenset(), frozenset({"libopus"})),
    "wav": (frozenset(), frozenset({"pcm_s16le"})),
    SOURCE_CONTAINER: (frozenset(), frozenset()),
}
CONTAINERS = tuple(CONTAINER_CODECS)

X26X_SPEEDS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
NUMERIC_SPEEDS = {"libvpx-vp9": (0, 8), "libvpx": (0, 8), "libsvtav1": (0, 13), "libaom-av1": (0, 8)}
# Encoders that keep a 4:2:2/4:4:4/10-bit source's format unless told otherwise, which most browsers
# and phones cannot play: a preset using one gets pix_fmt yuv420p unless it sets another itself.
DEFAULT_YUV420P_CODECS = frozenset({"libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"})
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
# audio encoder -> (most channels, the SAMPLE_RATES it encodes) where ffmpeg 5.1's encoder refuses others
AUDIO_LIMITS: dict[str, tuple[int, tuple[int, ...]]] = {
    "libopus": (8, (8000, 16000, 24000, 48000)),
    "libmp3lame": (2, tuple(r for r in SAMPLE_RATES if r <= 48000)),
    "ac3": (6, (32000, 44100, 48000)),
}

_BITRATE = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?[kKmM]?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,127}$")


def _choice(*values: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value

    return check


def _int_range(lo: int, hi: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}")
        return value

    return check


def _bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _bitrate(value: Any) -> Any:
    if not isinstance(value, str) or not _BITRATE.match(value):
        raise ValueError("must be a bitrate such as 800k or 2M")
    return value


# The whitelist of extra encoder options a preset may carry: name -> validator.
EXTRA_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "pix_fmt": _choice("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le", "nv12"),
    "profile": _choice("baseline", "main", "high", "high10", "high422", "high444", "main10", "main12"),
    "level": _choice("3.0", "3.1", "4.0", "4.1", "4.2", "5.0", "5.1", "5.2", "6.0", "6.1", "6.2"),
    "tune": _choice("film", "animation", "grain", "stillimage", "fastdecode", "zerolatency", "psnr", "ssim"),
    "gop": _int_range(1, 1000),
    "keyint_min": _int_range(1, 1000),
    "bframes": _int_range(0, 16),
    "closed_gop": _bool,
    "scene_cut": _bool,
    "maxrate": _bitrate,
    "bufsize": _bitrate,
    "faststart": _bool,
    "tag": _choice("hvc1", "hev1", "avc1"),
    # EBU R128 loudness normalisation: the integrated loudness (LUFS) every audio track is brought to
    # (-23: EBU R128 broadcast, -16: streaming/podcasts), see mpr.ffmpeg.loudnorm_filter
    "loudnorm": _int_range(-70, -5),
}
# extra options that are not about the video: the container's (faststart) and the audio's (loudnorm)
NOT_VIDEO_EXTRAS = frozenset({"faststart", "loudnorm"})


def _fail(field_name: str, message: str) -> ValidationError:
    return ValidationError(f"preset field {field_name!r}: {message}")


def _opt_int(data: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = data.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise _fail(name, f"must be an integer from {lo} to {hi}")
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise _fail(name, f"must be an integer from {lo} to {hi}, got {value!r}") from None
    if not lo <= number <= hi:
        raise _fail(name, f"must be from {lo} to {hi}, got {number}")
    return number


def _opt_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or (isinstance(value, str) and value.strip() in ("", "none")):
        return None
    if not isinstance(value, str):
        raise _fail(name, f"must be a string, got {value!r}")
    return value.strip()


def validate_preset(data: dict[str, Any] | Preset, *, encoders: frozenset[str] | None = None) -> Preset:
    """Check every field of a preset and return it as a normalised :class:`Preset`.

    ``encoders``: the ffmpeg build's encoder names; when given, a codec MPR
    supports but the build lacks is refused too. Raises ValidationError with a
    message naming the field and what is expected.
    """
    if isinstance(data, Preset):
        data = data.to_dict()
    unknown = set(data) - set(PRESET_FIELDS)
    if unknown:
        raise ValidationError(f"unknown preset field(s): {', '.join(sorted(unknown))}")

    name = _opt_str(data, "name")
    if not name or not _NAME.match(name):
        raise _fail("name", "must be 1-128 characters: letters, digits, space, '.', '_', '+', '-'")
    description = data.get("description") or ""
    if not isinstance(description, str) or len(description) > 2000:
        raise _fail("description", "must be a string of at most 2000 characters")

    container = (_opt_str(data, "container") or "").lower()
    if container not in CONTAINER_CODECS:
        raise _fail("container", f"must be one of {', '.join(CONTAINERS)}, got {container or None!r}")
    ok_video, ok_audio = CONTAINER_CODECS[container]

    video_codec = _opt_str(data, "video_codec")
    audio_codec = _opt_str(data, "audio_codec")
    if container == SOURCE_CONTAINER and not (video_codec in (None, "copy") and audio_codec in (None, "copy")):
        raise _fail("container", "'source' (keep the input's container) only works with stream copy")
    for fname, codec, known, ok in (
        ("video_codec", video_codec, tuple(VIDEO_CODECS), ok_video),
        ("audio_codec", audio_codec, AUDIO_CODECS, ok_audio),
    ):
        if codec is None:
            continue
        if codec == "copy":
            if fname == "video_codec" and not ok_video and container != SOURCE_CONTAINER:
                raise _fail(fname, f"a {container} file is audio-only; set video_codec to none")
            continue
        if codec not in known:
            raise _fail(fname, f"unknown codec {codec!r}; supported: {', '.join(known)}, copy, or none")
        if encoders is not None and codec not in encoders:
            raise _fail(fname, f"codec {codec!r} is not available in this ffmpeg build")
        if fname == "video_codec" and not ok and container != SOURCE_CONTAINER:
            raise _fail(fname, f"a {container} file is audio-only; set video_codec to none")
        if codec not in ok:
            kind = fname.split("_")[0]
            allowed = ", ".join(sorted(ok)) or f"no {kind}"
            raise _fail(fname, f"{codec!r} cannot go into a {container} file (allowed: {allowed})")
    if video_codec is None and audio_codec is None:
        raise ValidationError("a preset needs a video or an audio codec (or 'copy')")

    video_bitrate = _opt_str(data, "video_bitrate")
    audio_bitrate = _opt_str(data, "audio_bitrate")
    for fname, value in (("video_bitrate", video_bitrate), ("audio_bitrate", audio_bitrate)):
        if value is not None and not _BITRATE.match(value):
            raise _fail(fname, f"must be a bitrate such as 800k or 2M, got {value!r}")

    encoding_video = video_codec not in (None, "copy")
    crf_range = VIDEO_CODECS.get(video_codec or "") if encoding_video else None
    crf = _opt_int(data, "crf", *(crf_range or (0, 63)))
    if crf is not None and crf_range is None:
        raise _fail("crf", f"is not supported with video codec {video_codec!r}")
    if crf is not None and video_bitrate and video_codec in ("libx264", "libx265"):
        raise _fail("crf", "set either crf (constant quality) or video_bitrate, not both")

    speed = _opt_str(data, "speed_preset")
    if speed is not None:
        if not encoding_video:
            raise _fail("speed_preset", "only applies when encoding video")
        numeric = NUMERIC_SPEEDS.get(video_codec or "")
        if speed.isdigit() and numeric:
            if not numeric[0] <= int(speed) <= numeric[1]:
                raise _fail("speed_preset", f"must be from {numeric[0]} to {numeric[1]} for {video_codec}")
        elif speed not in X26X_SPEEDS:
            raise _fail(
                "speed_preset",
                f"must be one of {', '.join(X26X_SPEEDS)}"
                + (f" or a number {numeric[0]}-{numeric[1]}" if numeric else ""),
            )

    width = _opt_int(data, "width", 16, 7680)
    height = _opt_int(data, "height", 16, 4320)
    for fname, value in (("width", width), ("height", height)):
        if value is not None and value % 2:
            raise _fail(fname, f"must be even (needed for yuv420p), got {value}")
    fps_raw = data.get("fps")
    fps = None
    if fps_raw not in (None, ""):
        try:
            fps = float(fps_raw)
        except (TypeError, ValueError):
            raise _fail("fps", f"must be a number, got {fps_raw!r}") from None
        if isinstance(fps_raw, bool) or not 1 <= fps <= 240:
            raise _fail("fps", f"must be from 1 to 240, got {fps_raw!r}")
    if not encoding_video:
        for fname, value in (("video_bitrate", video_bitrate), ("width", width), ("height", height), ("fps", fps)):
            if value is not None:
                raise _fail(fname, "only applies when encoding video (video_codec is copy or none)")

    sample_rate = _opt_int(data, "sample_rate", 8000, 96000)
    if sample_rate is not None and sample_rate not in SAMPLE_RATES:
        raise _fail("sample_rate", f"must be one of {', '.join(map(str, SAMPLE_RATES))}")
    channels = _opt_int(data, "channels", 1, 8)
    if audio_codec in (None, "copy"):
        for fname, value in (("audio_bitrate", audio_bitrate), ("sample_rate", sample_rate), ("channels", channels)):
            if value is not None:
                raise _fail(fname, "only applies when encoding audio (audio_codec is copy or none)")
    limits = AUDIO_LIMITS.get(audio_codec or "")
    if limits and channels is not None and channels > limits[0]:
        raise _fail("channels", f"{audio_codec} encodes at most {limits[0]} channels, got {channels}")
    if limits and sample_rate is not None and sample_rate not in limits[1]:
        rates = ", ".join(map(str, limits[1]))
        raise _fail("sample_rate", f"{audio_codec} encodes only {rates} Hz, got {sample_rate}")

    extra_raw = data.get("extra") or {}
    if not isinstance(extra_raw, dict):
        raise _fail("extra", "must be an object of whitelisted options")
    extra: dict[str, Any] = {}
    for key, value in extra_raw.items():
        check = EXTRA_OPTIONS.get(key)
        if check is None:
            raise _fail("extra", f"option {key!r} is not allowed; allowed: {', '.join(EXTRA_OPTIONS)}")
        try:
            extra[key] = check(value)
        except ValueError as exc:
            raise _fail("extra", f"{key} {exc}, got {value!r}") from None
    video_only = {k for k in extra if k not in NOT_VIDEO_EXTRAS}
    if video_only and not encoding_video:
        raise _fail("extra", f"{', '.join(sorted(video_only))} only apply when encoding video")
    if "loudnorm" in extra and audio_codec == "copy":
        raise _fail("extra", "loudnorm needs the audio re-encoded: audio_codec 'copy' keeps it as it is")
    if "loudnorm" in extra and audio_codec is None:
        raise _fail("extra", "loudnorm needs audio: this preset drops it (audio_codec none)")
    if video_codec in DEFAULT_YUV420P_CODECS and "pix_fmt" not in extra:
        extra["pix_fmt"] = "yuv420p"

    return Preset(
        name=name,
        container=container,
        description=description,
        video_codec=video_codec,
        video_bitrate=video_bitrate,
        crf=crf,
        speed_preset=speed,
        width=width,
        height=height,
        fps=fps,
        audio_codec=audio_codec,
        audio_bitrate=audio_bitrate,
        sample_rate=sample_rate,
        channels=channels,
        extra=extra,
    )


def preset_from_model(model: TranscodePreset) -> Preset:
    """The :class:`Preset` value of a database row."""
    return Preset.from_dict({name: getattr(model, name) for name in PRESET_FIELDS})


def source_name(owner: str) -> str:
    """The ``source`` column for a preset registered by plugin ``owner`` (the core's own are ``builtin``)."""
    return BUILTIN_SOURCE if owner.startswith("mpr.default_plugins") or owner == "mpr" else owner


@dataclass
class SyncResult:
    """What :func:`sync_presets` did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


async def sync_presets() -> SyncResult:
    """Write the presets registered by plugins into the database.

    New presets are created with ``source`` = the plugin's name (``builtin``
    for the core's). A preset the plugin shipped before is updated to the
    plugin's current values unless a user edited it (``modified``). A user
    preset or another plugin's preset with the same name is never touched.
    """
    from mpr.models import TranscodePreset
    from mpr.plugins import load_plugins

    registry = load_plugins()
    result = SyncResult()
    for name, preset in registry.presets.items():
        owner = source_name(registry.owners.get(("preset", name), "unknown"))
        try:
            preset = validate_preset(preset)
        except ValidationError as exc:
            log.warning("skipping invalid preset %r from %s: %s", name, owner, exc)
            continue
        values = {k: v for k, v in preset.to_dict().items() if k != "name"}
        row = await TranscodePreset.get_or_none(name=name)
        if row is None:
            await TranscodePreset.create(name=name, source=owner, modified=False, **values)
            result.created.append(name)
        elif row.source == owner and not row.modified:
            if any(getattr(row, k) != v for k, v in values.items()):
                await TranscodePreset.filter(id=row.id).update(**values)
                result.updated.append(name)
        else:
            if row.source != owner:
                log.info("preset %r from %s not synced: the name belongs to %s", name, owner, row.source)
            result.kept.append(name)
    return result
