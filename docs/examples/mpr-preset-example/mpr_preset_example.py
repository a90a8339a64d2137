"""An MPR plugin in one module: two presets for social-media clips."""

from __future__ import annotations

from mpr import hookimpl
from mpr.presets import Preset


@hookimpl
def register_presets(register):
    register(
        Preset(
            name="example-square-480",
            description="480x480 H.264 for social feeds",
            container="mp4",
            video_codec="libx264",
            crf=26,
            speed_preset="veryfast",
            width=480,
            height=480,
            audio_codec="aac",
            audio_bitrate="96k",
        )
    )
    register(
        Preset(
            name="example-voice-opus",
            description="Speech-friendly Opus audio",
            container="webm",
            audio_codec="libopus",
            audio_bitrate="32k",
            channels=1,
        )
    )
