"""The presets every MPR install has, registered by the core's built-in preset plugin.

``BUILTIN_PRESETS`` is computed on first access because the AV1 preset
exists only when the configured ffmpeg has an AV1 encoder (SVT-AV1
preferred, libaom otherwise).
"""

from __future__ import annotations

import functools
from typing import Any

from mpr.presets import SOURCE_CONTAINER, Preset

STATIC_PRESETS: tuple[Preset, ...] = (
    Preset(
        name="h264-720p",
        container="mp4",
        description="H.264 720p MP4 (CRF 23, AAC 128k): plays everywhere",
        video_codec="libx264",
        crf=23,
        speed_preset="medium",
        height=720,
        audio_codec="aac",
        audio_bitrate="128k",
        extra={"pix_fmt": "yuv420p", "faststart": True},
    ),
    Preset(
        name="h264-1080p",
        container="mp4",
        description="H.264 1080p MP4 (CRF 22, AAC 192k)",
        video_codec="libx264",
        crf=22,
        speed_preset="medium",
        height=1080,
        audio_codec="aac",
        audio_bitrate="192k",
        extra={"pix_fmt": "yuv420p", "faststart": True},
    ),
    Preset(
        name="h265-1080p",
        container="mp4",
        description="H.265/HEVC 1080p MP4 (CRF 28, AAC 192k): half the size of H.264",
        video_codec="libx265",
        crf=28,
        speed_preset="medium",
        height=1080,
        audio_codec="aac",
        audio_bitrate="192k",
        extra={"pix_fmt": "yuv420p", "tag": "hvc1", "faststart": True},
    ),
    Preset(
        name="vp9-webm",
        container="webm",
        description="VP9 WebM (CRF 32, Opus 128k) for the open web",
        video_codec="libvpx-vp9",
        crf=32,
        speed_preset="fast",
        audio_codec="libopus",
        audio_bitrate="128k",
        extra={"pix_fmt": "yuv420p"},
    ),
    Preset(
        name="aac-audio",
        container="m4a",
        description="Audio only: AAC 192k in M4A",
        audio_codec="aac",
        audio_bitrate="192k",
        extra={"faststart": True},
    ),
    Preset(
        name="mp3-audio",
        container="mp3",
        description="Audio only: MP3 192k",
        audio_codec="libmp3lame",
        audio_bitrate="192k",
    ),
    Preset(
        name="flac-audio",
        container="flac",
        description="Audio only: lossless FLAC",
        audio_codec="flac",
    ),
    Preset(
        name="copy",
        container=SOURCE_CONTAINER,
        description="Stream copy: trim or remux without re-encoding (cuts snap to keyframes)",
        video_codec="copy",
        audio_codec="copy",
    ),
)

AV1_ENCODERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("libsvtav1", {"crf": 35, "speed_preset": "8"}),
    ("libaom-av1", {"crf": 32, "speed_preset": "6"}),
)


def av1_preset(encoders: frozenset[str]) -> Preset | None:
    """The AV1 preset for the best AV1 encoder in ``encoders``, or None when there is none."""
    for encoder, options in AV1_ENCODERS:
        if encoder in encoders:
            return Preset(
                name="av1",
                container="mp4",
                description=f"AV1 MP4 ({encoder}, CRF {options['crf']}, AAC 128k)",
                video_codec=encoder,
                audio_codec="aac",
                audio_bitrate="128k",
                extra={"pix_fmt": "yuv420p", "faststart": True},
                **options,
            )
    return None


@functools.lru_cache(maxsize=4)
def builtin_presets(ffmpeg: str | None = None) -> tuple[Preset, ...]:
    """The built-in presets for the ffmpeg at ``ffmpeg`` (default: the configured one)."""
    from mpr.errors import ConfigError
    from mpr.ffmpeg import available_encoders

    try:
        encoders = available_encoders(ffmpeg)
    except ConfigError:  # no ffmpeg at all: the other presets still register; jobs report the problem
        encoders = frozenset()
    av1 = av1_preset(encoders)
    return STATIC_PRESETS + ((av1,) if av1 else ())


def __getattr__(name: str) -> Any:
    # BUILTIN_PRESETS depends on the ffmpeg build, so it is decided at registration, not import
    if name == "BUILTIN_PRESETS":
        return builtin_presets()
    raise AttributeError(name)
