"""Every codec the preset table allows in a container really makes a file there (real ffmpeg, 0.5 s clips)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpr import ffmpeg
from mpr.errors import ValidationError
from mpr.presets import CONTAINER_CODECS, NUMERIC_SPEEDS, SOURCE_CONTAINER, validate_preset
from mpr.probe import stream_list
from testkit import make_clip

PAIRS = [
    (container, kind, codec)
    for container, (video, audio) in CONTAINER_CODECS.items()
    if container != SOURCE_CONTAINER
    for kind, codecs in (("video", video), ("audio", audio))
    for codec in sorted(codecs)
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 64x64: SVT-AV1 refuses a picture under 64 px high
    return make_clip(tmp_path_factory.mktemp("pairs") / "tiny.mp4", seconds=0.5, size="64x64", rate=10)


@pytest.mark.parametrize(("container", "kind", "codec"), PAIRS, ids=["-".join(p) for p in PAIRS])
def test_allowed_pair_encodes(clip, tmp_path, container, kind, codec) -> None:
    if kind == "video":
        speed = str(NUMERIC_SPEEDS[codec][1]) if codec in NUMERIC_SPEEDS else "ultrafast"
        audio = sorted(CONTAINER_CODECS[container][1])[0]
        data = {"video_codec": codec, "speed_preset": speed, "audio_codec": audio}
    else:
        data = {"audio_codec": codec}
    preset = validate_preset({"name": "pair", "container": container, **data})
    out = tmp_path / f"o.{ffmpeg.output_extension(preset, clip)}"
    ffmpeg.run(ffmpeg.build_command(clip, out, preset))  # any ffmpeg error fails the test
    types = [s["type"] for s in stream_list(out) or []]
    assert "audio" in types and ("video" in types) == (kind == "video")


def test_flac_into_mp4_is_refused_with_the_containers_that_take_it() -> None:
    with pytest.raises(ValidationError, match="'flac' cannot go into a mp4 file"):
        validate_preset({"name": "f", "container": "mp4", "video_codec": "libx264", "audio_codec": "flac"})
    for container in ("mkv", "flac", "ogg"):
        assert validate_preset({"name": "f", "container": container, "audio_codec": "flac"}).audio_codec == "flac"


@pytest.mark.parametrize(
    ("codec", "field", "value", "message"),
    [
        ("libmp3lame", "channels", 6, "at most 2 channels"),
        ("ac3", "channels", 8, "at most 6 channels"),
        ("libopus", "sample_rate", 44100, "8000, 16000, 24000, 48000"),
        ("ac3", "sample_rate", 22050, "32000, 44100, 48000"),
        ("libmp3lame", "sample_rate", 96000, "44100, 48000"),
    ],
)
def test_audio_settings_the_encoder_refuses_are_refused(codec, field, value, message) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_preset({"name": "a", "container": "mkv", "audio_codec": codec, field: value})


def test_audio_settings_the_encoder_takes_encode(clip, tmp_path) -> None:
    for codec, settings in (
        ("libopus", {"sample_rate": 24000, "channels": 4}),
        ("ac3", {"sample_rate": 44100, "channels": 6}),
    ):
        preset = validate_preset({"name": "a", "container": "mkv", "audio_codec": codec, **settings})
        out = tmp_path / f"{codec}.mkv"
        ffmpeg.run(ffmpeg.build_command(clip, out, preset))
        (audio,) = [s for s in stream_list(out) or [] if s["type"] == "audio"]
        assert audio["channels"] == settings["channels"]
        if codec == "ac3":  # (an Opus stream always says 48000 Hz: what its decoder outputs)
            assert audio["sample_rate"] == settings["sample_rate"]
